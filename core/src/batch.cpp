#include "workbench/batch.h"

#include "workbench/encoder.h"

namespace workbench {

Batch Batch::to(const torch::Device& device) const {
  Batch out = *this;
  auto move = [&](torch::Tensor& t) {
    if (t.defined()) t = t.to(device, /*non_blocking=*/true);
  };
  move(out.features);
  move(out.feature_lengths);
  move(out.tokens);
  move(out.token_lengths);
  return out;
}

torch::Tensor padding_mask(const torch::Tensor& lengths, std::int64_t max_length) {
  auto positions = torch::arange(max_length, lengths.options()).unsqueeze(0);
  return positions >= lengths.unsqueeze(1);
}

torch::Tensor masked_mean(const torch::Tensor& x, const torch::Tensor& lengths) {
  auto valid = (~padding_mask(lengths, x.size(1))).unsqueeze(-1).to(x.dtype());
  return (x * valid).sum(1) / valid.sum(1).clamp_min(1.0);
}

}  // namespace workbench
