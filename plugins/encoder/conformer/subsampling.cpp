#include "subsampling.h"

namespace workbench::conformer {

SubsamplingImpl::SubsamplingImpl(std::int64_t input_dim, std::int64_t channels, std::int64_t d_model) {
  conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, channels, 3).stride(2)));
  conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(channels, channels, 3).stride(2)));
  const std::int64_t freq = ((input_dim - 1) / 2 - 1) / 2;
  project = register_module("project", torch::nn::Linear(channels * freq, d_model));
}

torch::Tensor SubsamplingImpl::forward(const torch::Tensor& x) {
  auto h = torch::relu(conv1(x.unsqueeze(1)));  // (B, C, T/2, F/2)
  h = torch::relu(conv2(h));                    // (B, C, T', F')
  const auto B = h.size(0), C = h.size(1), T = h.size(2), Fq = h.size(3);
  return project(h.permute({0, 2, 1, 3}).reshape({B, T, C * Fq}));
}

torch::Tensor SubsamplingImpl::output_lengths(const torch::Tensor& lengths) {
  auto once = torch::div(lengths - 3, 2, "floor") + 1;
  return torch::clamp_min(torch::div(once - 3, 2, "floor") + 1, 0);
}

}  // namespace workbench::conformer
