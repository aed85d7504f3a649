#include "workbench/masking.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

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

torch::Tensor sample_span_lengths(const TextMaskingOptions& o, torch::IntArrayRef shape, torch::Device device) {
  const auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  const auto doubles = torch::TensorOptions().dtype(torch::kDouble).device(device);
  double p = 0;  // the geometric's success probability
  std::int64_t cap = 0;  // truncation: lengths in [1, cap]; 0 = none
  if (o.span == SpanLength::ClippedGeometric) {
    // Outside these the distribution is undefined (or has no length to give).
    if (!(o.geometric_p > 0 && o.geometric_p <= 1))
      throw std::invalid_argument("sample_span_lengths: geometric_p must be in (0, 1]");
    if (o.max_span < 1) throw std::invalid_argument("sample_span_lengths: max_span must be at least 1");
    p = o.geometric_p;
    cap = o.max_span;
  } else {
    if (!(o.span_length >= 1)) throw std::invalid_argument("sample_span_lengths: span_length must be at least 1");
    if (o.span == SpanLength::Fixed) return torch::full(shape, static_cast<std::int64_t>(std::llround(o.span_length)), longs);
    p = 1.0 / o.span_length;  // Geometric on {1, 2, ...} with mean 1 / p
  }
  if (p >= 1.0) return torch::ones(shape, longs);
  // P(K <= k) = (1 - q^k) / z with q = 1 - p and z = 1 - q^cap (z = 1 untruncated), so the smallest k with
  // u z <= 1 - q^k is K = ceil(log(1 - u z) / log q); u in [0, 1) keeps the log finite.
  const double q = 1.0 - p;
  const double z = cap > 0 ? 1.0 - std::pow(q, static_cast<double>(cap)) : 1.0;
  auto u = torch::rand(shape, doubles);
  auto k = torch::ceil(torch::log1p(-u * z) / std::log(q)).clamp_min(1);
  if (cap > 0) k = k.clamp_max(static_cast<double>(cap));
  return k.to(torch::kLong);
}

TextMasking span_mask_text(const torch::Tensor& tokens, const torch::Tensor& lengths, const TextMaskingOptions& o,
                           std::int64_t mask_id, std::int64_t first_regular, std::int64_t end_regular) {
  // Above 1 a row's budget exceeds its tokens and the placement below has no room for the spans.
  if (!(o.budget >= 0 && o.budget <= 1)) throw std::invalid_argument("span_mask_text: budget must be in [0, 1]");
  if (end_regular <= first_regular) throw std::invalid_argument("span_mask_text: empty range of regular tokens");
  if (tokens.dim() != 2) throw std::invalid_argument("span_mask_text: tokens must be (B, L)");
  if (lengths.dim() != 1 || lengths.size(0) != tokens.size(0))
    throw std::invalid_argument("span_mask_text: lengths must be (B) for tokens of B rows");
  const auto device = tokens.device();
  const auto longs = torch::TensorOptions().dtype(torch::kLong).device(device);
  const auto floats = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  const auto B = tokens.size(0), L = tokens.size(1);
  const auto tok = tokens.to(torch::kLong);
  // Every row's budget is at most K, and so is its number of spans (each at least one token long).
  const std::int64_t K = std::max<std::int64_t>(1, std::llround(o.budget * static_cast<double>(L)));
  auto lengths_drawn = sample_span_lengths(o, {B, K}, device);  // validates the options first
  TextMasking out;
  if (B == 0 || L == 0) {
    out.inputs = tok.clone();
    out.targets = torch::zeros({B, L}, torch::TensorOptions().dtype(torch::kBool).device(device));
    out.replaced = torch::zeros({B, L}, torch::TensorOptions().dtype(torch::kInt8).device(device));
    out.spans = torch::zeros({}, longs);
    out.positions = torch::zeros({B, 0}, longs);
    out.position_valid = torch::zeros({B, 0}, torch::TensorOptions().dtype(torch::kBool).device(device));
    return out;
  }
  auto n = lengths.to(device, torch::kLong).clamp(0, L).unsqueeze(1);  // (B, 1)
  // max(1, llround(budget n)) for n > 0: floor(x + 0.5) is llround for x >= 0.
  auto budget = torch::floor(n.to(torch::kDouble) * o.budget + 0.5).to(torch::kLong).clamp_min(1) * (n > 0);
  // Lengths cut to what is left of the budget: the first k are positive and sum to it, the rest are 0.
  auto before = lengths_drawn.cumsum(1) - lengths_drawn;
  auto cut = torch::minimum(lengths_drawn, budget - before).clamp_min(0);  // (B, K)
  auto k = (cut > 0).sum(1, /*keepdim=*/true);                           // (B, 1)
  // Their order along the row: a random permutation of the k spans (the cut one is not always last).
  auto order_keys = torch::rand({B, K}, floats).masked_fill(cut == 0, 2.0);
  auto span_len = cut.gather(1, std::get<1>(order_keys.sort(/*dim=*/1)));  // (B, K): k positive, then 0
  // Stars and bars: the row is k spans and n - budget free tokens in some order, all orders equally likely.
  // Choose which k of the n - budget + k items are spans; the j-th chosen item (j = 0, 1, ...) is span j.
  auto item = torch::arange(L, longs).unsqueeze(0);  // n - budget + k <= n <= L items
  auto keys = torch::rand({B, L}, floats).masked_fill(item >= n - budget + k, 2.0);
  auto order = std::get<1>(keys.sort(/*dim=*/1));
  auto rank = torch::empty_like(order).scatter_(1, order, item.expand({B, L}).contiguous());
  auto chosen = rank < k;  // (B, L): k items, uniformly
  // Item of span j: scattered to column j (the running count of chosen items, minus one); the others go
  // to a spare column K, dropped.
  auto column = torch::where(chosen, chosen.to(torch::kLong).cumsum(1) - 1, torch::full({}, K, longs));
  auto item_of = torch::zeros({B, K + 1}, longs).scatter_(1, column, item.expand({B, L}).contiguous()).narrow(1, 0, K);
  // Span j starts after j spans and item_of[j] - j free tokens.
  auto j = torch::arange(K, longs).unsqueeze(0);
  auto start = item_of - j + (span_len.cumsum(1) - span_len);
  auto active = span_len > 0;
  // Positions of span j hold j + 1: +id at its start, -id after its end, summed along the row.
  auto id = (j + 1) * active;
  auto marks = torch::zeros({B, L + 1}, longs)
                   .scatter_add_(1, start * active, id)
                   .scatter_add_(1, (start + span_len) * active, -id);
  auto span_id = marks.cumsum(1).narrow(1, 0, L);  // (B, L): 0 outside every span
  out.targets = span_id > 0;
  // How each span is replaced: 1 [MASK], 2 random tokens, 3 unchanged.
  auto r = torch::rand({B, K}, floats);
  auto how = (1 + (r >= o.mask_share).to(torch::kInt8) + (r >= o.mask_share + o.random_share).to(torch::kInt8));
  out.replaced = how.gather(1, (span_id - 1).clamp_min(0)).masked_fill(~out.targets, 0);
  auto random_tokens = torch::randint(first_regular, end_regular, {B, L}, longs);
  out.inputs = torch::where(out.replaced == 1, torch::full({}, mask_id, longs),
                            torch::where(out.replaced == 2, random_tokens, tok));
  out.spans = active.sum();
  // Each row selects exactly `budget` positions: packed to the front by a stable sort, they keep their order.
  auto packed = std::get<1>(out.targets.to(torch::kByte).sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
  out.positions = packed.narrow(1, 0, std::min(K, L));
  out.position_valid = torch::arange(out.positions.size(1), longs).unsqueeze(0) < budget;
  return out;
}

}  // namespace workbench
