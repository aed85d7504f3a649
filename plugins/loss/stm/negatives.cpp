#include "negatives.h"

#include <limits>
#include <stdexcept>

#include <c10/util/StringUtil.h>

namespace workbench::stm {

torch::Tensor choose_partners(const torch::Tensor& tokens, const torch::Tensor& lengths, double negative_rate,
                              bool nearest_length) {
  if (!(negative_rate >= 0 && negative_rate <= 1))
    throw std::invalid_argument("choose_partners: negative_rate must be in [0, 1]");
  if (tokens.dim() != 2 || lengths.dim() != 1 || lengths.size(0) != tokens.size(0))
    throw std::invalid_argument(c10::str("choose_partners: tokens must be (B, L) and lengths (B); got ", tokens.sizes(),
                                         " and ", lengths.sizes()));
  const auto B = tokens.size(0), L = tokens.size(1);
  const auto device = tokens.device();
  if (B == 0) return torch::empty({0}, torch::TensorOptions().dtype(torch::kLong).device(device));
  const auto floats = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  auto len = lengths.to(device, torch::kLong).clamp(0, L);
  auto rows = torch::arange(B, len.options());
  // Rows with the same valid ids: padding is set to -1 on both sides, and the lengths must agree.
  auto valid = torch::arange(L, len.options()).unsqueeze(0) < len.unsqueeze(1);  // (B, L)
  auto ids = torch::where(valid, tokens.to(torch::kLong), torch::full({}, -1, len.options()));
  auto same = (ids.unsqueeze(1) == ids.unsqueeze(0)).all(2) & (len.unsqueeze(1) == len.unsqueeze(0));  // (B, B)
  auto candidate = ~same;
  if (nearest_length) {
    const float inf = std::numeric_limits<float>::infinity();
    auto distance = (len.unsqueeze(1) - len.unsqueeze(0)).abs().to(torch::kFloat32).masked_fill(same, inf);
    auto nearest = std::get<0>(distance.min(1, /*keepdim=*/true));
    candidate = candidate & (distance == nearest);
  }
  // Uniformly among the candidates: the one with the highest of independent uniform keys.
  auto keys = torch::rand({B, B}, floats).masked_fill(~candidate, -1.0);
  auto drawn = std::get<1>(keys.max(1));
  auto negative = (torch::rand({B}, floats) < negative_rate) & candidate.any(1);
  return torch::where(negative, drawn, rows);
}

}  // namespace workbench::stm
