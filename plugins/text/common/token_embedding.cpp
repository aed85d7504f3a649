#include "token_embedding.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "workbench/text_embedding.h"

namespace workbench::text_embedding {

TokenEmbeddingImpl::TokenEmbeddingImpl(std::int64_t rows, std::int64_t dim, double p) : rows_(rows), dim_(dim) {
  if (rows < 1 || dim < 1)
    throw std::invalid_argument("text embedding needs rows >= 1 and dim >= 1, got " + std::to_string(rows) + " and " +
                                std::to_string(dim));
  // N(0, 1) rows (the default) have the same scale as the sin/cos positions, so neither drowns the other
  // before the LayerNorm.
  table = register_module("table", torch::nn::Embedding(torch::nn::EmbeddingOptions(rows, dim).padding_idx(0)));
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  dropout = register_module("dropout", torch::nn::Dropout(torch::nn::DropoutOptions(p)));
}

torch::Tensor TokenEmbeddingImpl::positions(std::int64_t length, const torch::Tensor& like) {
  const std::int64_t have = positions_.defined() ? positions_.size(0) : 0;
  if (!positions_.defined() || have < length || positions_.device() != like.device() ||
      positions_.scalar_type() != like.scalar_type()) {
    // Doubling on growth: a run of slowly growing lengths recomputes the table only a few times.
    const std::int64_t n = have < length ? std::max(length, 2 * have) : have;
    positions_ = sinusoidal_positions(n, dim_).to(like.device(), like.scalar_type());
  }
  return positions_.narrow(0, 0, length);
}

torch::Tensor TokenEmbeddingImpl::forward(const torch::Tensor& tokens) {
  if (tokens.dim() != 2) throw std::invalid_argument("text embedding expects (B, L) token ids");
  auto x = table(tokens.to(torch::kLong));
  x = x + positions(tokens.size(1), x).unsqueeze(0);
  return dropout(norm(x));
}

}  // namespace workbench::text_embedding
