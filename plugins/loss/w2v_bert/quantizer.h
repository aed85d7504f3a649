#pragma once
// Gumbel-softmax product quantizer (wav2vec 2.0, Baevski et al. 2020, section 2 and 3.2; used unchanged
// by w2v-BERT, Chung et al. 2021, section 3.1): G codebooks of V entries; a Linear maps each frame to
// G x V logits; training picks one entry per codebook with a straight-through hard Gumbel softmax at
// temperature tau, evaluation takes the argmax. The chosen entries (each code_dim / G wide) are
// concatenated into the quantized vector.
#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace workbench::w2v_bert {

struct QuantizerOutput {
  torch::Tensor quantized;  ///< (B, T, code_dim)
  torch::Tensor codes;      ///< (B, T, G) int64, the argmax of the logits (detached): noise-free
  /// (B, T, G) int64, the entries the quantized vectors were built from (detached): the Gumbel sample in
  /// training, the argmax in evaluation. What the contrastive loss's targets are made of.
  torch::Tensor sampled_codes;
  /// Perplexity of the average soft code distribution over valid frames, summed over codebooks
  /// (wav2vec 2.0 eq. 4): G * V when every entry is used equally, G when one entry takes everything.
  torch::Tensor perplexity;
  /// The perplexity of the argmax codes' frequencies (detached): how many entries are really in use.
  torch::Tensor usage_perplexity;
  /// Diversity loss (wav2vec 2.0 eq. 4): (G V - perplexity) / (G V); 0 for uniform use, near 1 for collapse.
  torch::Tensor diversity;
};

struct QuantizerImpl : torch::nn::Module {
  /// `input_dim` Ds of the features; `code_dim` width of a quantized vector (divisible by `groups`).
  QuantizerImpl(std::int64_t input_dim, std::int64_t groups, std::int64_t entries, std::int64_t code_dim);
  /// `x` (B, T, Ds); `valid` (B, T) bool marks the frames that count for the perplexity.
  QuantizerOutput forward(const torch::Tensor& x, const torch::Tensor& valid, double temperature);
  /// (B, T, G) int64 code ids, without gradients.
  torch::Tensor code_ids(const torch::Tensor& x);
  /// Perplexity and diversity of code probabilities `probs` (N, G, V) averaged over N.
  static std::pair<torch::Tensor, torch::Tensor> perplexity_and_diversity(const torch::Tensor& probs);
  /// The same of an average distribution `average` (G, V) (each row sums to 1, or is all 0 when no frame
  /// is valid).
  static std::pair<torch::Tensor, torch::Tensor> perplexity_and_diversity_of_average(const torch::Tensor& average);

  torch::nn::Linear logits{nullptr};
  torch::Tensor codebook;  ///< (G, V, code_dim / G)
  std::int64_t groups, entries;
};
TORCH_MODULE(Quantizer);

}  // namespace workbench::w2v_bert
