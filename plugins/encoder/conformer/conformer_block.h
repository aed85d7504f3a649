#pragma once
// Conformer block (Gulati et al., 2020, "Conformer: Convolution-augmented Transformer for Speech
// Recognition", section 2 and figure 1):
//   x = x + 1/2 FFN(x);  x = x + MHSA(x);  x = x + Conv(x);  x = x + 1/2 FFN(x);  y = LayerNorm(x)
// All tensors are (B, T, D); `pad` is (B, T) bool, true at padded frames.
//
// Positions in self-attention (BlockOptions::position), with H heads of dh = D / H and the
// scale s = 1 / sqrt(dh):
//   none        score(i, j) = s q_i.k_j. The original w2v-BERT (arXiv 2108.06209) has no positional
//               encoding in attention: the conv module's kernel supplies relative position. No extra
//               parameters, so checkpoints from before this option load unchanged.
//   relative_xl Transformer-XL, Dai et al. 2019 (arXiv 1901.02860), sec. 3.3, non-causal:
//               score(i, j) = s ((q_i + u).k_j + (q_i + v).W_r R_{i-j}), R the sinusoids of
//               relative_position.h over the 2T - 1 distances, W_r a bias-free (D, D) Linear
//               (`pos_proj`), u and v (H, dh) learned per head (`pos_bias_u`, `pos_bias_v`).
//               Shapes: R (2T-1, D) -> W_r R (H, dh, 2T-1); (q + v) W_r R (B*H, T, 2T-1), gathered
//               at index j - i + T - 1 into (B*H, T, T).
//   shaw        Shaw et al. 2018 (arXiv 1803.02155), sec. 3, keys only (their a^K, not a^V):
//               score(i, j) = s q_i.(k_j + a_{clip(j-i)}), clip to [-shaw_left, +shaw_right], the
//               table a (`rel_key`, (shaw_left + shaw_right + 1, dh)) shared by all heads (as in the
//               paper). Shapes: q a^T (B*H, T, R) gathered at clip(j - i) + shaw_left into (B*H, T, T).
//               Meta's w2v-BERT re-implementations use 64 left / 8 right.
// Neither scheme builds a (T, T, dh) tensor; see relative_position.h.
#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "pointwise.h"

namespace workbench::conformer {

struct BlockOptions {
  TORCH_ARG(std::int64_t, d_model) = 144;
  TORCH_ARG(std::int64_t, ffn_dim) = 576;
  TORCH_ARG(std::int64_t, heads) = 4;
  TORCH_ARG(std::int64_t, kernel_size) = 31;   ///< depthwise convolution, odd
  TORCH_ARG(std::string, conv_norm) = "batch"; ///< batch | group | layer
  TORCH_ARG(std::int64_t, conv_norm_groups) = 8;  ///< for group norm
  TORCH_ARG(double, batch_norm_momentum) = 0.1;   ///< for batch norm: weight of each batch in the running statistics
  TORCH_ARG(double, dropout) = 0.1;
  /// Where the Linear layers run (pointwise.h).
  TORCH_ARG(LinearBackend, linear_backend) = LinearBackend::Auto;
  TORCH_ARG(std::string, position) = "none";  ///< none | relative_xl | shaw (see the top of this file)
  TORCH_ARG(std::int64_t, shaw_left) = 64;    ///< shaw: distances clipped to [-shaw_left, shaw_right]
  TORCH_ARG(std::int64_t, shaw_right) = 8;
};

enum class Position { None, RelativeXL, Shaw };
/// Throws std::invalid_argument for a name other than none, relative_xl or shaw.
Position parse_position(const std::string& name);

/// What relative attention needs of a batch's length T, shared by all blocks of one forward (it
/// depends only on T and the options), so it is built once per batch. Empty for Position::None.
struct RelativePositions {
  torch::Tensor index;      ///< (T, T) int64: the column of the (B*H, T, R) products that (i, j) uses
  torch::Tensor sinusoids;  ///< relative_xl: (2T - 1, D) R_{i-j}, row r for i - j = T - 1 - r
};

/// Macaron feed-forward module: LayerNorm, Linear(D, ffn), Swish, dropout, Linear(ffn, D), dropout.
struct FeedForwardImpl : torch::nn::Module {
  explicit FeedForwardImpl(const BlockOptions& o);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear up{nullptr}, down{nullptr};
  double dropout;
  LinearBackend linear;
};
TORCH_MODULE(FeedForward);

/// Multi-head self-attention with a pre-LayerNorm, fused QKV projection, key padding mask and the
/// position scheme of BlockOptions::position (see the top of this file).
struct SelfAttentionImpl : torch::nn::Module {
  explicit SelfAttentionImpl(const BlockOptions& o);
  /// `bias`: (B*H, 1, T) additive key mask, 0 at valid frames and a large negative value at padding.
  /// `rel`: relative_positions(T, ...) for relative schemes; ignored (may be empty) for none.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias, const RelativePositions& rel = {});
  /// The inputs `rel` of forward for sequences of length T.
  RelativePositions relative_positions(std::int64_t T, const torch::TensorOptions& options) const;
  /// The unscaled positional score term, (B*H, T, T): (q_i + v).W_r R_{i-j} for relative_xl,
  /// q_i.a_{clip(j-i)} for shaw. `q` is (B*H, T, dh), heads fastest within each batch row.
  torch::Tensor position_scores(const torch::Tensor& q, const RelativePositions& rel);
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear qkv{nullptr}, out{nullptr};
  torch::nn::Linear pos_proj{nullptr};     ///< relative_xl: W_r
  torch::Tensor pos_bias_u, pos_bias_v;    ///< relative_xl: (H, dh)
  torch::Tensor rel_key;                   ///< shaw: (shaw_left + shaw_right + 1, dh)
  Position position;
  std::int64_t heads, d_model, shaw_left, shaw_right;
  double dropout;
  LinearBackend linear;
};
TORCH_MODULE(SelfAttention);

/// Convolution module: LayerNorm, pointwise (D -> 2D), GLU, depthwise (kernel k), norm, Swish,
/// pointwise (D -> D), dropout. Pointwise convolutions are Linear layers on (B, T, D): the same maths
/// without two transposes.
struct ConvModuleImpl : torch::nn::Module {
  explicit ConvModuleImpl(const BlockOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& pad);
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear pointwise_in{nullptr}, pointwise_out{nullptr};
  torch::nn::Conv1d depthwise{nullptr};
  torch::nn::BatchNorm1d batch_norm{nullptr};
  torch::nn::GroupNorm group_norm{nullptr};
  torch::nn::LayerNorm layer_norm{nullptr};
  double dropout;
  LinearBackend linear;
};
TORCH_MODULE(ConvModule);

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const BlockOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& pad, const torch::Tensor& bias,
                        const RelativePositions& rel = {});
  FeedForward ffn1{nullptr}, ffn2{nullptr};
  SelfAttention attention{nullptr};
  ConvModule conv{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};
};
TORCH_MODULE(Block);

}  // namespace workbench::conformer
