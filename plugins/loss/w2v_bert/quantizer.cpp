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
  return perplexity_and_diversity_of_average(probs.mean(0));
}

std::pair<torch::Tensor, torch::Tensor> QuantizerImpl::perplexity_and_diversity_of_average(const torch::Tensor& avg) {
  auto perplexity = torch::exp(-(avg * torch::log(avg + 1e-7)).sum(-1)).sum();      // sum over G
  const double gv = static_cast<double>(avg.size(0) * avg.size(1));
  return {perplexity, (gv - perplexity) / gv};
}

QuantizerOutput QuantizerImpl::forward(const torch::Tensor& x, const torch::Tensor& valid, double temperature) {
  const auto B = x.size(0), T = x.size(1);
  auto z = logits(x).view({B, T, groups, entries});
  QuantizerOutput out;
  out.codes = z.detach().argmax(-1);
  auto probs = torch::softmax(z.to(torch::kFloat32), -1);
  // Averages over the valid frames by weights rather than a boolean index, whose size would be read back
  // from the device.
  auto w = valid.to(torch::kFloat32).view({B, T, 1, 1});
  auto n = w.sum().clamp_min(1.0);
  auto [perplexity, diversity] = perplexity_and_diversity_of_average((probs * w).sum(torch::IntArrayRef{0, 1}) / n);
  out.perplexity = perplexity;
  out.diversity = diversity;
  {
    // The same measure over the argmax codes: low when a few entries win everywhere, even while the soft
    // average still looks uniform. Counted by scatter_add (one_hot checks its range on the host).
    torch::NoGradGuard no_grad;
    auto index = out.codes.view({B * T, groups}).t();  // (G, B T)
    auto weight = valid.to(torch::kFloat32).reshape({1, B * T}).expand({groups, B * T});
    auto counts = torch::zeros({groups, entries}, probs.options()).scatter_add_(1, index, weight);
    out.usage_perplexity = perplexity_and_diversity_of_average(counts / n).first;
  }
  torch::Tensor onehot;
  if (is_training()) {
    // Hard Gumbel softmax, straight-through: one-hot forward, soft gradient backward.
    onehot = torch::nn::functional::gumbel_softmax(
        z, torch::nn::functional::GumbelSoftmaxFuncOptions().tau(temperature).hard(true).dim(-1));
    out.sampled_codes = onehot.detach().argmax(-1);
  } else {
    onehot = torch::zeros({B, T, groups, entries}, x.options()).scatter_(-1, out.codes.unsqueeze(-1), 1.0);
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
