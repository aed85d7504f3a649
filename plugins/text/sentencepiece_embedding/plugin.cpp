// The "sentencepiece_embedding" text embedding: SLAM's text input (SLAM section 3.1: a 32k SentencePiece
// vocabulary (Kudo & Richardson 2018), sinusoidal positions, LayerNorm).
//
// The tokenizer is either read from a .model file or trained in memory at start-up on every training
// text the core collected. Either way its serialized ModelProto is kept in the module as the uint8
// buffer "sentencepiece_model", so a checkpoint carries the tokenizer its table was trained with; when
// that buffer is overwritten (a checkpoint restored into the module), tokenize() reloads from it.
//
// Ids: ours = SentencePiece id + 1, so that 0 stays padding; [MASK] = the last row; rows = pieces + 2.
// Trained models have no <s>/</s> pieces (the losses never need them), so SentencePiece id 0 is <unk>
// (our 1) and every later piece is an ordinary token.
//
// libsentencepiece is reached through spm_shim.so (spm_api.h explains why it cannot be linked here).
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <dlfcn.h>

#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/plugin.h"
#include "workbench/text_embedding.h"

#include "../common/token_embedding.h"
#include "spm_api.h"  // plugins/text/common

namespace workbench::sentencepiece_embedding {
namespace {

namespace fs = std::filesystem;
using text_embedding::TokenEmbedding;

constexpr const char* kBuffer = "sentencepiece_model";

std::string shim_path();
/// The shim, opened on first use (a failure is retried on the next).
std::string shim_path() { return spm::shim_beside(reinterpret_cast<const void*>(&shim_path)); }

const spm::Api& api() {
  static const spm::Api opened = spm::Api::open(shim_path());
  return opened;
}

/// The whole file as bytes. Throws DataError naming the path when it is missing or unreadable.
std::string read_model_file(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec))
    throw DataError(fmt::format("SentencePiece model '{}' not found (resolved against {})", path,
                                fs::current_path(ec).string()));
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  if (!in) throw DataError(fmt::format("cannot read SentencePiece model '{}'", path));
  return bytes.str();
}

class SentencePieceEmbedding final : public TextEmbedding {
 public:
  SentencePieceEmbedding(const Options& o, const BuildContext& ctx)
      : section_(o.section()), max_length_(o.get_int("max_length")) {
    if (ctx.model_dim <= 0)
      throw ConfigError("[" + section_ + "]: sentencepiece_embedding needs the shared encoder's dimension (model_dim)");
    const std::string& model_path = o.get_string("model");
    std::string proto;
    if (!model_path.empty()) {
      proto = read_model_file(model_path);
      try {
        processor_ = std::make_unique<spm::Processor>(api(), proto);
      } catch (const std::runtime_error& e) {
        throw DataError(fmt::format("'{}' is not a SentencePiece model: {}", model_path, e.what()));
      }
      if (processor_->piece_size() < 1)
        throw DataError(fmt::format("'{}' is not a SentencePiece model: it has no pieces", model_path));
    } else if (ctx.training_texts && !ctx.training_texts->empty()) {
      proto = train(o, *ctx.training_texts, ctx.seed);
      processor_ = std::make_unique<spm::Processor>(api(), proto);
    }
    loaded_proto_ = proto;
    const std::int64_t pieces = processor_ ? processor_->piece_size() : o.get_int("vocab_size");
    rows_ = pieces + 2;
    first_regular_ = 1 + (processor_ ? leading_special_pieces() : 1);
    embedding_ = TokenEmbedding(rows_, ctx.model_dim, o.get_float("dropout"));
    auto bytes = torch::empty({static_cast<std::int64_t>(proto.size())}, torch::kUInt8);
    if (!proto.empty()) std::memcpy(bytes.data_ptr<std::uint8_t>(), proto.data(), proto.size());
    embedding_->register_buffer(kBuffer, bytes);
    embedding_->to(ctx.device);
    remember_buffer();
  }

  torch::nn::Module& module() override { return *embedding_; }
  std::int64_t output_dim() const override { return embedding_->dim(); }
  std::int64_t vocab_size() const override { return rows_; }
  std::int64_t mask_id() const override { return rows_ - 1; }
  std::int64_t first_regular_id() const override { return first_regular_; }
  std::int64_t end_regular_id() const override { return rows_ - 1; }

  std::pair<torch::Tensor, torch::Tensor> tokenize(const Batch& batch) override {
    if (batch.texts.empty() || static_cast<std::int64_t>(batch.texts.size()) != batch.size())
      throw DataError(fmt::format("sentencepiece_embedding: a {} batch without its texts", to_string(batch.kind)));
    sync_with_buffer();
    const auto n = static_cast<std::int64_t>(batch.texts.size());
    std::vector<std::vector<int>> pieces(static_cast<std::size_t>(n));
    std::int64_t longest = 1;  // at least one column, as the core's collate does
    for (std::int64_t b = 0; b < n; ++b) {
      auto& ids = pieces[static_cast<std::size_t>(b)];
      try {
        ids = processor_->encode(batch.texts[static_cast<std::size_t>(b)]);
      } catch (const std::runtime_error& e) {
        throw DataError(fmt::format("SentencePiece could not encode text '{}': {}", batch.ids.at(b), e.what()));
      }
      if (static_cast<std::int64_t>(ids.size()) > max_length_) ids.resize(static_cast<std::size_t>(max_length_));
      longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(ids.size()));
    }
    auto tokens = torch::zeros({n, longest}, torch::kInt64);
    auto lengths = torch::empty({n}, torch::kInt64);
    auto* t = tokens.data_ptr<std::int64_t>();
    auto* l = lengths.data_ptr<std::int64_t>();
    for (std::int64_t b = 0; b < n; ++b) {
      const auto& ids = pieces[static_cast<std::size_t>(b)];
      for (std::size_t i = 0; i < ids.size(); ++i) t[b * longest + static_cast<std::int64_t>(i)] = ids[i] + 1;
      l[b] = static_cast<std::int64_t>(ids.size());
    }
    const auto device = batch.tokens.defined()     ? batch.tokens.device()
                        : batch.features.defined() ? batch.features.device()
                                                   : torch::Device(torch::kCPU);
    return {tokens.to(device), lengths.to(device)};
  }

  EncoderOutput embed(const torch::Tensor& tokens, const torch::Tensor& lengths) override {
    return {embedding_->forward(tokens), lengths};
  }

 private:
  /// Trains a model in memory. Throws ConfigError with SentencePiece's message when it cannot (most
  /// often a vocab_size larger than the texts support, or smaller than their alphabet).
  std::string train(const Options& o, const std::vector<std::string>& texts, std::uint64_t seed) const {
    const unsigned threads = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
    const std::vector<std::pair<std::string, std::string>> args = {
        {"model_type", o.get_string("model_type")},
        {"vocab_size", std::to_string(o.get_int("vocab_size"))},
        {"character_coverage", fmt::format("{}", o.get_float("character_coverage"))},
        // No <s>, </s> or <pad> pieces: padding is our id 0 and the losses add their own [MASK].
        {"unk_id", "0"},
        {"bos_id", "-1"},
        {"eos_id", "-1"},
        {"pad_id", "-1"},
        // SentencePiece's advice for large corpora: a seeded sample of this many sentences is plenty.
        {"input_sentence_size", "2000000"},
        {"shuffle_input_sentence", "true"},
        {"num_threads", std::to_string(threads)},
        {"minloglevel", "1"},  // its INFO log is a screenful per training
    };
    // Seeds the sampling of input sentences and the trainers; ~0u would mean "random" to SentencePiece.
    const auto s = static_cast<unsigned int>(seed % 0xFFFFFFFFull);
    try {
      return spm::train(api(), texts, args, s);
    } catch (const std::runtime_error& e) {
      const std::string why = e.what();
      const std::string message = fmt::format("SentencePiece could not train a {} model on {} texts: {}",
                                              o.get_string("model_type"), texts.size(), why);
      if (why.find("ocabulary size") != std::string::npos) o.fail("vocab_size", message);
      throw ConfigError("[" + o.section() + "]: " + message);
    }
  }

  /// SentencePiece puts <unk> and control pieces first; the ordinary pieces follow.
  std::int64_t leading_special_pieces() const {
    std::int64_t i = 0;
    const std::int64_t n = processor_->piece_size();
    // Kinds 1-3: <unk>, control and unused pieces. Byte pieces (4) are ordinary tokens.
    while (i < n && processor_->piece_kind(static_cast<int>(i)) >= 1 && processor_->piece_kind(static_cast<int>(i)) <= 3)
      ++i;
    return i;
  }

  torch::Tensor buffer() {
    auto named = embedding_->named_buffers(/*recurse=*/false);
    auto* found = named.find(kBuffer);
    if (!found) throw std::logic_error("sentencepiece_embedding: the model buffer has gone");
    return *found;
  }

  /// Identity of the buffer's current contents: anything that overwrites it (copy_, set_, set_data,
  /// assignment through the module) changes one of these.
  struct BufferState {
    const void* impl = nullptr;
    const void* data = nullptr;
    std::int64_t version = -1, numel = -1;
    bool operator==(const BufferState& o) const {
      return impl == o.impl && data == o.data && version == o.version && numel == o.numel;
    }
  };
  BufferState buffer_state() {
    auto b = buffer();
    return {b.unsafeGetTensorImpl(), b.numel() ? b.data_ptr() : nullptr, static_cast<std::int64_t>(b._version()),
            b.numel()};
  }
  void remember_buffer() { seen_ = buffer_state(); }

  /// Reloads the tokenizer when the buffer no longer holds the model it was loaded from.
  void sync_with_buffer() {
    if (buffer_state() == seen_ && !loaded_proto_.empty()) return;
    auto bytes = buffer().to(torch::kCPU).contiguous();
    std::string proto(static_cast<std::size_t>(bytes.numel()), '\0');
    if (!proto.empty()) std::memcpy(proto.data(), bytes.data_ptr<std::uint8_t>(), proto.size());
    if (proto.empty())
      throw ConfigError(fmt::format(
          "[{}]: sentencepiece_embedding has no tokenizer: model = \"\" asks for one trained at start-up, but there "
          "were no training texts (a dry run?). Set model = \"path/to/file.model\" or train with text data",
          section_));
    if (proto != loaded_proto_) {
      std::unique_ptr<spm::Processor> restored;
      try {
        restored = std::make_unique<spm::Processor>(api(), proto);
      } catch (const std::runtime_error& e) {
        throw DataError(fmt::format("the '{}' buffer (from a checkpoint?) is not a SentencePiece model: {}", kBuffer,
                                    e.what()));
      }
      if (restored->piece_size() + 2 != rows_)
        throw DataError(fmt::format("the SentencePiece model in '{}' has {} pieces but the table has {} rows (pieces + 2)",
                                    kBuffer, restored->piece_size(), rows_));
      processor_ = std::move(restored);
      loaded_proto_ = std::move(proto);
      first_regular_ = 1 + leading_special_pieces();
    }
    remember_buffer();
  }

  std::string section_;
  std::int64_t max_length_;
  std::int64_t rows_ = 0, first_regular_ = 2;
  std::unique_ptr<spm::Processor> processor_;  // null until a model is there (a dry run)
  std::string loaded_proto_;  // what processor_ holds; "" = nothing loaded
  BufferState seen_;
  TokenEmbedding embedding_{nullptr};
};

PluginDescriptor describe() {
  return describe_plugin<SentencePieceEmbedding>(PluginKind::TextEmbedding, "sentencepiece_embedding", "1.0.0",
      "SLAM text input: SentencePiece (trained at start-up or from a .model) + sinusoidal positions + LayerNorm",
      OptionSchema()
          .add_string("model", "",
                      "SentencePiece .model file (relative to the working directory); \"\" = train one at start-up on "
                      "the training texts")
          .add_int("vocab_size", 8000, "pieces of a model trained at start-up, <unk> included (SLAM: 32000)", 2)
          .add_choice("model_type", "unigram", {"unigram", "bpe", "char", "word"}, "SentencePiece algorithm for training")
          .add_float("character_coverage", 1.0, "share of characters the trained model must cover", 0, 1)
          .add_int("max_length", 512, "longest text in pieces; longer ones are cut", 1)
          .add_float("dropout", 0.0, "dropout after the LayerNorm", 0, 1));
}

}  // namespace
}  // namespace workbench::sentencepiece_embedding

WORKBENCH_PLUGIN(workbench::sentencepiece_embedding::describe)
