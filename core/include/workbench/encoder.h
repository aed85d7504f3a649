#pragma once
// Encoder plugins: the speech encoder (and, later, the text embedding and shared encoder).
#include <cstdint>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "workbench/component.h"

namespace workbench {

/// A padded sequence of vectors.
struct EncoderOutput {
  torch::Tensor x;        ///< (B, T, D) float
  torch::Tensor lengths;  ///< (B) int64, valid positions per row
};

/// An encoder in two stages, so that losses can work between them:
///   embed:  the frontend. For a speech encoder, (B, T, F) filterbank frames -> (B, T', D) after
///           convolutional subsampling (w2v-BERT's "feature encoder": where masking applies and what a
///           quantizer reads);
///   encode: the context network (Conformer blocks), (B, T', D) -> (B, T', D).
class Encoder : public Component {
 public:
  ~Encoder() override;
  /// The parameters, for the optimizer, checkpoints, train()/eval() and to(device).
  virtual torch::nn::Module& module() = 0;
  /// D, the dimension of embed() and encode() outputs.
  virtual std::int64_t output_dim() const = 0;
  virtual EncoderOutput embed(const torch::Tensor& features, const torch::Tensor& lengths) = 0;
  virtual EncoderOutput encode(const EncoderOutput& embedded) = 0;
  /// embed, then encode.
  EncoderOutput forward(const torch::Tensor& features, const torch::Tensor& lengths) {
    return encode(embed(features, lengths));
  }
};

/// (B, T) bool: true at padded positions (t >= lengths[b]). `lengths` is (B) int64.
torch::Tensor padding_mask(const torch::Tensor& lengths, std::int64_t max_length);

/// Mean of (B, T, D) over the valid positions of each row -> (B, D). A row of length 0 gives zeros.
/// The usual pooled utterance (or sentence) vector for classification and retrieval losses.
torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& lengths);

}  // namespace workbench
