#pragma once
// The part both text embeddings share (SLAM section 3.1, mSLAM section 2.1): a token table, sinusoidal
// positions (Vaswani et al. 2017), then LayerNorm and dropout. Compiled into each text-embedding plugin.
#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

// Hidden (with its TORCH_MODULE holder), so that the two plugin libraries never bind to each other's copy.
#pragma GCC visibility push(hidden)
namespace workbench::text_embedding {

class TokenEmbeddingImpl : public torch::nn::Module {
 public:
  /// `rows` ids (row 0 = padding: zero and never updated), `dim` = D, dropout probability after the norm.
  /// Throws std::invalid_argument for rows < 1 or dim < 1.
  TokenEmbeddingImpl(std::int64_t rows, std::int64_t dim, double dropout);

  /// (B, L) int64 ids -> (B, L, D) float: LayerNorm(table[ids] + positions[0:L]), then dropout.
  torch::Tensor forward(const torch::Tensor& tokens);

  std::int64_t rows() const { return rows_; }
  std::int64_t dim() const { return dim_; }

  torch::nn::Embedding table{nullptr};
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Dropout dropout{nullptr};

 private:
  /// The first `length` rows of the position table, on `like`'s device and dtype.
  torch::Tensor positions(std::int64_t length, const torch::Tensor& like);

  std::int64_t rows_, dim_;
  // Fixed, so a cache rather than a buffer: checkpoints do not depend on the longest batch seen.
  torch::Tensor positions_;
};
TORCH_MODULE(TokenEmbedding);

}  // namespace workbench::text_embedding
#pragma GCC visibility pop
