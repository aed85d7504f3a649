#include "workbench/masked_prediction.h"

#include <stdexcept>
#include <vector>

#include <c10/util/StringUtil.h>
#include <torch/nn/functional/loss.h>

namespace workbench {

MaskedPrediction masked_prediction(const torch::Tensor& logits, const torch::Tensor& targets,
                                   const torch::Tensor& counted) {
  if (logits.dim() < 1 || targets.sizes() != counted.sizes() ||
      logits.sizes().slice(0, logits.dim() - 1) != targets.sizes())
    throw std::invalid_argument(c10::str("masked_prediction: logits ", logits.sizes(), ", targets ", targets.sizes(),
                                         " and counted ", counted.sizes(), " must be (..., V), (...) and (...)"));
  const auto V = logits.size(-1);
  auto flat_counted = counted.reshape({-1}).to(torch::kBool);
  // Uncounted targets may be anything (padding ids): 0 keeps cross_entropy and scatter_add in range.
  auto flat_targets = torch::where(flat_counted, targets.reshape({-1}).to(torch::kLong),
                                   torch::zeros({}, targets.options().dtype(torch::kLong)));
  // Sums in float32 at least: half precision counts exactly only to 2048 (bfloat16 to 256).
  const auto sum_type = logits.scalar_type() == torch::kDouble ? torch::kDouble : torch::kFloat32;
  auto weights = flat_counted.to(sum_type);
  MaskedPrediction out;
  out.count = weights.sum();
  const auto denominator = out.count.clamp_min(1.0);
  namespace F = torch::nn::functional;
  // The logits of uncounted positions are zeroed before the softmax, not only their losses after it: the
  // softmax's backward multiplies by its output, so a NaN there would reach the gradient through a zero.
  auto flat_logits =
      torch::where(flat_counted.unsqueeze(-1), logits.reshape({-1, V}), torch::zeros({}, logits.options()));
  auto ce =
      F::cross_entropy(flat_logits, flat_targets, F::CrossEntropyFuncOptions().reduction(torch::kNone)).to(sum_type);
  out.loss = torch::where(flat_counted, ce, torch::zeros({}, ce.options())).sum() / denominator;
  auto right = (flat_logits.detach().argmax(-1) == flat_targets).to(weights.scalar_type());
  out.accuracy = (right * weights).sum() / denominator;
  // Counted by scatter_add: bincount on CUDA reads the largest id back to size its output.
  auto counts = torch::zeros({V}, weights.options()).scatter_add_(0, flat_targets, weights);
  out.majority_accuracy = counts.max() / denominator;
  return out;
}

torch::Tensor gather_positions(const torch::Tensor& x, const torch::Tensor& index) {
  if (index.dim() != 2 || x.dim() < 2 || x.size(0) != index.size(0))
    throw std::invalid_argument(c10::str("gather_positions: x ", x.sizes(), " and index ", index.sizes(),
                                         " must be (B, T, ...) and (B, K)"));
  std::vector<std::int64_t> shape(x.sizes().begin(), x.sizes().end());
  shape[1] = index.size(1);
  auto expanded = index.to(torch::kLong);
  for (std::int64_t d = 2; d < x.dim(); ++d) expanded = expanded.unsqueeze(-1);
  return x.gather(1, expanded.expand(shape));
}

}  // namespace workbench
