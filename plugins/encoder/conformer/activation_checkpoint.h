#pragma once
// Activation checkpointing (Chen et al. 2016, "Training deep nets with sublinear memory cost"), one
// Conformer block at a time: the forward pass keeps only the block's input, and the backward pass runs
// the block again to get the activations it needs. LibTorch 1.13's C++ API has no torch.utils.checkpoint.
#include <functional>

#include <torch/nn/module.h>
#include <torch/types.h>

namespace workbench::conformer {

/// Returns block(x) computed so that autograd keeps only `x` (B, T, D) of it: in the backward pass
/// block(x) is computed again, with the random generator of x's device reset to its state at the first
/// call (so dropout draws the same masks) and every buffer of `owner` (batch norm's running statistics)
/// put back after the second call, so that the gradients, the buffers and the random stream afterwards
/// are those of a plain block(x). `block` must capture what it needs by value: it is called again after
/// the caller has returned. Falls back to a plain block(x) when gradients are off or x needs none (a
/// frozen frontend's output: the checkpoint would have no gradient to pass to the block's parameters).
torch::Tensor checkpointed(const std::function<torch::Tensor(const torch::Tensor&)>& block, const torch::Tensor& x,
                           torch::nn::Module& owner);

}  // namespace workbench::conformer
