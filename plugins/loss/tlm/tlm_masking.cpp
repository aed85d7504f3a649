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

}  // namespace workbench::tlm
