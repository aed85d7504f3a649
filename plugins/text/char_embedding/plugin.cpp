// The "char_embedding" text embedding: mSLAM's character input (mSLAM section 2.1: characters, a 4096-row
// table over 101 languages, sequences of at most 512 characters). The ids are the core character
// Vocabulary's (0 = blank/padding, 1 = unknown, then characters by code point), so the text batches the
// core already builds need no second tokenizer, and CTC and the text losses share one alphabet.
#include <algorithm>
#include <memory>

#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/plugin.h"
#include "workbench/text_embedding.h"
#include "workbench/vocabulary.h"

#include "../common/token_embedding.h"

namespace workbench::char_embedding {
namespace {

using text_embedding::TokenEmbedding;

class CharEmbedding final : public TextEmbedding {
 public:
  CharEmbedding(const Options& o, const BuildContext& ctx)
      : max_length_(o.get_int("max_length")) {
    if (!ctx.vocabulary)
      throw ConfigError("[" + o.section() + "]: char_embedding needs the character vocabulary of the training texts");
    if (ctx.model_dim <= 0)
      throw ConfigError("[" + o.section() + "]: char_embedding needs the shared encoder's dimension (model_dim)");
    characters_end_ = ctx.vocabulary->size();
    // One row past the vocabulary for [MASK]. A fixed table (mSLAM's 4096) keeps checkpoints compatible
    // across data sets whose alphabets differ; the rows between the last character and [MASK] stay unused.
    const std::int64_t needed = characters_end_ + 1;
    const std::int64_t fixed = o.get_int("vocab_size");
    if (fixed > 0 && fixed < needed)
      o.fail("vocab_size", fmt::format("{} rows are too few: the training texts have {} characters, so the table "
                                       "needs {} rows (blank, unknown, characters, mask); raise vocab_size or set it "
                                       "to 0 to size the table from the data",
                                       fixed, characters_end_ - 2, needed));
    rows_ = fixed > 0 ? fixed : needed;
    embedding_ = TokenEmbedding(rows_, ctx.model_dim, o.get_float("dropout"));
    embedding_->to(ctx.device);
  }

  torch::nn::Module& module() override { return *embedding_; }
  std::int64_t output_dim() const override { return embedding_->dim(); }
  std::int64_t vocab_size() const override { return rows_; }
  /// The last row, so that the id stays the same whatever the data's alphabet when the table is fixed.
  std::int64_t mask_id() const override { return rows_ - 1; }
  std::int64_t first_regular_id() const override { return Vocabulary::kUnknown + 1; }
  /// The characters' ids; empty ([2, 2)) in a dry run, whose vocabulary has no characters.
  std::int64_t end_regular_id() const override { return characters_end_; }

  std::pair<torch::Tensor, torch::Tensor> tokenize(const Batch& batch) override {
    if (!batch.tokens.defined() || !batch.token_lengths.defined())
      throw DataError(fmt::format("char_embedding: a {} batch without token ids (it needs text)", to_string(batch.kind)));
    auto tokens = batch.tokens;
    auto lengths = batch.token_lengths;
    if (tokens.size(1) > max_length_) {
      tokens = tokens.narrow(1, 0, max_length_);
      lengths = lengths.clamp_max(max_length_);
    }
    return {tokens, lengths};
  }

  EncoderOutput embed(const torch::Tensor& tokens, const torch::Tensor& lengths) override {
    return {embedding_->forward(tokens), lengths};
  }

 private:
  std::int64_t max_length_;
  std::int64_t characters_end_ = 0;
  std::int64_t rows_ = 0;
  TokenEmbedding embedding_{nullptr};
};

PluginDescriptor describe() {
  return describe_plugin<CharEmbedding>(PluginKind::TextEmbedding, "char_embedding", "1.0.0",
      "mSLAM text input: character embedding + sinusoidal positions + LayerNorm (core vocabulary ids)",
      OptionSchema()
          .add_int("vocab_size", 0,
                   "rows of the table; 0 = the data's vocabulary + 1 (for [MASK]); mSLAM uses a fixed 4096", 0)
          .add_int("max_length", 512, "longest text in characters; longer rows are cut (mSLAM: 512)", 1)
          .add_float("dropout", 0.0, "dropout after the LayerNorm", 0, 1));
}

}  // namespace
}  // namespace workbench::char_embedding

WORKBENCH_PLUGIN(workbench::char_embedding::describe)
