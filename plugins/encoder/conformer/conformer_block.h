#pragma once
// Conformer block (Gulati et al., 2020, "Conformer: Convolution-augmented Transformer for Speech
// Recognition", section 2 and figure 1):
//   x = x + 1/2 FFN(x);  x = x + MHSA(x);  x = x + Conv(x);  x = x + 1/2 FFN(x);  y = LayerNorm(x)
// All tensors are (B, T, D); `pad` is (B, T) bool, true at padded frames.
#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

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
};

/// Macaron feed-forward module: LayerNorm, Linear(D, ffn), Swish, dropout, Linear(ffn, D), dropout.
struct FeedForwardImpl : torch::nn::Module {
  explicit FeedForwardImpl(const BlockOptions& o);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear up{nullptr}, down{nullptr};
  double dropout;
};
TORCH_MODULE(FeedForward);

/// Multi-head self-attention with a pre-LayerNorm, fused QKV projection and key padding mask.
/// No positional encoding: the original w2v-BERT uses none (the conv module supplies relative position).
struct SelfAttentionImpl : torch::nn::Module {
  explicit SelfAttentionImpl(const BlockOptions& o);
  /// `bias`: (B, 1, T) additive key mask, 0 at valid frames and a large negative value at padding.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& bias);
  torch::nn::LayerNorm norm{nullptr};
  torch::nn::Linear qkv{nullptr}, out{nullptr};
  std::int64_t heads;
  double dropout;
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
};
TORCH_MODULE(ConvModule);

struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(const BlockOptions& o);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& pad, const torch::Tensor& bias);
  FeedForward ffn1{nullptr}, ffn2{nullptr};
  SelfAttention attention{nullptr};
  ConvModule conv{nullptr};
  torch::nn::LayerNorm final_norm{nullptr};
  double dropout;
};
TORCH_MODULE(Block);

}  // namespace workbench::conformer
