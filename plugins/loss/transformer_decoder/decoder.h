#pragma once
// A pre-LayerNorm Transformer decoder (Vaswani et al. 2017; pre-norm as fairseq's S2T
// --decoder-normalize-before) with cross-attention over an encoder's output and an incremental
// key/value cache: the speech translation head of SLAM (4 layers of 384) and mSLAM (6 layers of 512,
// dropout 0.3). LibTorch 1.13's TransformerDecoderLayer has neither pre-norm, batch-first nor a cache,
// hence this one.
#include <cstdint>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace workbench::transformer_decoder {

struct DecoderOptions {
  DecoderOptions(std::int64_t vocab, std::int64_t memory_dim) : vocab_(vocab), memory_dim_(memory_dim) {}
  TORCH_ARG(std::int64_t, vocab);       ///< output classes (and input embedding rows); id 0 is padding
  TORCH_ARG(std::int64_t, memory_dim);  ///< D of the encoder output it attends to
  TORCH_ARG(std::int64_t, dim) = 256;
  TORCH_ARG(std::int64_t, heads) = 4;
  TORCH_ARG(std::int64_t, ffn_dim) = 1024;
  TORCH_ARG(std::int64_t, layers) = 2;
  TORCH_ARG(double, dropout) = 0.1;  ///< on attention weights, sub-layer outputs and the embeddings
};

/// Multi-head scaled dot-product attention with separate query and key/value inputs.
struct AttentionImpl : torch::nn::Module {
  AttentionImpl(std::int64_t dim, std::int64_t heads, double dropout);
  /// (B, Lk, D) -> keys and values (B, H, Lk, D/H), for the cache.
  std::pair<torch::Tensor, torch::Tensor> keys_values(const torch::Tensor& x);
  /// query (B, Lq, D) over keys/values (B, H, Lk, D/H) -> (B, Lq, D). `key_padding` (B, Lk) bool, true
  /// at padding, may be undefined; `causal` hides key j > query i + offset (offset = Lk - Lq).
  torch::Tensor attend(const torch::Tensor& query, const torch::Tensor& k, const torch::Tensor& v,
                       const torch::Tensor& key_padding, bool causal);
  std::int64_t heads;
  double dropout;
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, out{nullptr};
};
TORCH_MODULE(Attention);

struct DecoderLayerImpl : torch::nn::Module {
  DecoderLayerImpl(std::int64_t dim, std::int64_t heads, std::int64_t ffn_dim, double dropout);
  torch::nn::LayerNorm self_norm{nullptr}, cross_norm{nullptr}, ffn_norm{nullptr};
  Attention self_attn{nullptr}, cross_attn{nullptr};
  torch::nn::Linear ffn_in{nullptr}, ffn_out{nullptr};
  double dropout;
};
TORCH_MODULE(DecoderLayer);

/// What incremental decoding keeps between steps, per layer: the self-attention keys/values of every
/// token so far, and the cross-attention keys/values of the memory (computed once).
struct DecoderCache {
  std::vector<torch::Tensor> self_k, self_v;    ///< each (B, H, t, D/H)
  std::vector<torch::Tensor> cross_k, cross_v;  ///< each (B, H, T, D/H)
  torch::Tensor memory_padding;                 ///< (B, T) bool, true at padding
  std::int64_t length = 0;                      ///< tokens consumed so far
  /// Keeps rows `index` (B') of every tensor, in that order: beam search's reordering.
  void select(const torch::Tensor& index);
};

struct TransformerDecoderImpl : torch::nn::Module {
  explicit TransformerDecoderImpl(const DecoderOptions& options);

  /// Teacher forcing: input tokens (B, L) int64 (the start symbol, then the target shifted right; 0 after
  /// each row's length) over memory (B, T, memory_dim) with valid lengths (B) -> logits (B, L, vocab).
  /// Position i sees tokens 0..i only, so padding after a row's length changes none of its logits.
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& memory, const torch::Tensor& memory_lengths);

  /// Starts incremental decoding over memory (B, T, memory_dim) and lengths (B).
  DecoderCache start(const torch::Tensor& memory, const torch::Tensor& memory_lengths);
  /// The next token's logits (B, vocab) after feeding `tokens` (B) int64 at position cache.length;
  /// appends to the cache. Equal to forward()'s logits at that position.
  torch::Tensor step(DecoderCache& cache, const torch::Tensor& tokens);

  DecoderOptions options;
  torch::nn::Embedding embed{nullptr};
  torch::nn::Linear memory_proj{nullptr};
  std::vector<DecoderLayer> layers;
  torch::nn::LayerNorm final_norm{nullptr};
  torch::nn::Linear out{nullptr};

 private:
  torch::Tensor embed_at(const torch::Tensor& tokens, std::int64_t offset);  // (B, L) -> (B, L, D)
  torch::Tensor ffn(DecoderLayer& layer, const torch::Tensor& x);
  torch::Tensor drop(const torch::Tensor& x);
};
TORCH_MODULE(TransformerDecoder);

}  // namespace workbench::transformer_decoder
