#pragma once
// Masking for self-supervised objectives: span masking of speech frames (wav2vec 2.0 / w2v-BERT) and
// span masking of text tokens (SpanBERT). Losses call these; the core owns them so that every loss
// masks the same way and the statistics are tested once.
#include <cstdint>

#include <torch/types.h>

namespace workbench {

/// Speech span masking (wav2vec 2.0 section 3.1; w2v-BERT section 3.2: start probability 0.065, span 10):
/// every valid frame starts a span with probability `start_prob`; a span covers `span` frames, cut at
/// the row's length; spans may overlap, so the expected coverage is 1 - (1 - p)^span (about 49% for
/// 0.065 x 10). A row of at least `min_spans` * span frames that drew fewer starts gets extra starts, at
/// distinct random frames in [0, length - span] that had none, so that a contrastive loss always has
/// masked frames to work with.
///
/// `lengths` (B) int64 valid frames per row; `max_length` T. Returns (B, T) bool on lengths' device, true
/// at masked frames, never at padding. Built there by tensor operations, with nothing read back to the
/// host, from torch's default generator of that device (which the trainer checkpoints for resume).
/// Throws std::invalid_argument for lengths that are not 1-D, max_length < 0, p outside [0, 1], span < 1
/// or min_spans < 0.
torch::Tensor span_mask_frames(const torch::Tensor& lengths, std::int64_t max_length, double start_prob,
                               std::int64_t span, std::int64_t min_spans = 1);

/// The scale of the random vectors that replace masked frames (w2v-BERT section 3.2; TLM): the standard
/// deviation of the values of `x` (B, T, D) over its valid frames only (`valid` (B, T) bool), so that
/// padding does not shrink it. Unbiased over the N = valid frames x D values, detached; 1 when N < 2.
/// Returns a () tensor on x's device, from weighted sums (nothing read back to the host). Throws
/// std::invalid_argument when x is not 3-D or valid is not its (B, T).
torch::Tensor valid_frame_std(const torch::Tensor& x, const torch::Tensor& valid);

/// The start probability p that gives coverage c with spans of `span`: 1 - (1 - c)^(1/span). TLM uses it
/// to mask "about 75% of speech" with the same span length.
double start_prob_for_coverage(double coverage, std::int64_t span);

/// How SpanBERT-style span lengths are drawn.
enum class SpanLength {
  ClippedGeometric,  ///< SpanBERT: Geometric(geometric_p) on {1, 2, ...}, clipped to [1, max_span] (mean 3.8)
  Fixed,             ///< every span `span_length` tokens (SLAM: 5 pieces; mSLAM: 20 characters)
  Geometric,         ///< Geometric(1 / span_length) on {1, 2, ...}, unclipped: mean exactly `span_length`
};

struct TextMaskingOptions {
  double budget = 0.15;          ///< share of each row's tokens to select (at least one), in [0, 1]
  SpanLength span = SpanLength::ClippedGeometric;
  double geometric_p = 0.2;      ///< ClippedGeometric: span lengths ~ Geometric(p) on {1, 2, ...}
  std::int64_t max_span = 10;    ///< ClippedGeometric: truncated (renormalised) to [1, max_span]
  double span_length = 0;        ///< Fixed and Geometric: the (mean) span length, >= 1
  // Every span is also cut to what is left of the row's budget, so the last one may be shorter.
  double mask_share = 0.8;       ///< per span: replace with [MASK] ...
  double random_share = 0.1;     ///< ... or with random tokens; the rest stays unchanged
};

struct TextMasking {
  torch::Tensor inputs;    ///< (B, L) int64: the tokens with the selected spans replaced
  torch::Tensor targets;   ///< (B, L) bool: the selected positions (the loss predicts the originals there)
  torch::Tensor replaced;  ///< (B, L) int8: 0 not selected, 1 [MASK], 2 random, 3 unchanged
  torch::Tensor spans;     ///< () int64: spans drawn, for statistics
  /// (B, K) int64: each row's selected positions first, in increasing order, then unselected ones;
  /// K = min(L, max(1, round(budget x L))) bounds every row's count, so a loss gathers (B, K) rows and
  /// weighs them by `position_valid` instead of a boolean index whose size only the host can learn.
  torch::Tensor positions;
  torch::Tensor position_valid;  ///< (B, K) bool: true where `positions` holds a selected position
};

/// SpanBERT masking (Joshi et al. 2020, section 3.1). Each row of n valid tokens gets exactly
/// max(1, round(budget x n)) selected positions (0 for an empty row), as non-overlapping spans: lengths are
/// drawn as `options` say until they cover the budget (the last one cut to it), and the spans are placed
/// uniformly over all non-overlapping arrangements of them in the row, in random order. Each span is
/// replaced as a whole by [MASK] (80%), random tokens from [first_regular, end_regular) (10%) or kept (10%).
/// `tokens` (B, L) int64 and `lengths` (B) on one device; everything is drawn there from torch's default
/// generator for it, by tensor ops (no host round trip), so the trainer's checkpointed generator state makes
/// a resumed run draw the same masks. Throws std::invalid_argument for a budget outside [0, 1], an empty regular range, tokens
/// that are not 2-D, lengths that are not (B), or span options sample_span_lengths refuses.
TextMasking span_mask_text(const torch::Tensor& tokens, const torch::Tensor& lengths, const TextMaskingOptions& options,
                           std::int64_t mask_id, std::int64_t first_regular, std::int64_t end_regular);

/// Span lengths as `options` describe them (options.span), int64 of `shape`, drawn on `device` by inverting
/// the distribution's CDF at uniform draws (float64):
///   ClippedGeometric: Geometric(geometric_p) on {1, 2, ...} truncated to [1, max_span] (renormalised);
///   Geometric: Geometric(1 / span_length) on {1, 2, ...}, mean span_length;
///   Fixed: round(span_length).
/// Throws std::invalid_argument for geometric_p outside (0, 1], max_span < 1, or (Fixed, Geometric) a
/// span_length below 1.
torch::Tensor sample_span_lengths(const TextMaskingOptions& options, torch::IntArrayRef shape,
                                  torch::Device device = torch::kCPU);

}  // namespace workbench
