#include "contrastive.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>

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

std::vector<std::int64_t> masked_per_row(const torch::Tensor& mask) {
  auto counts = mask.to(torch::kCPU).sum(1).to(torch::kInt64).contiguous();
  const auto* c = counts.data_ptr<std::int64_t>();
  return std::vector<std::int64_t>(c, c + counts.numel());
}

ContrastiveOutput info_nce(const torch::Tensor& context, const torch::Tensor& targets, const torch::Tensor& distractors,
                           double kappa, const std::vector<std::int64_t>& rows) {
  namespace F = torch::nn::functional;
  const std::int64_t M = context.size(0), K = distractors.size(1);
  std::vector<std::int64_t> blocks = rows.empty() ? std::vector<std::int64_t>{M} : rows;
  std::int64_t total = 0, N = 0;
  for (auto n : blocks) total += n, N = std::max(N, n);
  if (total != M)
    throw std::invalid_argument("info_nce: the row sizes sum to " + std::to_string(total) + ", not to the " +
                                std::to_string(M) + " frames");
  // Each frame's block, its place in the block, and its distractors' places in the same block: built on
  // the CPU, where the distractors were drawn, and moved in one copy each.
  auto cpu_idx = distractors.to(torch::kCPU).contiguous();
  auto block_of = torch::empty({M}, torch::kInt64), place = torch::empty({M}, torch::kInt64);
  auto local = torch::empty({M, K}, torch::kInt64);
  {
    auto* bo = block_of.data_ptr<std::int64_t>();
    auto* pl = place.data_ptr<std::int64_t>();
    auto* lo = local.data_ptr<std::int64_t>();
    const auto* id = cpu_idx.data_ptr<std::int64_t>();
    std::int64_t m = 0, start = 0;
    for (std::size_t r = 0; r < blocks.size(); ++r) {
      for (std::int64_t i = 0; i < blocks[r]; ++i, ++m) {
        bo[m] = static_cast<std::int64_t>(r);
        pl[m] = i;
        // -1 (no distractor) reads place 0 and is masked out below.
        for (std::int64_t k = 0; k < K; ++k) {
          const std::int64_t j = id[m * K + k];
          if (j >= 0 && (j < start || j >= start + blocks[r]))
            throw std::invalid_argument("info_nce: frame " + std::to_string(m) + "'s distractor " + std::to_string(j) +
                                        " lies outside its row's frames [" + std::to_string(start) + ", " +
                                        std::to_string(start + blocks[r]) + ")");
          lo[m * K + k] = j < 0 ? 0 : j - start;
        }
      }
      start += blocks[r];
    }
  }
  const auto device = context.device();
  auto idx = cpu_idx.to(device);
  block_of = block_of.to(device), place = place.to(device), local = local.to(device);

  auto c = F::normalize(context, F::NormalizeFuncOptions().dim(-1).eps(1e-6));
  auto q = F::normalize(targets, F::NormalizeFuncOptions().dim(-1).eps(1e-6));
  const auto R = static_cast<std::int64_t>(blocks.size()), D = c.size(1);
  auto c_blocks = torch::zeros({R, N, D}, c.options()).index_put({block_of, place}, c);
  auto q_blocks = torch::zeros({R, N, D}, q.options()).index_put({block_of, place}, q);
  auto cosines = torch::bmm(c_blocks, q_blocks.transpose(1, 2)) / kappa;  // (R, N, N)
  auto positive = cosines.index({block_of, place, place}).unsqueeze(1);    // (M, 1)
  auto negative = cosines.index({block_of.unsqueeze(1), place.unsqueeze(1), local});  // (M, K)
  auto logits = torch::cat({positive, negative}, 1);                                  // (M, K+1)

  // A distractor identical to the true vector (the same code picked twice) cannot be told apart. Equal
  // vectors get equal ids, so the test is (M, K) integers rather than (M, K, Dq) floats.
  torch::Tensor same;
  if (M > 0) {
    // nan_to_num: unique_dim sorts the rows, and NaN has no order (the loss is NaN then anyway, and the
    // trainer skips the step).
    auto ids = std::get<1>(torch::unique_dim(torch::nan_to_num(q.detach()), 0, /*sorted=*/true, /*return_inverse=*/true));
    same = ids.index({idx.clamp_min(0)}).eq(ids.unsqueeze(1));  // (M, K)
  } else {
    same = torch::zeros({0, K}, torch::TensorOptions().dtype(torch::kBool).device(device));
  }
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
