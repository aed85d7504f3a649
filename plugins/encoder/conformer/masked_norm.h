#pragma once
// Normalisation over valid frames only, for the conv module (issue: padding is data too). After the
// depthwise convolution a padded frame carries the bias and the kernel's edge terms, so statistics taken
// over every frame depend on how much padding a row has, and a valid frame's output with them.
//
// Shapes: h (B, D, T) as the depthwise convolution gives it; valid (B, T) bool, true at real frames.
// Padded frames come out as zeros.
#include <cstdint>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/normalization.h>
#include <torch/types.h>

namespace workbench::conformer {

/// GroupNorm (Wu & He 2018) whose per-(row, group) mean and variance run over the valid frames of the row.
/// Uses `norm`'s groups, eps, weight and bias.
torch::Tensor masked_group_norm(const torch::Tensor& h, const torch::Tensor& valid, torch::nn::GroupNorm& norm);

/// BatchNorm1d whose per-channel statistics run over the valid (row, frame) pairs of the batch. In
/// training it normalises by the biased batch variance and updates the running mean and the unbiased
/// running variance with `norm`'s momentum, from valid frames only (as PyTorch's BatchNorm does over all
/// of them); in evaluation it uses the running statistics.
torch::Tensor masked_batch_norm(const torch::Tensor& h, const torch::Tensor& valid, torch::nn::BatchNorm1d& norm);

}  // namespace workbench::conformer
