#pragma once
// The contrastive task of wav2vec 2.0 (section 3.2, eq. 3) as w2v-BERT uses it (section 3.2): at each
// masked frame, pick the true quantized vector among K distractors drawn from other masked frames of
// the same utterance, by cosine similarity over a temperature kappa.
//
// Everything here works in the (B, T) frame layout and on the tensors' own device: off the CPU nothing is
// read back to the host and no boolean index packs the masked frames (its size would need a
// device-to-host copy), so the same code makes no synchronisation per step on CUDA.
#include <cstdint>

#include <torch/types.h>

namespace workbench::w2v_bert {

/// Distractors for every frame of `mask` (B, T) bool: at a masked frame, K frame indices into [0, T) of
/// other masked frames of the same row, uniformly with replacement; -1 at frames that are not masked and
/// at every frame of a row with fewer than two masked frames (nothing to draw from). Returns (B, T, K)
/// int64 on mask's device, drawn from torch's default generator there (the trainer checkpoints it, so a
/// resumed run draws what the uninterrupted one would). Throws std::invalid_argument for a mask that is
/// not 2-D or K < 1.
torch::Tensor sample_distractors(const torch::Tensor& mask, std::int64_t K);

struct ContrastiveOutput {
  /// scalar: mean cross-entropy over the usable frames: those with distractors, at least one of which
  /// differs from the target (so a collapsed codebook shows as few usable frames, not as a perfect score)
  torch::Tensor loss;
  torch::Tensor accuracy;  ///< scalar: share of those frames whose true vector scores highest
  torch::Tensor count;     ///< scalar: frames counted
  /// scalar: the accuracy of a uniform guess among each frame's target and its K draws that differ from
  /// it (a frame drawn twice counts twice); the baseline contrastive accuracy must beat (1 / (K + 1)
  /// when no draw has the target's codes)
  torch::Tensor chance;
};

/// InfoNCE. `context` and `targets` (B, T, Dq): the projected context vector and the quantized vector at
/// every frame; `target_codes` (B, T, G) int64: the codes each target was built from, so that equal codes
/// mean equal vectors; `distractors` (B, T, K) from sample_distractors. Only frames whose distractors are
/// all >= 0 count (so unmasked frames and padding do not). Logits are cos(c, q) / kappa; a distractor with
/// the target's own codes is set to -inf (it is not a negative), as in wav2vec 2.0.
///
/// The logits are read by a gather from one cosine matrix per utterance over its frames with distractors,
/// moved to the front: (B, R, R), R the most such frames in a row on the CPU, where reading R costs
/// nothing, and R = T on other devices, where it would wait on the device. No (M, K, Dq) tensor of
/// distractor vectors is made (at base, M about 2000, K 100, Dq 768, that tensor and its gradient were
/// 1.2 GB). Throws std::invalid_argument when the shapes disagree. Distractor indices must lie in [0, T)
/// or be -1 (others are an index error of the gather; on CUDA, a device-side assert); a drawn frame
/// without distractors of its own scores 0, as a zero vector would. `compact_on_cpu` = false keeps R = T on
/// the CPU too (tests check that both give the same values). Throws std::invalid_argument for K < 1 or
/// kappa <= 0.
ContrastiveOutput info_nce(const torch::Tensor& context, const torch::Tensor& targets, const torch::Tensor& target_codes,
                           const torch::Tensor& distractors, double kappa, bool compact_on_cpu = true);

}  // namespace workbench::w2v_bert
