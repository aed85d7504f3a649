#pragma once
// Dropout whose mask comes from a counter-based generator (Philox4x32-10; Salmon et al. 2011, "Parallel
// random numbers: as easy as 1, 2, 3", SC'11) instead of LibTorch's CPU bernoulli_, which draws one
// mt19937 number per element on one thread: at torchaudio's Conformer shape that was 11% of a CPU
// training step (bench/README.md). Each element's keep/drop bit is a function of (seed, its index) only,
// so the mask is the same for any thread count, the backward pass recomputes it instead of storing it
// (no mask tensor is kept for backward), and a seed is the only state. The seed is one 64-bit draw from
// LibTorch's default CPU generator, so torch::manual_seed, checkpointed RNG state and activation
// checkpointing's replay (activation_checkpoint.h) reproduce the masks exactly.
#include <array>
#include <cstdint>

#include <torch/types.h>

namespace workbench::conformer {

/// Inverted dropout of `x` (any shape): each element is zeroed with probability `p` and the rest are scaled
/// by 1 / (1 - p), so the expectation is unchanged. Identity when `training` is false or `p` is 0; all
/// zeros when `p` is 1. Float and double CPU tensors take the Philox path; other dtypes and devices fall
/// back to torch::dropout (CUDA's is already counter-based). Differentiable in `x`.
/// Throws std::invalid_argument if `p` is outside [0, 1].
torch::Tensor philox_dropout(const torch::Tensor& x, double p, bool training);

/// The raw generator, for tests against Random123's known-answer vectors: Philox4x32-10 of a 128-bit
/// counter under a 64-bit key, each as 32-bit words. Dropout uses counter (i / 4, 0, 0, 0) for element i,
/// under the key (seed low, seed high).
std::array<std::uint32_t, 4> philox4x32(const std::array<std::uint32_t, 4>& counter,
                                        const std::array<std::uint32_t, 2>& key);

}  // namespace workbench::conformer
