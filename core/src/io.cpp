#include "workbench/io.h"

#include <fstream>
#include <sstream>
#include <stdexcept>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <zlib.h>

#include "workbench/error.h"

namespace workbench {

std::string read_text_file(const std::string& path) {
  if (path.size() > 3 && path.compare(path.size() - 3, 3, ".gz") == 0) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (!f) throw DataError(fmt::format("cannot open '{}'", path));
    std::string out;
    char buf[65536];
    int n;
    while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    int err = 0;
    const char* msg = gzerror(f, &err);
    std::string why = err < 0 && msg ? msg : "";
    gzclose(f);
    if (n < 0 || !why.empty()) throw DataError(fmt::format("cannot decompress '{}': {}", path, why));
    return out;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw DataError(fmt::format("cannot open '{}'", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string md5_hex(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(text.data(), text.size(), digest, &len, EVP_md5(), nullptr);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", digest[i]);
  return hex;
}

std::int64_t stable_bucket(const std::string& key, std::int64_t buckets) {
  if (buckets <= 0) throw std::invalid_argument("stable_bucket: buckets must be positive");
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(key.data(), key.size(), digest, &len, EVP_md5(), nullptr);
  std::int64_t r = 0;
  for (unsigned int i = 0; i < len; ++i) r = (r * 256 + digest[i]) % buckets;
  return r;
}

}  // namespace workbench
