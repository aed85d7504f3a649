#include "quantizer.h"

#include <stdexcept>

#include <torch/nn/functional/activation.h>

namespace workbench::w2v_bert {

QuantizerImpl::QuantizerImpl(std::int64_t input_dim, std::int64_t g, std::int64_t v, std::int64_t code_dim)
    : groups(g), entries(v) {
  if (g < 1 || v < 2) throw std::invalid_argument("the quantizer needs at least 1 codebook of 2 entries");
  if (code_dim % g != 0) throw std::invalid_argument("code_dim must be divisible by the number of codebooks");
  logits = register_module("logits", torch::nn::Linear(input_dim, g * v));
  // wav2vec 2.0's initialisation: large random logits make the first codes a deterministic random
  // projection of the features, spread over many entries. Small logits would make the Gumbel samples
  // pure noise, and the contrastive task unlearnable, until the weights grew.
  {
    torch::NoGradGuard no_grad;
    logits->weight.normal_(0.0, 1.0);
    logits->bias.zero_();
  }
  // Gaussian entries are nearly orthogonal. wav2vec 2.0's uniform [0, 1) entries all point into one
  // orthant (cosine about 0.75 between any two), which left InfoNCE flat at log(K + 1) for hundreds of
  // steps in a tiny model: every distractor scored like the target.
  codebook = register_parameter("codebook", torch::randn({g, v, code_dim / g}));
}

std::pair<torch::Tensor, torch::Tensor> QuantizerImpl::perplexity_and_diversity(const torch::Tensor& probs) {
  auto avg = probs.mean(0);                                                        // (G, V)
  auto perplexity = torch::exp(-(avg * torch::log(avg + 1e-7)).sum(-1)).sum();      // sum over G
  const double gv = static_cast<double>(probs.size(1) * probs.size(2));
  return {perplexity, (gv - perplexity) / gv};
}

QuantizerOutput QuantizerImpl::forward(const torch::Tensor& x, const torch::Tensor& valid, double temperature) {
  const auto B = x.size(0), T = x.size(1);
  auto z = logits(x).view({B, T, groups, entries});
  QuantizerOutput out;
  out.codes = z.detach().argmax(-1);
  auto probs = torch::softmax(z.to(torch::kFloat32), -1);
  auto [perplexity, diversity] = perplexity_and_diversity(probs.index({valid}));  // (N, G, V) over valid frames
  out.perplexity = perplexity;
  out.diversity = diversity;
  {
    // The same measure over the argmax codes: low when a few entries win everywhere, even while the soft
    // average still looks uniform.
    torch::NoGradGuard no_grad;
    auto hard = torch::one_hot(out.codes.index({valid}), entries).to(torch::kFloat32);  // (N, G, V)
    out.usage_perplexity = perplexity_and_diversity(hard).first;
  }
  torch::Tensor onehot;
  if (is_training()) {
    // Hard Gumbel softmax, straight-through: one-hot forward, soft gradient backward.
    onehot = torch::nn::functional::gumbel_softmax(
        z, torch::nn::functional::GumbelSoftmaxFuncOptions().tau(temperature).hard(true).dim(-1));
    out.sampled_codes = onehot.detach().argmax(-1);
  } else {
    onehot = torch::one_hot(out.codes, entries).to(x.dtype());
    out.sampled_codes = out.codes;
  }
  // (B, T, G, V) x (G, V, d) -> (B, T, G, d)
  auto q = torch::einsum("btgv,gvd->btgd", {onehot, codebook});
  out.quantized = q.reshape({B, T, -1});
  return out;
}

torch::Tensor QuantizerImpl::code_ids(const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  return logits(x).view({x.size(0), x.size(1), groups, entries}).argmax(-1);
}

}  // namespace workbench::w2v_bert
