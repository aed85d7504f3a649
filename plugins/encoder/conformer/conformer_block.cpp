#include "conformer_block.h"

#include <cmath>
#include <limits>
#include <stdexcept>

#include <torch/nn/functional/activation.h>
#include "dropout.h"
#include "masked_norm.h"
#include "relative_position.h"

namespace workbench::conformer {

FeedForwardImpl::FeedForwardImpl(const BlockOptions& o) : dropout(o.dropout()), linear(o.linear_backend()) {
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()})));
  up = register_module("up", torch::nn::Linear(o.d_model(), o.ffn_dim()));
  down = register_module("down", torch::nn::Linear(o.ffn_dim(), o.d_model()));
}

torch::Tensor FeedForwardImpl::forward(const torch::Tensor& x) {
  auto h = torch::silu(pointwise(up, norm(x), linear));
  h = philox_dropout(h, dropout, is_training());
  return philox_dropout(pointwise(down, h, linear), dropout, is_training());
}

Position parse_position(const std::string& name) {
  if (name == "none") return Position::None;
  if (name == "relative_xl") return Position::RelativeXL;
  if (name == "shaw") return Position::Shaw;
  throw std::invalid_argument("position must be none, relative_xl or shaw (got '" + name + "')");
}

SelfAttentionImpl::SelfAttentionImpl(const BlockOptions& o)
    : position(parse_position(o.position())),
      heads(o.heads()),
      d_model(o.d_model()),
      shaw_left(o.shaw_left()),
      shaw_right(o.shaw_right()),
      dropout(o.dropout()),
      linear(o.linear_backend()) {
  if (o.d_model() % o.heads() != 0)
    throw std::invalid_argument("d_model (" + std::to_string(o.d_model()) + ") must be divisible by heads (" +
                                std::to_string(o.heads()) + ")");
  const auto dh = o.d_model() / o.heads();
  norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()})));
  qkv = register_module("qkv", torch::nn::Linear(o.d_model(), 3 * o.d_model()));
  out = register_module("out", torch::nn::Linear(o.d_model(), o.d_model()));
  // Positional parameters are registered only for the schemes that use them, so that "none" keeps the
  // parameter names (and checkpoints) it had before relative positions existed.
  if (position == Position::RelativeXL) {
    pos_proj = register_module("pos_proj",
                               torch::nn::Linear(torch::nn::LinearOptions(o.d_model(), o.d_model()).bias(false)));
    // N(0, 0.02): the initialisation of the Transformer-XL reference code (init_std).
    pos_bias_u = register_parameter("pos_bias_u", torch::randn({o.heads(), dh}) * 0.02);
    pos_bias_v = register_parameter("pos_bias_v", torch::randn({o.heads(), dh}) * 0.02);
  } else if (position == Position::Shaw) {
    if (o.shaw_left() < 0 || o.shaw_right() < 0)
      throw std::invalid_argument("shaw_left and shaw_right must be >= 0");
    rel_key = register_parameter("rel_key", torch::randn({o.shaw_left() + o.shaw_right() + 1, dh}) * 0.02);
  }
}

RelativePositions SelfAttentionImpl::relative_positions(std::int64_t T, const torch::TensorOptions& options) const {
  RelativePositions rel;
  if (position == Position::RelativeXL) {
    rel.index = relative_position_index(T, T - 1, T - 1, options.device());
    rel.sinusoids = relative_sinusoids(T, d_model, options);
  } else if (position == Position::Shaw) {
    rel.index = relative_position_index(T, shaw_left, shaw_right, options.device());
  }
  return rel;
}

torch::Tensor SelfAttentionImpl::position_scores(const torch::Tensor& q, const RelativePositions& rel) {
  const auto BH = q.size(0), T = q.size(1), dh = q.size(2);
  if (!rel.index.defined() || rel.index.size(0) != T)
    throw std::invalid_argument("relative attention needs relative_positions(T) for T = " + std::to_string(T));
  torch::Tensor per_distance;  // (B*H, T, R): every query against every distance's vector
  if (position == Position::RelativeXL) {
    const auto B = BH / heads, R = rel.sinusoids.size(0);
    auto p = pos_proj(rel.sinusoids).view({R, heads, dh}).permute({1, 2, 0});  // (H, dh, 2T-1)
    auto qv = q.view({B, heads, T, dh}) + pos_bias_v.view({1, heads, 1, dh});
    per_distance = torch::matmul(qv, p).view({BH, T, R});
  } else if (position == Position::Shaw) {
    per_distance = torch::matmul(q, rel_key.t());
  } else {
    throw std::logic_error("position_scores called without a relative position scheme");
  }
  return torch::gather(per_distance, 2, rel.index.unsqueeze(0).expand({BH, T, T}));
}

torch::Tensor SelfAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& bias,
                                         const RelativePositions& rel) {
  const auto B = x.size(0), T = x.size(1), D = x.size(2), dh = D / heads;
  // (B, T, 3, H, dh) -> three (B*H, T, dh)
  auto proj = pointwise(qkv, norm(x), linear).view({B, T, 3, heads, dh}).permute({2, 0, 3, 1, 4}).reshape({3, B * heads, T, dh});
  auto q = proj[0], k = proj[1], v = proj[2];
  const double scale = 1.0 / std::sqrt(static_cast<double>(dh));
  torch::Tensor scores;
  if (position == Position::None) {
    // scores = bias + scale * q k^T in one call; bias (B*H, 1, T) broadcasts over queries.
    scores = torch::baddbmm(bias, q, k.transpose(1, 2), /*beta=*/1.0, /*alpha=*/scale);
  } else {
    // The positional term is a fresh tensor, so the mask and scale go into it in place and the content
    // term is accumulated onto it by baddbmm: no extra (B*H, T, T) buffers.
    auto base = position_scores(q, rel).mul_(scale).add_(bias);
    auto q_content = q;
    if (position == Position::RelativeXL)
      q_content = (q.view({B, heads, T, dh}) + pos_bias_u.view({1, heads, 1, dh})).view({B * heads, T, dh});
    scores = torch::baddbmm(base, q_content, k.transpose(1, 2), /*beta=*/1.0, /*alpha=*/scale);
  }
  auto attn = torch::softmax(scores, -1);
  attn = philox_dropout(attn, dropout, is_training());
  auto ctx = torch::bmm(attn, v).view({B, heads, T, dh}).transpose(1, 2).reshape({B, T, D});
  return philox_dropout(pointwise(out, ctx, linear), dropout, is_training());
}

ConvModuleImpl::ConvModuleImpl(const BlockOptions& o) : dropout(o.dropout()), linear(o.linear_backend()) {
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
  auto h = torch::glu(pointwise(pointwise_in, norm(x), linear), -1);              // (B, T, D)
  h = h.masked_fill(pad.unsqueeze(-1), 0.0);                   // padding must not leak into the kernel
  h = depthwise(h.transpose(1, 2));                            // (B, D, T)
  // The kernel's edges and bias reach the padded frames: batch and group statistics run over the valid
  // frames only, so that a frame's output does not depend on how much padding its row has.
  if (batch_norm) {
    h = masked_batch_norm(h, ~pad, batch_norm).transpose(1, 2);
  } else if (group_norm) {
    h = masked_group_norm(h, ~pad, group_norm).transpose(1, 2);
  } else {
    h = layer_norm(h.transpose(1, 2));
  }
  h = torch::silu(h);
  return philox_dropout(pointwise(pointwise_out, h, linear), dropout, is_training());
}

BlockImpl::BlockImpl(const BlockOptions& o) {
  ffn1 = register_module("ffn1", FeedForward(o));
  attention = register_module("attention", SelfAttention(o));
  conv = register_module("conv", ConvModule(o));
  ffn2 = register_module("ffn2", FeedForward(o));
  final_norm = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.d_model()})));
}

torch::Tensor BlockImpl::forward(const torch::Tensor& x, const torch::Tensor& pad, const torch::Tensor& bias,
                                 const RelativePositions& rel) {
  auto h = x + 0.5 * ffn1(x);
  h = h + attention(h, bias, rel);
  h = h + conv(h, pad);
  h = h + 0.5 * ffn2(h);
  return final_norm(h);
}

}  // namespace workbench::conformer
