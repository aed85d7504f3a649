// spm_shim.so: libsentencepiece behind the C interface of spm_api.h (see there for why it exists).
// Nothing here may throw across the boundary: every entry point catches and reports through *error.
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <unordered_map>
#include <vector>

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include "spm_api.h"  // plugins/text/common

#define WB_SPM_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

char* copy(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (!out) return nullptr;
  std::memcpy(out, s.data(), s.size());
  out[s.size()] = '\0';
  return out;
}

int fail(char** error, const std::string& message) {
  if (error) *error = copy(message);
  return 1;
}

/// Feeds the texts to the trainer straight from memory.
class Texts final : public sentencepiece::SentenceIterator {
 public:
  Texts(const char* const* texts, const std::size_t* lengths, std::size_t count)
      : texts_(texts), lengths_(lengths), count_(count) {
    load();
  }
  bool done() const override { return i_ >= count_; }
  void Next() override {
    ++i_;
    load();
  }
  const std::string& value() const override { return current_; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  void load() {
    while (i_ < count_ && lengths_[i_] == 0) ++i_;  // SentencePiece has no use for empty lines
    if (i_ < count_) current_.assign(texts_[i_], lengths_[i_]);
  }
  const char* const* texts_;
  const std::size_t* lengths_;
  std::size_t count_, i_ = 0;
  std::string current_;
};

}  // namespace

WB_SPM_EXPORT int wb_spm_train(const char* const* texts, const std::size_t* lengths, std::size_t count,
                               const char* const* keys, const char* const* values, std::size_t n_args, unsigned seed,
                               char** proto, std::size_t* proto_size, char** error) {
  try {
    std::unordered_map<std::string, std::string> args;
    for (std::size_t i = 0; i < n_args; ++i) args[keys[i]] = values[i];
    sentencepiece::SetRandomGeneratorSeed(seed);
    Texts it(texts, lengths, count);
    std::string out;
    auto status = sentencepiece::SentencePieceTrainer::Train(args, &it, &out);
    if (!status.ok()) return fail(error, status.message());
    *proto = static_cast<char*>(std::malloc(out.size() ? out.size() : 1));
    if (!*proto) return fail(error, "out of memory");
    std::memcpy(*proto, out.data(), out.size());
    *proto_size = out.size();
    return 0;
  } catch (const std::exception& e) {
    return fail(error, e.what());
  } catch (...) {
    return fail(error, "unknown error in SentencePiece training");
  }
}

WB_SPM_EXPORT void* wb_spm_load(const char* proto, std::size_t size, char** error) {
  try {
    auto* p = new sentencepiece::SentencePieceProcessor();
    auto status = p->LoadFromSerializedProto(std::string(proto, size));
    if (!status.ok()) {
      delete p;
      fail(error, status.ToString());
      return nullptr;
    }
    return p;
  } catch (const std::exception& e) {
    fail(error, e.what());
    return nullptr;
  }
}

WB_SPM_EXPORT void wb_spm_release(void* processor) {
  delete static_cast<sentencepiece::SentencePieceProcessor*>(processor);
}

WB_SPM_EXPORT int wb_spm_piece_size(const void* processor) {
  return static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->GetPieceSize();
}

WB_SPM_EXPORT int wb_spm_piece_kind(const void* processor, int id) {
  const auto* p = static_cast<const sentencepiece::SentencePieceProcessor*>(processor);
  if (p->IsUnknown(id)) return 1;
  if (p->IsControl(id)) return 2;
  if (p->IsUnused(id)) return 3;
  if (p->IsByte(id)) return 4;
  return 0;
}

WB_SPM_EXPORT int wb_spm_encode(const void* processor, const char* text, std::size_t size, int** ids,
                                std::size_t* count, char** error) {
  try {
    std::vector<int> out;
    auto status =
        static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Encode(std::string(text, size), &out);
    if (!status.ok()) return fail(error, status.ToString());
    *ids = static_cast<int*>(std::malloc((out.empty() ? 1 : out.size()) * sizeof(int)));
    if (!*ids) return fail(error, "out of memory");
    if (!out.empty()) std::memcpy(*ids, out.data(), out.size() * sizeof(int));
    *count = out.size();
    return 0;
  } catch (const std::exception& e) {
    return fail(error, e.what());
  }
}

WB_SPM_EXPORT int wb_spm_decode(const void* processor, const int* ids, std::size_t count, char** text,
                                std::size_t* size, char** error) {
  try {
    std::string out;
    auto status = static_cast<const sentencepiece::SentencePieceProcessor*>(processor)->Decode(
        std::vector<int>(ids, ids + count), &out);
    if (!status.ok()) return fail(error, status.ToString());
    *text = copy(out);
    if (!*text) return fail(error, "out of memory");
    *size = out.size();
    return 0;
  } catch (const std::exception& e) {
    return fail(error, e.what());
  }
}

WB_SPM_EXPORT void wb_spm_free(void* p) { std::free(p); }
