#pragma once
// The bytes held by LibTorch's CPU tensors, live and at their peak: what "the peak memory of a step" is
// on a CPU run. LibTorch 1.13's CPU allocator keeps no statistics (the CUDA caching allocator does), so
// install_tensor_memory_meter() puts a counting allocator in its place.
#include <cstdint>

namespace workbench {

/// Makes LibTorch allocate CPU tensors through a counting allocator (c10::SetCPUAllocator), process-wide
/// and for good; a second call does nothing. Memory allocated before it is not counted, before or after
/// it is freed (it is freed as LibTorch's default allocator would). Counted: every CPU tensor's storage
/// (parameters, gradients, optimizer state, activations) and what LibTorch's oneDNN takes through the
/// allocator. Not counted: memory that the BLAS and oneDNN allocate themselves. Thread-safe.
void install_tensor_memory_meter();
bool tensor_memory_meter_installed();

/// Bytes of the counted CPU tensors alive now. 0 before install_tensor_memory_meter().
std::int64_t live_tensor_bytes();
/// The most bytes alive at once since the last reset_tensor_peak() (or since installation).
std::int64_t peak_tensor_bytes();
/// Starts a new peak window at the bytes alive now.
void reset_tensor_peak();

}  // namespace workbench
