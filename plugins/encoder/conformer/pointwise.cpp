#include "pointwise.h"

#include <stdexcept>

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <torch/nn/functional/conv.h>

namespace workbench::conformer {

LinearBackend parse_linear_backend(const std::string& name) {
  if (name == "auto") return LinearBackend::Auto;
  if (name == "onednn") return LinearBackend::OneDnn;
  if (name == "blas") return LinearBackend::Blas;
  throw std::invalid_argument("linear_backend must be auto, onednn or blas (got '" + name + "')");
}

torch::Tensor pointwise(torch::nn::Linear layer, const torch::Tensor& x, LinearBackend backend) {
  const auto& w = layer->weight;
  const bool onednn = backend == LinearBackend::OneDnn || (backend == LinearBackend::Auto && at::get_num_threads() > 1);
  if (!onednn || !at::hasMKLDNN() || !x.is_cpu() || x.scalar_type() != torch::kFloat32 ||
      w.scalar_type() != torch::kFloat32 || x.dim() < 1 || x.numel() == 0 || x.size(-1) != w.size(1))
    return layer->forward(x);  // a wrong width included: torch::linear says what it expected
  const std::int64_t in = w.size(1), out = w.size(0), rows = x.numel() / in;
  // (rows, in) row-major is an NHWC image of one row, `rows` pixels high and `in` channels deep: the view
  // (1, in, rows, 1) with channels-last strides. The 1x1 convolution's output is channels-last as well, so
  // (1, out, rows, 1) -> (rows, out) is a view again.
  const auto image = x.contiguous().reshape({1, rows, 1, in}).permute({0, 3, 1, 2});
  const auto kernel = w.view({out, in, 1, 1});
  const auto y = torch::conv2d(image, kernel, layer->options.bias() ? layer->bias : torch::Tensor());
  auto sizes = x.sizes().vec();
  sizes.back() = out;
  return y.permute({0, 2, 3, 1}).reshape(sizes);
}

}  // namespace workbench::conformer
