#pragma once
// Masked prediction's statistics, shared by the losses that predict hidden tokens or codes (w2v-BERT's
// masked prediction, SpanBERT, TLM), computed as weighted sums over fixed shapes: no boolean index, whose
// size only the host can learn, so nothing is read back from the device.
#include <torch/types.h>

namespace workbench {

struct MaskedPrediction {
  torch::Tensor loss;               ///< () mean cross-entropy over the counted positions, in the graph; 0 when none count
  torch::Tensor accuracy;           ///< () share of the counted positions whose argmax is the target (detached)
  torch::Tensor majority_accuracy;  ///< () share of the counted positions holding their most frequent target (detached)
  torch::Tensor count;              ///< () float32 (float64 for double logits): positions counted
};

/// Cross-entropy, accuracy and the most-frequent-target baseline of `logits` (..., V) against `targets`
/// (...) integer (in [0, V) where counted) over the positions where `counted` (...) bool is true; the
/// three share their leading shape and device. The loss is BERT's masked-LM objective (Devlin et al. 2019,
/// section 3.1) as SpanBERT, TLM and w2v-BERT's masked prediction use it. Positions that do not count
/// pass no gradient, even a NaN one (a `where`, not a product). Throws std::invalid_argument when the
/// shapes disagree.
MaskedPrediction masked_prediction(const torch::Tensor& logits, const torch::Tensor& targets,
                                   const torch::Tensor& counted);

/// Rows of `x` (B, T, ...) at `index` (B, K) int64 positions along dim 1: (B, K, ...). Throws
/// std::invalid_argument when the batch sizes differ or `index` is not 2-D.
torch::Tensor gather_positions(const torch::Tensor& x, const torch::Tensor& index);

}  // namespace workbench
