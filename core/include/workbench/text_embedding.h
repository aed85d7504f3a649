#pragma once
// Text embedding plugins: the text side of the joint model (SLAM: SentencePiece; mSLAM: characters).
#include <cstdint>
#include <utility>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "workbench/batch.h"
#include "workbench/component.h"
#include "workbench/encoder.h"

namespace workbench {

/// Token ids -> vectors in the shared encoder's dimension, with sinusoidal positions and a LayerNorm
/// (SLAM section 3.1; mSLAM section 2.1). Id 0 is padding and never a prediction target.
///
/// Plugins are of kind "encoder" and are named in [model.text_embedding]. The core builds them with
/// BuildContext::model_dim = the shared encoder's D, BuildContext::vocabulary = the character vocabulary
/// of the training texts, and BuildContext::training_texts = those texts (for a tokenizer trained at
/// start-up).
class TextEmbedding : public Component {
 public:
  ~TextEmbedding() override;
  virtual torch::nn::Module& module() = 0;
  /// D of embed()'s output.
  virtual std::int64_t output_dim() const = 0;
  /// Rows of the embedding table: every id tokenize() can produce, plus mask_id(). Prediction heads over
  /// text (SpanBERT, TLM) use this many outputs.
  virtual std::int64_t vocab_size() const = 0;
  /// The [MASK] id that masked-language-model losses substitute (SpanBERT's 80%).
  virtual std::int64_t mask_id() const = 0;
  /// Ids in [first_regular_id(), end_regular_id()) are ordinary tokens (never padding, unknown or
  /// mask): what SpanBERT's "random token" 10% draws from.
  virtual std::int64_t first_regular_id() const = 0;
  virtual std::int64_t end_regular_id() const = 0;
  /// Token ids of a Text or Paired batch: (B, L) int64, zero-padded, and lengths (B) int64, on the
  /// batch's device. Characters: batch.tokens, cut at the maximum length; SentencePiece: the pieces of
  /// batch.texts. Throws DataError when the batch has no text.
  virtual std::pair<torch::Tensor, torch::Tensor> tokenize(const Batch& batch) = 0;
  /// (B, L) int64 ids -> (B, L, D) float: token embedding + sinusoidal position (Vaswani et al. 2017),
  /// then LayerNorm. Lengths pass through.
  virtual EncoderOutput embed(const torch::Tensor& tokens, const torch::Tensor& lengths) = 0;
};

/// The Transformer's sinusoidal position table (Vaswani et al. 2017, section 3.5): (length, dim) float,
/// sin on even and cos on odd channels.
torch::Tensor sinusoidal_positions(std::int64_t length, std::int64_t dim);

}  // namespace workbench
