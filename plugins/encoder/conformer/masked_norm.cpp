#include "masked_norm.h"

#include <torch/utils.h>

namespace workbench::conformer {

namespace {

// Without padding the masked statistics are the plain ones: the fused kernels are faster. The check reads
// the mask on the host, which is free on the CPU; on another device it would wait for the device at every
// norm, so there the masked form always runs (it gives the same statistics).
bool all_valid(const torch::Tensor& valid) {
  return valid.numel() == 0 || (valid.device().is_cpu() && valid.all().item<bool>());
}
}  // namespace

torch::Tensor masked_group_norm(const torch::Tensor& h, const torch::Tensor& valid, torch::nn::GroupNorm& norm) {
  if (all_valid(valid)) return norm(h);
  const auto B = h.size(0), D = h.size(1), T = h.size(2);
  const auto G = norm->options.num_groups();
  const double eps = norm->options.eps();
  auto m = valid.to(h.dtype()).view({B, 1, 1, T});                        // (B, 1, 1, T)
  auto x = h.view({B, G, D / G, T});
  auto count = (m.sum(torch::IntArrayRef{2, 3}, /*keepdim=*/true) * static_cast<double>(D / G)).clamp_min(1.0);  // (B, 1, 1, 1)
  auto mean = (x * m).sum(torch::IntArrayRef{2, 3}, true) / count;                          // (B, G, 1, 1)
  auto centred = (x - mean) * m;
  auto var = centred.pow(2).sum(torch::IntArrayRef{2, 3}, true) / count;
  auto y = (centred * torch::rsqrt(var + eps)).view({B, D, T});
  if (norm->options.affine()) y = y * norm->weight.view({1, D, 1}) + norm->bias.view({1, D, 1});
  return y * valid.to(h.dtype()).unsqueeze(1);
}

torch::Tensor masked_batch_norm(const torch::Tensor& h, const torch::Tensor& valid, torch::nn::BatchNorm1d& norm) {
  if (all_valid(valid)) return norm(h);
  const auto D = h.size(1);
  const auto& o = norm->options;
  auto m = valid.to(h.dtype()).unsqueeze(1);  // (B, 1, T)
  torch::Tensor mean, var;
  if (norm->is_training() || !o.track_running_stats()) {
    auto n = m.sum().clamp_min(1.0);
    mean = (h * m).sum(torch::IntArrayRef{0, 2}) / n;                                      // (D)
    var = (((h - mean.view({1, D, 1})) * m).pow(2)).sum(torch::IntArrayRef{0, 2}) / n;     // biased, for normalising
    if (norm->is_training() && o.track_running_stats()) {
      torch::NoGradGuard no_grad;
      const double momentum = o.momentum().value_or(0.1);
      auto unbiased = var.detach() * (n / (n - 1.0).clamp_min(1.0));
      // Through .data(), as the fused kernel updates them: a forward of another objective in the same step
      // may have saved these tensors for its backward, and a visible in-place change would void that.
      norm->running_mean.data().mul_(1.0 - momentum).add_(mean.detach(), momentum);
      norm->running_var.data().mul_(1.0 - momentum).add_(unbiased, momentum);
      norm->num_batches_tracked.data().add_(1);
    }
  } else {
    mean = norm->running_mean;
    var = norm->running_var;
  }
  auto y = (h - mean.view({1, D, 1})) * torch::rsqrt(var.view({1, D, 1}) + o.eps());
  if (o.affine()) y = y * norm->weight.view({1, D, 1}) + norm->bias.view({1, D, 1});
  return y * m;
}

}  // namespace workbench::conformer
