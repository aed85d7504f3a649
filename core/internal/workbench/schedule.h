#pragma once
// Learning-rate schedules, as functions of the optimizer step.
#include <cstdint>

namespace workbench {

struct TrainerOptions;

/// The papers' schedule (Transformer / w2v-BERT / mSLAM): linear warm-up to `peak` over `warmup` steps,
/// then peak * sqrt(warmup / step). `step` counts from 1.
double warmup_inverse_sqrt(double peak, std::int64_t warmup, std::int64_t step);

/// fairseq2's tri-stage schedule (TriStageLR, after Park et al. 2019, SpecAugment section 3.2), with
/// `step` counting from 0 and the stage lengths int(share * total) as fairseq2 cuts them:
///   warm-up: start * peak + (peak - start * peak) * s / w, linear;
///   hold:    peak;
///   decay:   peak * exp(log(final) * s' / d), s' the steps into the decay;
///   after:   final * peak.
double tri_stage(double peak, std::int64_t total, double warmup_share, double hold_share, double decay_share,
                 double start_scale, double final_scale, std::int64_t step);

/// The learning rate of 0-based optimizer step `step` under `options` (schedule, lr, and the
/// schedule's own keys).
double learning_rate(const TrainerOptions& options, std::int64_t step);

}  // namespace workbench
