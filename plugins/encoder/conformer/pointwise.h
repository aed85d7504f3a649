#pragma once
// The conformer's Linear layers (feed-forward, attention projections, the convolution module's pointwise
// layers) computed through oneDNN instead of the BLAS. LibTorch 1.13 sends torch::linear on the CPU to the
// system BLAS, whose OpenBLAS pool is separate from LibTorch's OpenMP threads: with one BLAS thread (the
// split that keeps the two pools from spinning against each other) every GEMM runs on one core. oneDNN's
// convolutions run on the OpenMP threads, and a Linear layer is a 1x1 convolution over a channels-last
// view of its input, with no copy. Measured in bench/README.md.
#include <string>

#include <torch/nn/modules/linear.h>
#include <torch/types.h>

namespace workbench::conformer {

enum class LinearBackend {
  Auto,    ///< OneDNN while LibTorch has more than one thread (at::get_num_threads), else Blas: with one
           ///< LibTorch thread and more BLAS threads (the small models' best split) the BLAS has more cores
  OneDnn,  ///< a 1x1 convolution through oneDNN, on LibTorch's OpenMP threads
  Blas,    ///< torch::linear, i.e. the BLAS's sgemm on its own pool
};

/// "auto", "onednn" or "blas"; throws std::invalid_argument for anything else.
LinearBackend parse_linear_backend(const std::string& name);

/// `layer`(x) for x (..., in_features): y (..., out_features). Through oneDNN as a 1x1 convolution (the
/// same maths, rounded differently: about 1e-6 relative) when the backend chooses it, the input is float32
/// on the CPU and LibTorch has oneDNN; otherwise layer->forward(x). Differentiable in x and in the layer's
/// weight and bias. An input whose last dimension is not in_features goes to layer->forward, which throws
/// c10::Error naming both sizes.
torch::Tensor pointwise(torch::nn::Linear layer, const torch::Tensor& x, LinearBackend backend);

}  // namespace workbench::conformer
