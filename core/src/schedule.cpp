#include "workbench/schedule.h"

#include <algorithm>
#include <cmath>

#include "workbench/trainer_options.h"

namespace workbench {

double warmup_inverse_sqrt(double peak, std::int64_t warmup, std::int64_t step) {
  step = std::max<std::int64_t>(step, 1);
  if (warmup <= 0) return peak;
  double s = static_cast<double>(step), w = static_cast<double>(warmup);
  return peak * std::min(s / w, std::sqrt(w / s));
}

double tri_stage(double peak, std::int64_t total, double warmup_share, double hold_share, double decay_share,
                 double start_scale, double final_scale, std::int64_t step) {
  const auto cut = [&](double share) { return static_cast<std::int64_t>(share * static_cast<double>(total)); };
  const std::int64_t w = cut(warmup_share), h = cut(hold_share), d = cut(decay_share);
  std::int64_t s = std::max<std::int64_t>(step, 0);
  if (s < w) return start_scale * peak + (peak - start_scale * peak) * static_cast<double>(s) / static_cast<double>(w);
  s -= w;
  if (s < h) return peak;
  s -= h;
  if (s < d) return peak * std::exp(std::log(final_scale) * static_cast<double>(s) / static_cast<double>(d));
  return final_scale * peak;
}

double learning_rate(const TrainerOptions& o, std::int64_t step) {
  if (o.schedule() == "tri_stage")
    return tri_stage(o.lr(), o.steps(), o.tri_stage_warmup(), o.tri_stage_hold(), o.tri_stage_decay(),
                     o.start_lr_scale(), o.final_lr_scale(), step);
  return warmup_inverse_sqrt(o.lr(), o.warmup_steps(), step + 1);
}

}  // namespace workbench
