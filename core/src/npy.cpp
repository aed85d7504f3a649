#include "workbench/npy.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

namespace workbench {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr std::size_t kMagicLen = 6;
constexpr std::size_t kAlign = 64;  // numpy >= 1.?: header padded so the data starts 64-byte aligned

bool host_is_little_endian() {
  const std::uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

const char* descr_of(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return "<f4";
    case at::kDouble: return "<f8";
    case at::kLong: return "<i8";
    case at::kInt: return "<i4";
    default: return nullptr;
  }
}

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw NpyError("npy '" + path + "': " + what);
}

// ---- tiny parser for the header dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }

std::size_t find_key(const std::string& h, const std::string& key) {
  for (const char q : {'\'', '"'}) {
    const std::string quoted = std::string(1, q) + key + std::string(1, q);
    const std::size_t pos = h.find(quoted);
    if (pos != std::string::npos) {
      const std::size_t colon = h.find(':', pos + quoted.size());
      if (colon != std::string::npos) return colon + 1;
    }
  }
  return std::string::npos;
}

std::size_t skip_space(const std::string& h, std::size_t i) {
  while (i < h.size() && std::isspace(static_cast<unsigned char>(h[i]))) ++i;
  return i;
}

}  // namespace

void write_npy(const std::string& path, const torch::Tensor& t) {
  if (!t.defined()) fail(path, "cannot write an undefined tensor");
  const char* descr = descr_of(t.scalar_type());
  if (descr == nullptr) {
    fail(path, std::string("unsupported dtype ") + c10::toString(t.scalar_type()) +
                   " (supported: float32, float64, int64, int32)");
  }
  if (!host_is_little_endian()) fail(path, "writing on a big-endian host is not supported");
  const at::Tensor c = t.detach().to(at::kCPU).contiguous();

  std::ostringstream dict;
  dict << "{'descr': '" << descr << "', 'fortran_order': False, 'shape': (";
  for (std::int64_t d = 0; d < c.dim(); ++d) {
    if (d > 0) dict << ", ";
    dict << c.size(d);
  }
  if (c.dim() == 1) dict << ",";
  dict << "), }";
  std::string header = dict.str();
  const std::size_t prefix = kMagicLen + 2 + 2;  // magic, version, uint16 header length
  const std::size_t total = ((prefix + header.size() + 1 + kAlign - 1) / kAlign) * kAlign;
  header.append(total - prefix - header.size() - 1, ' ');
  header.push_back('\n');
  if (header.size() > std::numeric_limits<std::uint16_t>::max()) fail(path, "header too long for format 1.0");

  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) fail(path, std::string("cannot open for writing: ") + std::strerror(errno));
  const std::uint16_t hlen = static_cast<std::uint16_t>(header.size());
  const unsigned char version[2] = {1, 0};
  const unsigned char len_le[2] = {static_cast<unsigned char>(hlen & 0xff), static_cast<unsigned char>(hlen >> 8)};
  out.write(kMagic, kMagicLen);
  out.write(reinterpret_cast<const char*>(version), 2);
  out.write(reinterpret_cast<const char*>(len_le), 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.nbytes()));
  out.flush();
  if (!out) fail(path, "write failed");
}

torch::Tensor read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(path, std::string("cannot open: ") + std::strerror(errno));

  char magic[kMagicLen];
  unsigned char version[2];
  if (!in.read(magic, kMagicLen) || std::memcmp(magic, kMagic, kMagicLen) != 0) {
    fail(path, "not a .npy file (bad magic string)");
  }
  if (!in.read(reinterpret_cast<char*>(version), 2)) fail(path, "truncated header");
  std::size_t hlen = 0;
  if (version[0] == 1) {
    unsigned char b[2];
    if (!in.read(reinterpret_cast<char*>(b), 2)) fail(path, "truncated header");
    hlen = static_cast<std::size_t>(b[0]) | (static_cast<std::size_t>(b[1]) << 8);
  } else if (version[0] == 2 || version[0] == 3) {
    unsigned char b[4];
    if (!in.read(reinterpret_cast<char*>(b), 4)) fail(path, "truncated header");
    hlen = static_cast<std::size_t>(b[0]) | (static_cast<std::size_t>(b[1]) << 8) |
           (static_cast<std::size_t>(b[2]) << 16) | (static_cast<std::size_t>(b[3]) << 24);
  } else {
    fail(path, "unsupported format version " + std::to_string(version[0]) + "." + std::to_string(version[1]));
  }
  if (hlen > (std::size_t{1} << 24)) fail(path, "implausible header length " + std::to_string(hlen));
  std::string h(hlen, '\0');
  if (!in.read(&h[0], static_cast<std::streamsize>(hlen))) fail(path, "truncated header");

  // descr
  std::size_t i = find_key(h, "descr");
  if (i == std::string::npos) fail(path, "header has no 'descr': " + h);
  i = skip_space(h, i);
  if (i >= h.size() || (h[i] != '\'' && h[i] != '"')) fail(path, "cannot parse 'descr' in header: " + h);
  const std::size_t end_q = h.find(h[i], i + 1);
  if (end_q == std::string::npos) fail(path, "cannot parse 'descr' in header: " + h);
  const std::string descr = h.substr(i + 1, end_q - i - 1);

  // fortran_order
  i = find_key(h, "fortran_order");
  if (i == std::string::npos) fail(path, "header has no 'fortran_order': " + h);
  i = skip_space(h, i);
  bool fortran = false;
  if (h.compare(i, 4, "True") == 0) {
    fortran = true;
  } else if (h.compare(i, 5, "False") != 0) {
    fail(path, "cannot parse 'fortran_order' in header: " + h);
  }

  // shape
  i = find_key(h, "shape");
  if (i == std::string::npos) fail(path, "header has no 'shape': " + h);
  i = skip_space(h, i);
  if (i >= h.size() || h[i] != '(') fail(path, "cannot parse 'shape' in header: " + h);
  const std::size_t close = h.find(')', i);
  if (close == std::string::npos) fail(path, "cannot parse 'shape' in header: " + h);
  std::vector<std::int64_t> shape;
  {
    std::size_t j = i + 1;
    while (j < close) {
      j = skip_space(h, j);
      if (j >= close) break;
      if (!std::isdigit(static_cast<unsigned char>(h[j]))) fail(path, "cannot parse 'shape' in header: " + h);
      std::int64_t v = 0;
      while (j < close && std::isdigit(static_cast<unsigned char>(h[j]))) {
        v = v * 10 + (h[j] - '0');
        if (v > (std::int64_t{1} << 48)) fail(path, "implausible dimension in header: " + h);
        ++j;
      }
      shape.push_back(v);
      j = skip_space(h, j);
      if (j < close && h[j] == ',') ++j;
    }
  }

  at::ScalarType dtype;
  if (descr == "<f4") {
    dtype = at::kFloat;
  } else if (descr == "<f8") {
    dtype = at::kDouble;
  } else if (descr == "<i8") {
    dtype = at::kLong;
  } else if (descr == "<i4") {
    dtype = at::kInt;
  } else if (!descr.empty() && descr[0] == '>') {
    fail(path, "big-endian data ('" + descr + "') is not supported; convert with arr.astype(arr.dtype.newbyteorder('<'))");
  } else {
    fail(path, "unsupported dtype '" + descr + "' (supported: <f4, <f8, <i8, <i4)");
  }
  if (!host_is_little_endian()) fail(path, "reading on a big-endian host is not supported");

  // Fortran order: the bytes are the C-order array of the reversed shape, transposed.
  std::vector<std::int64_t> stored(shape);
  if (fortran) std::reverse(stored.begin(), stored.end());
  at::Tensor t = at::empty(stored, at::TensorOptions().dtype(dtype));
  const std::size_t nbytes = t.nbytes();
  if (nbytes > 0 && !in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes))) {
    fail(path, "truncated data: expected " + std::to_string(nbytes) + " bytes after the header");
  }
  if (in.peek() != std::char_traits<char>::eof()) fail(path, "unexpected trailing bytes after the data");
  if (fortran && t.dim() > 1) {
    std::vector<std::int64_t> perm(static_cast<std::size_t>(t.dim()));
    for (std::int64_t d = 0; d < t.dim(); ++d) perm[static_cast<std::size_t>(d)] = t.dim() - 1 - d;
    t = t.permute(perm).contiguous();
  }
  return t;
}

}  // namespace workbench
