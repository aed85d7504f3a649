#pragma once
// TLM's masking of the speech side, kept apart from the plugin so that tests can check it directly.
// Compiled into the tlm plugin (and into test_tlm).
#include <cstdint>

#include <torch/types.h>

// Hidden, so that no other library ever binds to this copy.
#pragma GCC visibility push(hidden)
namespace workbench::tlm {

struct FrameMasking {
  torch::Tensor inputs;  ///< (B, T, D) float: the features, with masked frames replaced by random vectors
  torch::Tensor mask;    ///< (B, T) bool: true at masked frames, never at padding
};

/// Masks subsampled speech features (the speech encoder's embed() output) for TLM.
///
/// Spans of `span` frames start at each valid frame with the probability that gives `coverage` of the
/// frames on average (workbench::start_prob_for_coverage; SLAM section 3.3 masks about 75% of the speech
/// in TLM, against about 50% in w2v-BERT). Spans are cut at the end of each row, so rows only a few spans
/// long are covered a little less. Masked frames are replaced by N(0, s^2) vectors, s = the standard
/// deviation of all valid feature values, detached (w2v-BERT section 3.2 uses random vectors; the scale
/// puts them in the range of real frames, and detaching keeps the noise from being a path for gradients).
///
/// `features` (B, T, D) float, `lengths` (B) int64 valid frames per row, on the same device. The mask
/// and the noise are drawn on that device, from torch's generator for it (which checkpoints keep).
/// Throws std::invalid_argument for coverage outside [0, 1) or span < 1.
FrameMasking mask_frames_with_noise(const torch::Tensor& features, const torch::Tensor& lengths, double coverage,
                                    std::int64_t span);

}  // namespace workbench::tlm
#pragma GCC visibility pop
