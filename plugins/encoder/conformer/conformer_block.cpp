#include "conformer_block.h"

#include <limits>
#include <stdexcept>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>

namespace workbench::conformer {

namespace F = torch::nn::functional;

namespace {
torch::Tensor drop(const torch::Tensor& x, double p, bool training) {
  if (!training || p <= 0) return x;
  return F::dropout(x, F::DropoutFuncOptions().p(p).training(true));
}
}  // namespace

FeedForwardImpl::FeedForwardImpl(const BlockOptions& o) : dropout(o.dropout()) {
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()})));
  up = register_module("up", torch::nn::Linear(o.d_model(), o.ffn_dim()));
  down = register_module("down", torch::nn::Linear(o.ffn_dim(), o.d_model()));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto h = torch::silu(up(norm(x)));
  h = drop(h, dropout, is_training());
  return drop(down(h), dropout, is_training());
}

SelfAttentionImpl::SelfAttentionImpl(const BlockOptions& o) : heads(o.heads()), dropout(o.dropout()) {
  if (o.d_model() % o.heads() != 0)
    throw std::invalid_argument("d_model (" + std::to_string(o.d_model()) + ") must be divisible by heads (" +
                                std::to_string(o.heads()) + ")");
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()})));
  qkv = register_module("qkv", torch::nn::Linear(o.d_model(), 3 * o.d_model()));
  out = register_module("out", torch::nn::Linear(o.d_model(), o.d_model()));
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias) {
  const auto B = x.size(0), T = x.size(1), D = x.size(2), dh = D / heads;
  // (B, T, 3, H, dh) -> three (B*H, T, dh)
  auto proj = qkv(norm(x)).view({B, T, 3, heads, dh}).permute({2, 0, 3, 1, 4}).reshape({3, B * heads, T, dh});
  auto q = proj[0], k = proj[1], v = proj[2];
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  // scores = bias + scale * q k^T in one call; bias (B*H, 1, T) broadcasts over queries.
  auto scores = torch::baddbmm(bias, q, k.transpose(1, 2), /*beta=*/1.0, /*alpha=*/scale);
  auto attn = torch::softmax(scores, -1);
  attn = drop(attn, dropout, is_training());
  auto ctx = torch::bmm(attn, v).view({B, heads, T, dh}).transpose(1, 2).reshape({B, T, D});
  return drop(out(ctx), dropout, is_training());
}

ConvModuleImpl::ConvModuleImpl(const BlockOptions& o) : dropout(o.dropout()) {
  if (o.kernel_size() % 2 == 0)
    throw std::invalid_argument("kernel_size must be odd (got " + std::to_string(o.kernel_size()) + ")");
  const auto D = o.d_model();
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({D})));
  pointwise_in = register_module("pointwise_in", torch::nn::Linear(D, 2 * D));
  depthwise = register_module(
      "depthwise",
      torch::nn::Conv1d(torch::nn::Conv1dOptions(D, D, o.kernel_size()).groups(D).padding(o.kernel_size() / 2)));
  if (o.conv_norm() == "batch") {
    batch_norm = register_module(
        "batch_norm", torch::nn::BatchNorm1d(torch::nn::BatchNormOptions(D).momentum(o.batch_norm_momentum())));
  } else if (o.conv_norm() == "group") {
    if (D % o.conv_norm_groups() != 0)
      throw std::invalid_argument("d_model must be divisible by conv_norm_groups");
    group_norm = register_module("group_norm", torch::nn::GroupNorm(o.conv_norm_groups(), D));
  } else if (o.conv_norm() == "layer") {
    layer_norm = register_module("layer_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({D})));
  } else {
    throw std::invalid_argument("conv_norm must be batch, group or layer (got '" + o.conv_norm() + "')");
  }
  pointwise_out = register_module("pointwise_out", torch::nn::Linear(D, D));
}

torch::Tensor ConvModuleImpl::forward(const torch::Tensor& x, const torch::Tensor& pad) {
  auto h = torch::glu(pointwise_in(norm(x)), -1);              // (B, T, D)
  h = h.masked_fill(pad.unsqueeze(-1), 0.0);                   // padding must not leak into the kernel
  h = depthwise(h.transpose(1, 2));                            // (B, D, T)
  if (batch_norm) {
    h = batch_norm(h).transpose(1, 2);
  } else if (group_norm) {
    h = group_norm(h).transpose(1, 2);
  } else {
    h = layer_norm(h.transpose(1, 2));
  }
  h = torch::silu(h);
  return drop(pointwise_out(h), dropout, is_training());
}

BlockImpl::BlockImpl(const BlockOptions& o) : dropout(o.dropout()) {
  ffn1 = register_module("ffn1", FeedForward(o));
  attention = register_module("attention", SelfAttention(o));
  conv = register_module("conv", ConvModule(o));
  ffn2 = register_module("ffn2", FeedForward(o));
  final_norm = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()})));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& pad, const torch::Tensor& bias) {
  auto h = x + 0.5 * ffn1(x);
  h = h + attention(h, bias);
  h = h + conv(h, pad);
  h = h + 0.5 * ffn2(h);
  return final_norm(h);
}

}  // namespace workbench::conformer
