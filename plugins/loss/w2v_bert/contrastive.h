#pragma once
// The contrastive task of wav2vec 2.0 (section 3.2, eq. 3) as w2v-BERT uses it (section 3.2): at each
// masked frame, pick the true quantized vector among K distractors drawn from other masked frames of
// the same utterance, by cosine similarity over a temperature kappa.
#include <cstdint>
#include <random>
#include <vector>

#include <torch/types.h>

namespace workbench::w2v_bert {

/// For each of the M masked frames (row-major over `mask` (B, T) bool), K indices into that same list
/// of masked frames: other masked frames of the same row, drawn uniformly with replacement. Rows with a
/// single masked frame have none to draw from; their entries are -1. Returns (M, K) int64 on the CPU.
/// The standard deviation of `x` (B, T, D) over its valid frames (`valid` (B, T) bool) only, detached: the
/// scale of the random vectors that replace masked frames, which padding must not shrink. 1 when no frame
/// is valid.
torch::Tensor valid_std(const torch::Tensor& x, const torch::Tensor& valid);

torch::Tensor sample_distractors(const torch::Tensor& mask, std::int64_t K, std::mt19937_64& rng);

struct ContrastiveOutput {
  /// scalar: mean cross-entropy over the usable frames: those with distractors, at least one of which
  /// differs from the target (so a collapsed codebook shows as few usable frames, not as a perfect score)
  torch::Tensor loss;
  torch::Tensor accuracy;  ///< scalar: share of those frames whose true vector scores highest
  torch::Tensor count;     ///< scalar: frames counted
  /// scalar: the accuracy of a uniform guess among each frame's target and its distinct distractors; the
  /// baseline contrastive accuracy must beat (1 / (K + 1) only when every distractor is distinct)
  torch::Tensor chance;
};

/// Masked frames per row of `mask` (B, T) bool: the block sizes sample_distractors draws within, in row
/// order (they sum to M). Reads the mask on the CPU, as sample_distractors does.
std::vector<std::int64_t> masked_per_row(const torch::Tensor& mask);

/// InfoNCE. `context` and `targets` (M, Dq): the projected context vector and the quantized vector at
/// each masked frame; `distractors` (M, K) from sample_distractors. Logits are cos(c, q) / kappa; a
/// distractor equal to the true vector is set to -inf (it is not a negative), as in wav2vec 2.0.
///
/// `rows` (masked_per_row) says that the M frames come in consecutive blocks of these sizes and that each
/// frame's distractors lie in its own block, as sample_distractors draws them. The logits are then read
/// from one (rows, N, N) cosine matrix per block (N the largest block) by a gather, and no (M, K, Dq)
/// tensor of distractor vectors is made: at base (M about 2000, K 100, Dq 768) that tensor and its
/// gradient were 1.2 GB. Empty `rows`: one block of all M frames, for any indices.
/// Throws std::invalid_argument when `rows` does not sum to M, or a distractor lies outside its frame's block.
ContrastiveOutput info_nce(const torch::Tensor& context, const torch::Tensor& targets, const torch::Tensor& distractors,
                           double kappa, const std::vector<std::int64_t>& rows = {});

}  // namespace workbench::w2v_bert
