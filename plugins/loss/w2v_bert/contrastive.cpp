#include "contrastive.h"

#include <limits>

#include <torch/utils.h>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>

namespace workbench::w2v_bert {

torch::Tensor valid_std(const torch::Tensor& x, const torch::Tensor& valid) {
  torch::NoGradGuard no_grad;
  auto frames = x.detach().index({valid});  // (N, D)
  if (frames.numel() < 2) return torch::ones({}, x.options());
  return frames.std();
}

torch::Tensor sample_distractors(const torch::Tensor& mask, std::int64_t K, std::mt19937_64& rng) {
  auto m = mask.to(torch::kCPU).contiguous();
  auto acc = m.accessor<bool, 2>();
  const auto B = m.size(0), T = m.size(1);
  std::vector<std::int64_t> row_start, row_count;  // per row: first index into the masked list, and count
  std::int64_t M = 0;
  for (std::int64_t b = 0; b < B; ++b) {
    row_start.push_back(M);
    std::int64_t n = 0;
    for (std::int64_t t = 0; t < T; ++t) n += acc[b][t];
    row_count.push_back(n);
    M += n;
  }
  auto out = torch::full({M, K}, -1, torch::kInt64);
  auto* o = out.data_ptr<std::int64_t>();
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t n = row_count[b];
    if (n < 2) continue;
    std::uniform_int_distribution<std::int64_t> pick(0, n - 2);
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t k = 0; k < K; ++k) {
        std::int64_t j = pick(rng);
        if (j >= i) ++j;  // skip the frame itself
        o[(row_start[b] + i) * K + k] = row_start[b] + j;
      }
  }
  return out;
}

ContrastiveOutput info_nce(const torch::Tensor& context, const torch::Tensor& targets, const torch::Tensor& distractors,
                           double kappa) {
  namespace F = torch::nn::functional;
  auto idx = distractors.to(context.device());
  auto c = F::normalize(context, F::NormalizeFuncOptions().dim(-1).eps(1e-6));
  auto q = F::normalize(targets, F::NormalizeFuncOptions().dim(-1).eps(1e-6));
  auto safe = idx.clamp_min(0);
  auto negatives = q.index({safe});                                            // (M, K, Dq)
  auto candidates = torch::cat({q.unsqueeze(1), negatives}, 1);               // (M, K+1, Dq)
  auto logits = torch::einsum("md,mkd->mk", {c, candidates}) / kappa;         // (M, K+1)
  // A distractor identical to the true vector (the same code picked twice) cannot be told apart.
  auto same = negatives.eq(q.unsqueeze(1)).all(-1);                          // (M, K)
  // A frame counts when it has distractors and at least one of them differs from its target: with a
  // collapsed codebook every distractor is the target, and "picking" it would be trivially right.
  auto usable = (idx >= 0).all(1) & (~same).any(1);  // (M)
  auto pad = torch::zeros({same.size(0), 1}, same.options());
  logits = logits.masked_fill(torch::cat({pad, same}, 1), -std::numeric_limits<float>::infinity());
  ContrastiveOutput out;
  auto weights = usable.to(logits.dtype());
  out.count = weights.sum();
  auto ce = F::cross_entropy(logits, torch::zeros({logits.size(0)}, torch::TensorOptions().dtype(torch::kLong).device(logits.device())),
                             F::CrossEntropyFuncOptions().reduction(torch::kNone));
  out.loss = (ce * weights).sum() / out.count.clamp_min(1.0);
  // Right only when the target scores strictly above every distractor: with tied scores (an encoder that
  // outputs zeros) argmax would return index 0, the target, and flatter the model.
  auto detached = logits.detach();
  auto best_other = detached.narrow(1, 1, detached.size(1) - 1).amax(1);
  auto correct = (detached.select(1, 0) > best_other).to(logits.dtype()) * weights;
  out.accuracy = correct.sum() / out.count.clamp_min(1.0);
  // What guessing uniformly among the target and its distinct distractors would score.
  auto distinct = 1.0 + (~same).sum(1).to(logits.dtype());
  out.chance = ((1.0 / distinct) * weights).sum() / out.count.clamp_min(1.0);
  return out;
}

}  // namespace workbench::w2v_bert
