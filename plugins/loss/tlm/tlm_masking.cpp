#include "tlm_masking.h"

#include <stdexcept>
#include <string>

#include "workbench/encoder.h"
#include "workbench/masking.h"

namespace workbench::tlm {

FrameMasking mask_frames_with_noise(const torch::Tensor& features, const torch::Tensor& lengths, double coverage,
                                    std::int64_t span) {
  if (features.dim() != 3) throw std::invalid_argument("mask_frames_with_noise: features must be (B, T, D)");
  if (span < 1) throw std::invalid_argument("mask_frames_with_noise: span must be at least 1");
  const auto T = features.size(1);
  FrameMasking out;
  const auto on_device = lengths.to(features.device());
  out.mask = span_mask_frames(on_device, T, start_prob_for_coverage(coverage, span), span);
  auto noise = torch::randn_like(features.detach()) * valid_frame_std(features, ~padding_mask(on_device, T));
  out.inputs = torch::where(out.mask.unsqueeze(-1), noise, features);
  return out;
}

std::pair<torch::Tensor, torch::Tensor> select_positions(const torch::Tensor& x, const torch::Tensor& selected,
                                                         const torch::Tensor& targets) {
  auto lead = [](const torch::Tensor& t) { return std::to_string(t.size(0)) + " x " + std::to_string(t.size(1)); };
  if (selected.dim() != 2 || x.dim() < 2 || targets.dim() < 2 || x.size(0) != selected.size(0) ||
      x.size(1) != selected.size(1) || targets.size(0) != selected.size(0) || targets.size(1) != selected.size(1))
    throw std::invalid_argument("select_positions: inputs " + (x.dim() >= 2 ? lead(x) : std::string("?")) +
                                ", selection " + (selected.dim() >= 2 ? lead(selected) : std::string("?")) +
                                " and targets " + (targets.dim() >= 2 ? lead(targets) : std::string("?")) +
                                " must agree in (B, T)");
  auto sel = selected.to(torch::kBool);
  return {x.index({sel}), targets.index({sel})};
}

}  // namespace workbench::tlm
