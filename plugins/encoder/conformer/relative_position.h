#pragma once
// Index and embedding tables for relative-position self-attention, kept header-only so that tests can
// check them without the plugin library.
//
// Both relative schemes score a (query i, key j) pair with a vector that depends only on j - i. Rather
// than materialise a (T, T, dh) tensor of those vectors, attention multiplies the queries by the R
// distinct vectors once, (B*H, T, dh) x (dh, R) -> (B*H, T, R), and picks column index[i][j] for each
// pair with a gather: memory O(T R) for the products instead of O(T^2 dh).
#include <algorithm>
#include <cmath>
#include <cstdint>

#include <torch/types.h>

namespace workbench::conformer {

/// (T, T) int64 with entry [i][j] = clamp(j - i, -left, right) + left: the row, in a table of
/// left + right + 1 embeddings ordered from distance -left to +right, that query i uses for key j.
///   Shaw et al. 2018 (sec. 3.2) clip the distance to a window: left = shaw_left, right = shaw_right.
///   With left = right = T - 1 nothing is clipped and the entry is j - i + T - 1 (Transformer-XL's
///   table over all 2T - 1 distances).
inline torch::Tensor relative_position_index(std::int64_t T, std::int64_t left, std::int64_t right,
                                             torch::Device device = torch::kCPU) {
  auto pos = torch::arange(T, torch::TensorOptions().dtype(torch::kInt64).device(device));
  return torch::clamp(pos.unsqueeze(0) - pos.unsqueeze(1), -left, right) + left;
}

/// (2T - 1, D) sinusoid encodings R_{i-j} of Transformer-XL (Dai et al. 2019, sec. 3.3), row r for
/// the distance i - j = T - 1 - r, so that relative_position_index(T, T - 1, T - 1)[i][j] picks
/// R_{i-j}. Columns are [sin(p w_0), ..., sin(p w_{n-1}), cos(p w_0), ...] with w_m = 10000^(-2m/D)
/// as in the Transformer-XL code (the learned W_r makes the order irrelevant); an odd D drops the
/// last cosine.
inline torch::Tensor relative_sinusoids(std::int64_t T, std::int64_t D,
                                        const torch::TensorOptions& options = torch::kFloat32) {
  const std::int64_t half = (D + 1) / 2;
  auto f = options.dtype(torch::kFloat32);
  auto distance = torch::arange(T - 1, -T, -1, f.dtype(torch::kInt64)).to(torch::kFloat32);  // T-1 .. -(T-1)
  auto inv_freq = torch::exp(torch::arange(0, half, f) * (-2.0 * std::log(10000.0) / static_cast<double>(D)));
  auto angle = distance.unsqueeze(1) * inv_freq.unsqueeze(0);  // (2T-1, half)
  return torch::cat({torch::sin(angle), torch::cos(angle)}, 1).narrow(1, 0, D).to(options.dtype());
}

}  // namespace workbench::conformer
