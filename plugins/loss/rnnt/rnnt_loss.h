#pragma once
// The RNN-T loss (Graves 2012, "Sequence Transduction with Recurrent Neural Networks", section 2: the
// forward variable alpha, eq. 16-17; the backward variable beta, eq. 18-19; the gradient, eq. 20-22),
// in log space over the T x (U+1) lattice, one anti-diagonal t + u = n at a time, so that each step is a
// handful of batched tensor operations on any device.
#include <torch/types.h>

namespace workbench::rnnt {

/// Negative log-likelihood of each row's target under the transducer.
///   logits          (B, T, U+1, V) raw joiner outputs (log_softmax is applied here, as torchaudio's
///                   rnnt_loss with fused_log_softmax does)
///   targets         (B, U) int64 label ids (never `blank`), padded after target_lengths
///   logit_lengths   (B) int64 valid frames (>= 1)
///   target_lengths  (B) int64 valid labels (<= U)
/// Returns (B) float32 costs. Gradients reach `logits` through log_softmax and an explicit alpha-beta
/// backward; padded frames and labels get exactly zero gradient.
/// Throws std::invalid_argument on mismatched shapes or a row with no frames.
torch::Tensor rnnt_loss(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                        const torch::Tensor& target_lengths, std::int64_t blank);

/// The lattice alone, for tests: `blank_lp` (B, T, U+1) log p(blank | t, u), `label_lp` (B, T, U)
/// log p(y_{u+1} | t, u). Returns (B) costs; differentiable with respect to both inputs.
torch::Tensor rnnt_lattice_loss(const torch::Tensor& blank_lp, const torch::Tensor& label_lp,
                                const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths);

}  // namespace workbench::rnnt
