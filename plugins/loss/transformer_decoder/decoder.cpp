#include "decoder.h"

#include <cmath>
#include <stdexcept>

#include <torch/nn/functional/activation.h>
#include <torch/nn/functional/dropout.h>

#include "workbench/encoder.h"
#include "workbench/text_embedding.h"

namespace workbench::transformer_decoder {

namespace F = torch::nn::functional;

AttentionImpl::AttentionImpl(std::int64_t dim, std::int64_t heads_, double dropout_) : heads(heads_), dropout(dropout_) {
  if (dim % heads != 0) throw std::invalid_argument("decoder: dim must be a multiple of heads");
  q = register_module("q", torch::nn::Linear(dim, dim));
  k = register_module("k", torch::nn::Linear(dim, dim));
  v = register_module("v", torch::nn::Linear(dim, dim));
  out = register_module("out", torch::nn::Linear(dim, dim));
}

namespace {
// (B, L, D) -> (B, H, L, D/H)
torch::Tensor split_heads(const torch::Tensor& x, std::int64_t heads) {
  return x.view({x.size(0), x.size(1), heads, x.size(2) / heads}).transpose(1, 2);
}
}  // namespace

std::pair<torch::Tensor, torch::Tensor> AttentionImpl::keys_values(const torch::Tensor& x) {
  return {split_heads(k(x), heads), split_heads(v(x), heads)};
}

torch::Tensor AttentionImpl::attend(const torch::Tensor& query, const torch::Tensor& keys, const torch::Tensor& values,
                                    const torch::Tensor& key_padding, bool causal) {
  const auto B = query.size(0), Lq = query.size(1), Lk = keys.size(2);
  auto qh = split_heads(q(query), heads);                                          // (B, H, Lq, dh)
  auto scores = torch::matmul(qh, keys.transpose(-2, -1)) / std::sqrt(static_cast<double>(qh.size(-1)));
  if (key_padding.defined()) scores = scores.masked_fill(key_padding.view({B, 1, 1, Lk}), -INFINITY);
  if (causal) {
    auto hidden = torch::ones({Lq, Lk}, torch::TensorOptions().dtype(torch::kBool).device(query.device()))
                      .triu(Lk - Lq + 1);
    scores = scores.masked_fill(hidden, -INFINITY);
  }
  auto weights = torch::softmax(scores, -1);
  if (is_training() && dropout > 0) weights = F::dropout(weights, F::DropoutFuncOptions().p(dropout).training(true));
  auto ctx = torch::matmul(weights, values).transpose(1, 2).reshape({B, Lq, -1});  // (B, Lq, D)
  return out(ctx);
}

DecoderLayerImpl::DecoderLayerImpl(std::int64_t dim, std::int64_t heads, std::int64_t ffn_dim, double dropout_)
    : dropout(dropout_) {
  self_norm = register_module("self_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  self_attn = register_module("self_attn", Attention(dim, heads, dropout));
  cross_norm = register_module("cross_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  cross_attn = register_module("cross_attn", Attention(dim, heads, dropout));
  ffn_norm = register_module("ffn_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  ffn_in = register_module("ffn_in", torch::nn::Linear(dim, ffn_dim));
  ffn_out = register_module("ffn_out", torch::nn::Linear(ffn_dim, dim));
}

void DecoderCache::select(const torch::Tensor& index) {
  for (auto* list : {&self_k, &self_v, &cross_k, &cross_v})
    for (auto& t : *list) t = t.index_select(0, index);
  memory_padding = memory_padding.index_select(0, index);
}

TransformerDecoderImpl::TransformerDecoderImpl(const DecoderOptions& o) : options(o) {
  if (o.vocab() < 2 || o.memory_dim() <= 0) throw std::invalid_argument("decoder: vocab >= 2 and memory_dim > 0");
  embed = register_module("embed", torch::nn::Embedding(torch::nn::EmbeddingOptions(o.vocab(), o.dim()).padding_idx(0)));
  memory_proj = register_module("memory_proj", torch::nn::Linear(o.memory_dim(), o.dim()));
  for (std::int64_t i = 0; i < o.layers(); ++i)
    layers.push_back(register_module("layer" + std::to_string(i), DecoderLayer(o.dim(), o.heads(), o.ffn_dim(), o.dropout())));
  final_norm = register_module("final_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.dim()})));
  out = register_module("out", torch::nn::Linear(o.dim(), o.vocab()));
}

torch::Tensor TransformerDecoderImpl::drop(const torch::Tensor& x) {
  if (!is_training() || options.dropout() <= 0) return x;
  return F::dropout(x, F::DropoutFuncOptions().p(options.dropout()).training(true));
}

torch::Tensor TransformerDecoderImpl::embed_at(const torch::Tensor& tokens, std::int64_t offset) {
  const auto L = tokens.size(1), D = options.dim();
  auto positions = sinusoidal_positions(offset + L, D).narrow(0, offset, L).to(embed->weight.device());
  return drop(embed(tokens) * std::sqrt(static_cast<double>(D)) + positions.unsqueeze(0));
}

torch::Tensor TransformerDecoderImpl::ffn(DecoderLayer& layer, const torch::Tensor& x) {
  return layer->ffn_out(drop(torch::relu(layer->ffn_in(layer->ffn_norm(x)))));
}

torch::Tensor TransformerDecoderImpl::forward(const torch::Tensor& tokens, const torch::Tensor& memory,
                                              const torch::Tensor& memory_lengths) {
  auto mem = memory_proj(memory);
  auto padding = padding_mask(memory_lengths, memory.size(1));
  auto x = embed_at(tokens, 0);
  for (auto& layer : layers) {
    auto h = layer->self_norm(x);
    auto [sk, sv] = layer->self_attn->keys_values(h);
    x = x + drop(layer->self_attn->attend(h, sk, sv, {}, /*causal=*/true));
    auto [ck, cv] = layer->cross_attn->keys_values(mem);
    x = x + drop(layer->cross_attn->attend(layer->cross_norm(x), ck, cv, padding, false));
    x = x + drop(ffn(layer, x));
  }
  return out(final_norm(x));
}

DecoderCache TransformerDecoderImpl::start(const torch::Tensor& memory, const torch::Tensor& memory_lengths) {
  DecoderCache c;
  auto mem = memory_proj(memory);
  c.memory_padding = padding_mask(memory_lengths, memory.size(1));
  for (auto& layer : layers) {
    auto [k, v] = layer->cross_attn->keys_values(mem);
    c.cross_k.push_back(k);
    c.cross_v.push_back(v);
    c.self_k.emplace_back();
    c.self_v.emplace_back();
  }
  return c;
}

torch::Tensor TransformerDecoderImpl::step(DecoderCache& c, const torch::Tensor& tokens) {
  auto x = embed_at(tokens.view({-1, 1}), c.length);  // (B, 1, D)
  for (std::size_t i = 0; i < layers.size(); ++i) {
    auto& layer = layers[i];
    auto h = layer->self_norm(x);
    auto [k, v] = layer->self_attn->keys_values(h);
    c.self_k[i] = c.self_k[i].defined() ? torch::cat({c.self_k[i], k}, 2) : k;
    c.self_v[i] = c.self_v[i].defined() ? torch::cat({c.self_v[i], v}, 2) : v;
    // One query over every key so far: causal by construction.
    x = x + drop(layer->self_attn->attend(h, c.self_k[i], c.self_v[i], {}, false));
    x = x + drop(layer->cross_attn->attend(layer->cross_norm(x), c.cross_k[i], c.cross_v[i], c.memory_padding, false));
    x = x + drop(ffn(layer, x));
  }
  ++c.length;
  return out(final_norm(x)).squeeze(1);
}

}  // namespace workbench::transformer_decoder
