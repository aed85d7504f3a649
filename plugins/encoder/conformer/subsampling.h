#pragma once
// Convolutional subsampling: two Conv2D layers, kernel 3, stride 2 each, ReLU after each, over
// (time, mel) — 4x fewer frames (10 ms -> 40 ms) — then a Linear into the model dimension.
// Source: Gulati et al. 2020 (Conformer), section 2; SLAM/mSLAM's feature encoder.
#include <cstdint>

#include <torch/nn/module.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

namespace workbench::conformer {

struct SubsamplingImpl : torch::nn::Module {
  /// `input_dim`: mel bins F; `channels`: Conv2D channels C; `d_model`: output D.
  SubsamplingImpl(std::int64_t input_dim, std::int64_t channels, std::int64_t d_model);
  /// (B, T, F) -> (B, T', D) with T' = ((T - 1) / 2 - 1) / 2 (integer division).
  torch::Tensor forward(const torch::Tensor& x);
  /// T' for T, elementwise on an int64 tensor.
  static torch::Tensor output_lengths(const torch::Tensor& lengths);
  /// Shortest input (frames) that yields one output frame.
  static constexpr std::int64_t kMinFrames = 7;

  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear project{nullptr};
};
TORCH_MODULE(Subsampling);

}  // namespace workbench::conformer
