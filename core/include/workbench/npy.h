#pragma once
// Minimal NumPy .npy reader/writer (https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html).
//
// Supported element types: float32 ('<f4'), float64 ('<f8'), int64 ('<i8') and int32 ('<i4'), little-endian.
// Files are written in format version 1.0, C order; version 1.0, 2.0 and 3.0 headers are read, and
// Fortran-order arrays are read back into a C-contiguous tensor of the same shape.

#include <torch/types.h>

#include <stdexcept>
#include <string>

namespace workbench {

/// Any .npy I/O or format problem; the message names the file.
class NpyError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Writes `t` to `path` (overwriting). The tensor may live on any device and have any strides; it is copied
/// to a C-contiguous CPU array first. 0-d tensors become shape (). Throws NpyError for an unsupported dtype
/// (anything but float32, float64, int64, int32) or if the file cannot be written.
void write_npy(const std::string& path, const torch::Tensor& t);

/// Reads a .npy file into a C-contiguous CPU tensor of the stored dtype and shape.
/// Throws NpyError if the file cannot be opened, is not a .npy file, uses an unsupported dtype or
/// byte order (big-endian), or is truncated.
torch::Tensor read_npy(const std::string& path);

}  // namespace workbench
