#include "workbench/masking.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/utils.h>

namespace workbench {

torch::Tensor span_mask_frames(const torch::Tensor& lengths, std::int64_t max_length, double start_prob,
                               std::int64_t span, std::int64_t min_spans) {
  if (!(start_prob >= 0 && start_prob <= 1)) throw std::invalid_argument("span_mask_frames: start_prob must be in [0, 1]");
  if (span < 1) throw std::invalid_argument("span_mask_frames: span must be at least 1");
  if (min_spans < 0) throw std::invalid_argument("span_mask_frames: min_spans must not be negative");
  if (lengths.dim() != 1)
    throw std::invalid_argument("span_mask_frames: lengths must be (B), not " + std::to_string(lengths.dim()) + "-D");
  if (max_length < 0) throw std::invalid_argument("span_mask_frames: max_length must not be negative");
  const auto B = lengths.size(0), T = max_length;
  const auto device = lengths.device();
  const auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  const auto floats = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  auto n = lengths.to(torch::kLong).clamp(0, T).unsqueeze(1);  // (B, 1)
  auto t = torch::arange(T, longs).unsqueeze(0);               // (1, T)
  auto starts = (torch::rand({B, T}, floats) < start_prob) & (t < n);
  if (min_spans > 0) {
    // The missing starts go to the candidates of lowest random key: distinct frames, uniformly chosen.
    auto need = (min_spans - starts.sum(1, /*keepdim=*/true)).clamp_min(0) * (n >= min_spans * span).to(torch::kLong);
    auto candidate = (t <= n - span) & ~starts;
    auto keys = torch::rand({B, T}, floats).masked_fill(~candidate, 2.0);
    auto order = std::get<1>(keys.sort(/*dim=*/1));
    auto rank = torch::empty_like(order).scatter_(1, order, t.expand({B, T}).contiguous());
    starts = starts | (candidate & (rank < need));
  }
  // Frame t is masked when a span starts in (t - span, t]: a difference of running counts.
  auto count = starts.to(torch::kInt32).cumsum(1);
  // (A span longer than the row is cut to it: the shift is at most T.)
  auto before = torch::cat({torch::zeros({B, std::min(span, T)}, count.options()), count}, 1).narrow(1, 0, T);
  return (count > before) & (t < n);
}

torch::Tensor valid_frame_std(const torch::Tensor& x, const torch::Tensor& valid) {
  if (x.dim() != 3 || valid.dim() != 2 || valid.size(0) != x.size(0) || valid.size(1) != x.size(1))
    throw std::invalid_argument("valid_frame_std: x must be (B, T, D) and valid its (B, T)");
  torch::NoGradGuard no_grad;
  auto w = valid.unsqueeze(-1).to(x.scalar_type());  // (B, T, 1)
  auto n = w.sum() * static_cast<double>(x.size(-1));
  auto mean = (x.detach() * w).sum() / n.clamp_min(1);
  auto var = ((x.detach() - mean).square() * w).sum() / (n - 1).clamp_min(1);
  return torch::where(n >= 2, var.sqrt(), torch::ones({}, x.options()));
}

double start_prob_for_coverage(double coverage, std::int64_t span) {
  if (!(coverage >= 0 && coverage < 1)) throw std::invalid_argument("coverage must be in [0, 1)");
  return 1.0 - std::pow(1.0 - coverage, 1.0 / static_cast<double>(std::max<std::int64_t>(span, 1)));
}

std::int64_t sample_span_length(double p, std::int64_t max_span, std::mt19937_64& rng) {
  // Outside these the rejection loop below would never end (or the distribution is undefined).
  if (!(p > 0 && p <= 1)) throw std::invalid_argument("sample_span_length: p must be in (0, 1]");
  if (max_span < 1) throw std::invalid_argument("sample_span_length: max_span must be at least 1");
  std::geometric_distribution<std::int64_t> g(p);  // failures before the first success: 0, 1, ...
  while (true) {
    std::int64_t n = g(rng) + 1;
    if (n <= max_span) return n;
  }
}

std::int64_t sample_span_length(const TextMaskingOptions& o, std::mt19937_64& rng) {
  if (o.span == SpanLength::ClippedGeometric) return sample_span_length(o.geometric_p, o.max_span, rng);
  if (!(o.span_length >= 1)) throw std::invalid_argument("sample_span_length: span_length must be at least 1");
  if (o.span == SpanLength::Fixed) return static_cast<std::int64_t>(std::llround(o.span_length));
  // Failures before the first success with p = 1 / mean, plus one: mean 1 + (1 - p) / p = 1 / p.
  std::geometric_distribution<std::int64_t> g(1.0 / o.span_length);
  return g(rng) + 1;
}

TextMasking span_mask_text(const torch::Tensor& tokens, const torch::Tensor& lengths, const TextMaskingOptions& o,
                           std::int64_t mask_id, std::int64_t first_regular, std::int64_t end_regular,
                           std::mt19937_64& rng) {
  if (end_regular <= first_regular) throw std::invalid_argument("span_mask_text: empty range of regular tokens");
  auto tok = tokens.to(torch::kCPU, torch::kLong).contiguous();
  auto len = lengths.to(torch::kCPU, torch::kLong).contiguous();
  const auto B = tok.size(0), Lmax = tok.size(1);
  TextMasking out;
  out.inputs = tok.clone();
  out.targets = torch::zeros({B, Lmax}, torch::kBool);
  out.replaced = torch::zeros({B, Lmax}, torch::kInt8);
  auto in = out.inputs.accessor<std::int64_t, 2>();
  auto tg = out.targets.accessor<bool, 2>();
  auto rp = out.replaced.accessor<std::int8_t, 2>();
  const auto* L = len.data_ptr<std::int64_t>();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::uniform_int_distribution<std::int64_t> random_token(first_regular, end_regular - 1);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t n = std::min(L[b], Lmax);
    if (n == 0) continue;
    const auto budget = std::max<std::int64_t>(1, std::llround(o.budget * static_cast<double>(n)));
    std::int64_t selected = 0;
    // Rejection of overlapping placements; the attempt cap ends rows whose free gaps are all too short.
    for (std::int64_t attempt = 0; selected < budget && attempt < 20 * n; ++attempt) {
      std::int64_t len_span = std::min(sample_span_length(o, rng), budget - selected);
      len_span = std::min(len_span, n);
      std::uniform_int_distribution<std::int64_t> pick(0, n - len_span);
      const std::int64_t s = pick(rng);
      bool free = true;
      for (std::int64_t t = s; t < s + len_span && free; ++t) free = !tg[b][t];
      if (!free) continue;
      const double r = u(rng);
      const std::int8_t how = r < o.mask_share ? 1 : (r < o.mask_share + o.random_share ? 2 : 3);
      for (std::int64_t t = s; t < s + len_span; ++t) {
        tg[b][t] = true;
        rp[b][t] = how;
        if (how == 1) in[b][t] = mask_id;
        if (how == 2) in[b][t] = random_token(rng);
      }
      selected += len_span;
      ++out.spans;
    }
  }
  out.inputs = out.inputs.to(tokens.device());
  out.targets = out.targets.to(tokens.device());
  out.replaced = out.replaced.to(tokens.device());
  return out;
}

}  // namespace workbench
