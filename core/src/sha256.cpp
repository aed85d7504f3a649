#include "workbench/sha256.h"

#include <openssl/evp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <vector>

namespace workbench {
namespace {

struct EvpCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using EvpCtxPtr = std::unique_ptr<EVP_MD_CTX, EvpCtxFree>;

EvpCtxPtr new_context() {
  EvpCtxPtr ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("sha256: cannot initialise OpenSSL digest");
  return ctx;
}

std::string finish(EVP_MD_CTX* ctx) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_DigestFinal_ex(ctx, digest, &size) != 1) throw std::runtime_error("sha256: OpenSSL digest failed");
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(size * 2);
  for (unsigned int i = 0; i < size; ++i) {
    out.push_back(kDigits[digest[i] >> 4]);
    out.push_back(kDigits[digest[i] & 0x0f]);
  }
  return out;
}

}  // namespace

std::string sha256_file(const std::string& path) {
  std::unique_ptr<std::FILE, int (*)(std::FILE*)> file(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!file) throw std::runtime_error("sha256: cannot open " + path + ": " + std::strerror(errno));
  auto ctx = new_context();
  std::vector<unsigned char> buffer(1 << 20);
  for (;;) {
    const std::size_t n = std::fread(buffer.data(), 1, buffer.size(), file.get());
    if (n > 0 && EVP_DigestUpdate(ctx.get(), buffer.data(), n) != 1)
      throw std::runtime_error("sha256: OpenSSL digest failed for " + path);
    if (n < buffer.size()) {
      // A directory opens with fopen on Linux; its first read fails with EISDIR.
      if (std::ferror(file.get()) != 0) throw std::runtime_error("sha256: cannot read " + path + ": " + std::strerror(errno));
      break;
    }
  }
  return finish(ctx.get());
}

std::string sha256_text(const std::string& text) {
  auto ctx = new_context();
  if (EVP_DigestUpdate(ctx.get(), text.data(), text.size()) != 1) throw std::runtime_error("sha256: digest failed");
  return finish(ctx.get());
}

}  // namespace workbench
