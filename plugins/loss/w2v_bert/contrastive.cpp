#include "contrastive.h"

#include <limits>
#include <stdexcept>
#include <string>

#include <c10/util/StringUtil.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>
#include <torch/utils.h>

namespace workbench::w2v_bert {
namespace {

// The frames of each row where `chosen` (B, T) bool is true, first and in time order (a stable sort), then
// the others: (B, T) frame indices.
torch::Tensor chosen_first(const torch::Tensor& chosen) {
  return std::get<1>(torch::sort((~chosen).to(torch::kUInt8), c10::optional<bool>(true), /*dim=*/1, /*descending=*/false));
}

}  // namespace

torch::Tensor sample_distractors(const torch::Tensor& mask, std::int64_t K) {
  if (mask.dim() != 2) throw std::invalid_argument(c10::str("sample_distractors: the mask must be (B, T), not ", mask.dim(), "-D"));
  if (K < 1) throw std::invalid_argument("sample_distractors: K must be at least 1");
  const auto B = mask.size(0), T = mask.size(1);
  const auto longs = torch::TensorOptions().dtype(torch::kLong).device(mask.device());
  auto m = mask.to(torch::kBool);
  auto n = m.sum(1, /*keepdim=*/true);  // (B, 1) masked frames per row
  // The masked frames of each row first, in time order: their positions are what we draw from.
  auto order = chosen_first(m);                   // (B, T)
  auto place = m.to(torch::kLong).cumsum(1) - 1;  // (B, T)
  // j uniform on [0, n - 2], then shifted past the frame's own place: uniform over the other n - 1.
  auto others = (n - 1).clamp_min(1).unsqueeze(2);  // (B, 1, 1)
  auto j = (torch::rand({B, T, K}, torch::TensorOptions().device(mask.device())) * others).floor().to(torch::kLong);
  j = torch::minimum(j, others - 1);  // float rounding at u close to 1
  j = j + (j >= place.unsqueeze(2)).to(torch::kLong);
  auto frames = order.gather(1, j.clamp(0, std::max<std::int64_t>(T - 1, 0)).view({B, T * K})).view({B, T, K});
  auto drawable = (m & (n >= 2)).unsqueeze(2);  // (B, T, 1)
  return torch::where(drawable, frames, torch::full({}, -1, longs));
}

ContrastiveOutput info_nce(const torch::Tensor& context, const torch::Tensor& targets, const torch::Tensor& target_codes,
                           const torch::Tensor& distractors, double kappa, bool compact_on_cpu) {
  namespace F = torch::nn::functional;
  if (context.dim() != 3 || targets.sizes() != context.sizes() || distractors.dim() != 3 || target_codes.dim() != 3 ||
      distractors.size(0) != context.size(0) || distractors.size(1) != context.size(1) ||
      target_codes.size(0) != context.size(0) || target_codes.size(1) != context.size(1))
    throw std::invalid_argument(c10::str(
        "info_nce: context and targets must be (B, T, Dq), target_codes (B, T, G) and distractors (B, T, K); got context ",
        context.sizes(), ", targets ", targets.sizes(), ", target_codes ", target_codes.sizes(), ", distractors ",
        distractors.sizes()));
  const auto B = context.size(0), T = context.size(1), K = distractors.size(2), G = target_codes.size(2);
  if (K < 1) throw std::invalid_argument("info_nce: at least one distractor per frame (K >= 1)");
  if (!(kappa > 0)) throw std::invalid_argument("info_nce: the temperature kappa must be positive");
  // Frames that neither count nor are drawn (unmasked frames, padding) are zeroed before the matrix
  // product, so that whatever they hold, even NaN, reaches no counted frame's value or gradient.
  auto active = (distractors >= 0).all(2);  // (B, T); every drawn frame is a masked, active one
  // The active frames of each row first (a stable sort), cut to the most that any row has. On the CPU that
  // count is read (a host read costs nothing there) and the cosine matrix shrinks by the square of the
  // masked share; on another device all T rows are kept, so that nothing waits on the device.
  auto order = chosen_first(active);
  std::int64_t R = T;
  if (compact_on_cpu && context.device().is_cpu() && B > 0 && T > 0) R = active.sum(1).max().item<std::int64_t>();
  auto rows = order.narrow(1, 0, R);  // (B, R): the frame at each compact row
  auto gather_rows = [&](const torch::Tensor& x) { return x.gather(1, rows.unsqueeze(2).expand({B, R, x.size(2)})); };
  auto zero = torch::zeros({}, context.options());
  auto keep = active.gather(1, rows).unsqueeze(2);  // (B, R, 1): false at rows past a row's own count
  // x / max(|x|, eps) as a product with the reciprocal: a division's backward is several times dearer.
  auto unit = [](const torch::Tensor& x) { return x * x.norm(2, -1, /*keepdim=*/true).clamp_min(1e-6).reciprocal(); };
  auto c = unit(torch::where(keep, gather_rows(context), zero)) * (1.0 / kappa);  // kappa folded in
  auto q = unit(torch::where(keep, gather_rows(targets), zero));
  auto cosines = torch::bmm(c, q.transpose(1, 2));  // (B, R, R): cos / kappa
  auto drawn = gather_rows(distractors);                    // (B, R, K) frame indices
  auto has = drawn >= 0;
  auto idx = drawn.clamp_min(0);  // -1 reads frame 0; such rows are not counted
  // Each drawn frame's compact row; a drawn frame that is not active itself scores 0, as its zeroed vector would.
  auto flat_idx = idx.view({B, R * K});
  auto drawn_active = active.gather(1, flat_idx).view({B, R, K});
  auto place = (active.to(torch::kLong).cumsum(1) - 1).clamp_min(0).gather(1, flat_idx).view({B, R, K});
  auto positive = cosines.diagonal(0, 1, 2).unsqueeze(2);  // (B, R, 1)
  auto negative = torch::where(drawn_active, cosines.gather(2, place.clamp_max(std::max<std::int64_t>(R - 1, 0))),
                               torch::zeros({}, cosines.options()));  // (B, R, K)
  auto logits = torch::cat({positive, negative}, 2);                  // (B, R, K + 1)

  // A distractor identical to the true vector (the same codes drawn twice) cannot be told apart: compare
  // (B, R, K, G) integers rather than (B, R, K, Dq) floats.
  auto codes = target_codes.to(torch::kLong);
  auto their_codes = codes.gather(1, flat_idx.unsqueeze(2).expand({B, R * K, G})).view({B, R, K, G});
  auto same = (their_codes == gather_rows(codes).unsqueeze(2)).all(-1) & has;  // (B, R, K)
  // A frame counts when it has distractors and at least one of them differs from its target: with a
  // collapsed codebook every distractor is the target, and "picking" it would be trivially right.
  auto usable = has.all(2) & (~same).any(2);  // (B, R)
  logits = logits.masked_fill(torch::cat({torch::zeros({B, R, 1}, same.options()), same}, 2),
                              -std::numeric_limits<float>::infinity());

  ContrastiveOutput out;
  auto weights = usable.to(logits.scalar_type());
  out.count = weights.sum();
  auto zero_class = torch::zeros({B * R}, torch::TensorOptions().dtype(torch::kLong).device(logits.device()));
  auto ce = F::cross_entropy(logits.reshape({B * R, K + 1}), zero_class, F::CrossEntropyFuncOptions().reduction(torch::kNone))
                .view({B, R});
  // where, not a product: a frame that does not count passes no gradient, even a NaN one.
  out.loss = torch::where(usable, ce, torch::zeros({}, ce.options())).sum() / out.count.clamp_min(1.0);
  // Right only when the target scores strictly above every distractor: with tied scores (an encoder that
  // outputs zeros) argmax would return index 0, the target, and flatter the model.
  auto detached = logits.detach();
  auto best_other = detached.narrow(2, 1, K).amax(2);
  auto correct = (detached.select(2, 0) > best_other).to(logits.scalar_type()) * weights;
  out.accuracy = correct.sum() / out.count.clamp_min(1.0);
  // What guessing uniformly among the target and its draws that differ from it would score.
  auto distinct = 1.0 + (~same).sum(2).to(logits.scalar_type());
  out.chance = ((1.0 / distinct) * weights).sum() / out.count.clamp_min(1.0);
  return out;
}

}  // namespace workbench::w2v_bert
