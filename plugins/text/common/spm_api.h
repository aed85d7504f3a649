#pragma once
// A C interface to libsentencepiece, and the loader the plugin (and its test) use to reach it.
//
// Why not link libsentencepiece into the plugin: Debian's libsentencepiece.so.0 carries its own copy of
// protobuf-lite 3.14 and exports those symbols, while LibTorch loads the system libprotobuf 3.21. In one
// process the two copies bind to each other: SentencePiece's first use aborts with "compiled against
// version 3.14.0 of the Protocol Buffer runtime library, which is not compatible with the installed
// version (3.21.12)", and a program linked with both crashes before main. So libsentencepiece is only
// linked into spm_shim.so (spm_shim.cpp), which the plugin opens with RTLD_DEEPBIND | RTLD_LOCAL: the
// shim and libsentencepiece then resolve protobuf to SentencePiece's own copy, and nothing of it becomes
// visible to the rest of the process. Only C types cross this boundary.
#include <dlfcn.h>

#include <cstddef>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

extern "C" {
/// Trains a model on `count` texts (pointers and byte lengths) with SentencePiece's trainer options
/// (`n_args` key/value pairs, e.g. "vocab_size" = "8000"), seeding its random generator with `seed`.
/// 0 on success with the serialized ModelProto in *proto (*proto_size bytes); otherwise 1 and *error.
/// Strings returned through pointers are malloc'd: release them with wb_spm_free.
typedef int (*wb_spm_train_fn)(const char* const* texts, const std::size_t* lengths, std::size_t count,
                               const char* const* keys, const char* const* values, std::size_t n_args,
                               unsigned seed, char** proto, std::size_t* proto_size, char** error);
/// A processor for a serialized ModelProto, or null with *error.
typedef void* (*wb_spm_load_fn)(const char* proto, std::size_t size, char** error);
typedef void (*wb_spm_release_fn)(void* processor);
typedef int (*wb_spm_piece_size_fn)(const void* processor);
/// 0 = an ordinary piece, 1 = <unk>, 2 = a control piece (<s>, </s>), 3 = unused, 4 = a byte piece.
typedef int (*wb_spm_piece_kind_fn)(const void* processor, int id);
/// Piece ids of UTF-8 `text` (malloc'd *ids, *count of them); 0 on success, otherwise 1 and *error.
typedef int (*wb_spm_encode_fn)(const void* processor, const char* text, std::size_t size, int** ids,
                                std::size_t* count, char** error);
/// Text of piece ids (malloc'd *text, *size bytes); 0 on success, otherwise 1 and *error.
typedef int (*wb_spm_decode_fn)(const void* processor, const int* ids, std::size_t count, char** text,
                                std::size_t* size, char** error);
typedef void (*wb_spm_free_fn)(void* p);
}

namespace workbench::spm {

/// The shim's entry points. Opening it twice gives the same handle, so the plugin and a test share it.
struct __attribute__((visibility("hidden"))) Api {
  wb_spm_train_fn train = nullptr;
  wb_spm_load_fn load = nullptr;
  wb_spm_release_fn release = nullptr;
  wb_spm_piece_size_fn piece_size = nullptr;
  wb_spm_piece_kind_fn piece_kind = nullptr;
  wb_spm_encode_fn encode = nullptr;
  wb_spm_decode_fn decode = nullptr;
  wb_spm_free_fn free = nullptr;

  /// Opens the shim at `path`. Throws std::runtime_error with dlopen's message when it cannot.
  static Api open(const std::string& path) {
    void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!handle) {
      const char* why = dlerror();
      throw std::runtime_error("cannot load the SentencePiece shim '" + path + "': " + (why ? why : "unknown error") +
                               " (is libsentencepiece0 installed?)");
    }
    Api api;
    api.train = symbol<wb_spm_train_fn>(handle, "wb_spm_train", path);
    api.load = symbol<wb_spm_load_fn>(handle, "wb_spm_load", path);
    api.release = symbol<wb_spm_release_fn>(handle, "wb_spm_release", path);
    api.piece_size = symbol<wb_spm_piece_size_fn>(handle, "wb_spm_piece_size", path);
    api.piece_kind = symbol<wb_spm_piece_kind_fn>(handle, "wb_spm_piece_kind", path);
    api.encode = symbol<wb_spm_encode_fn>(handle, "wb_spm_encode", path);
    api.decode = symbol<wb_spm_decode_fn>(handle, "wb_spm_decode", path);
    api.free = symbol<wb_spm_free_fn>(handle, "wb_spm_free", path);
    return api;  // the handle stays open for the life of the process, like the plugins'
  }

  /// Takes a malloc'd string from the shim.
  std::string take(char* s, std::size_t size) const {
    std::string out = s ? std::string(s, size) : std::string();
    free(s);
    return out;
  }
  std::string take(char* s) const { return take(s, s ? std::char_traits<char>::length(s) : 0); }

 private:
  template <typename F>
  static F symbol(void* handle, const char* name, const std::string& path) {
    void* p = dlsym(handle, name);
    if (!p) throw std::runtime_error("the SentencePiece shim '" + path + "' has no " + name);
    return reinterpret_cast<F>(p);
  }
};

/// Where spm_shim.so lives: the "sentencepiece" folder beside the plugin that holds `anchor` (a function of
/// that plugin), a subfolder because every *.so in the plugin folder itself must be a plugin.
inline std::string shim_beside(const void* anchor) {
  Dl_info info{};
  if (!dladdr(anchor, &info) || !info.dli_fname)
    throw std::runtime_error("a SentencePiece plugin cannot tell where it was loaded from (dladdr failed)");
  return (std::filesystem::path(info.dli_fname).parent_path() / "sentencepiece" / "spm_shim.so").string();
}

/// Trains a model in memory on `texts` with SentencePiece's trainer options `args` (key, value), seeded
/// with `seed`. Returns the serialized ModelProto. Throws std::runtime_error with SentencePiece's message.
inline std::string train(const Api& api, const std::vector<std::string>& texts,
                         const std::vector<std::pair<std::string, std::string>>& args, unsigned seed) {
  std::vector<const char*> keys, values, data;
  std::vector<std::size_t> sizes;
  for (const auto& [k, v] : args) {
    keys.push_back(k.c_str());
    values.push_back(v.c_str());
  }
  for (const auto& t : texts) {
    data.push_back(t.data());
    sizes.push_back(t.size());
  }
  char* proto = nullptr;
  char* error = nullptr;
  std::size_t proto_size = 0;
  if (api.train(data.data(), sizes.data(), data.size(), keys.data(), values.data(), keys.size(), seed, &proto,
                &proto_size, &error) != 0)
    throw std::runtime_error(api.take(error));
  return api.take(proto, proto_size);
}

/// A loaded model. Throws std::runtime_error with SentencePiece's message on failure.
class __attribute__((visibility("hidden"))) Processor {
 public:
  Processor(const Api& api, const std::string& proto) : api_(&api), handle_(load(api, proto), Release{&api}) {}
  int piece_size() const { return api_->piece_size(handle_.get()); }
  int piece_kind(int id) const { return api_->piece_kind(handle_.get(), id); }
  std::vector<int> encode(const std::string& text) const {
    int* ids = nullptr;
    std::size_t n = 0;
    char* error = nullptr;
    if (api_->encode(handle_.get(), text.data(), text.size(), &ids, &n, &error) != 0)
      throw std::runtime_error(api_->take(error));
    std::vector<int> out(ids, ids + n);
    api_->free(ids);
    return out;
  }
  std::string decode(const std::vector<int>& ids) const {
    char* text = nullptr;
    std::size_t n = 0;
    char* error = nullptr;
    if (api_->decode(handle_.get(), ids.data(), ids.size(), &text, &n, &error) != 0)
      throw std::runtime_error(api_->take(error));
    return api_->take(text, n);
  }

 private:
  static void* load(const Api& api, const std::string& proto) {
    char* error = nullptr;
    void* p = api.load(proto.data(), proto.size(), &error);
    if (!p) throw std::runtime_error(api.take(error));
    return p;
  }
  struct Release {
    const Api* api;
    void operator()(void* p) const {
      if (api && p) api->release(p);
    }
  };
  const Api* api_;
  std::unique_ptr<void, Release> handle_;
};

}  // namespace workbench::spm
