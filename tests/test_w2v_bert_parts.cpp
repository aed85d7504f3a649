// The w2v_bert loss plugin's contrastive helpers (sample_distractors, info_nce) and Gumbel quantizer,
// compiled into the test and checked directly, without the registry, so that the sanitized build
// (tests/sanitized/) runs them too. The plugin itself, through the registry, is in test_w2v_bert.cpp.
#include <torch/types.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "contrastive.h"
#include "quantizer.h"
#include "workbench/encoder.h"
#include "workbench/error.h"
#include "workbench/masking.h"

#include <catch2/catch.hpp>

using namespace workbench;
using namespace workbench::w2v_bert;
using Catch::Matchers::Contains;

namespace {

// ---------------------------------------------------------------------------------------------------
// Helpers for the contrastive functions.

/// InfoNCE worked out in double precision, frame by frame: cosine / kappa, the true vector first, a
/// distractor whose vector equals the true one left out, frames with a -1 distractor not counted.
struct ManualNce {
  double loss = 0, accuracy = 0;
  int count = 0;
};
ManualNce manual_info_nce(const torch::Tensor& context, const torch::Tensor& targets, const torch::Tensor& distractors,
                          double kappa) {
  auto c = context.to(torch::kFloat64);
  auto q = targets.to(torch::kFloat64);
  const auto M = c.size(0), K = distractors.size(1);
  auto cosine = [&](std::int64_t i, std::int64_t j) {
    return (c[i] * q[j]).sum().item<double>() / (c[i].norm().item<double>() * q[j].norm().item<double>());
  };
  ManualNce out;
  for (std::int64_t i = 0; i < M; ++i) {
    bool usable = true;
    for (std::int64_t k = 0; k < K; ++k) usable = usable && distractors[i][k].item<std::int64_t>() >= 0;
    if (!usable) continue;
    const double positive = cosine(i, i) / kappa;
    std::vector<double> logits{positive};
    for (std::int64_t k = 0; k < K; ++k) {
      const auto j = distractors[i][k].item<std::int64_t>();
      if (torch::equal(targets[j], targets[i])) continue;  // the same vector is not a negative
      logits.push_back(cosine(i, j) / kappa);
    }
    const double top = *std::max_element(logits.begin(), logits.end());
    double sum = 0;
    for (double l : logits) sum += std::exp(l - top);
    out.loss += top + std::log(sum) - positive;
    bool best = true;
    for (std::size_t k = 1; k < logits.size(); ++k) best = best && logits[k] < positive;
    out.accuracy += best ? 1.0 : 0.0;
    ++out.count;
  }
  if (out.count > 0) {
    out.loss /= out.count;
    out.accuracy /= out.count;
  }
  return out;
}

/// A (B, T) mask with every frame of every row masked.
torch::Tensor full_mask(std::int64_t rows, std::int64_t frames) { return torch::ones({rows, frames}, torch::kBool); }

/// Codes for targets (B, T, D): frames with equal vectors share an id, as frames with equal codes have
/// equal quantized vectors. (B, T, 1) int64.
torch::Tensor codes_of(const torch::Tensor& targets) {
  auto flat = targets.detach().reshape({-1, targets.size(2)});
  auto ids = std::get<1>(torch::unique_dim(flat, 0, /*sorted=*/true, /*return_inverse=*/true));
  return ids.view({targets.size(0), targets.size(1), 1});
}

/// The frame layout packed as the old info_nce took it: the frames that have distractors, in row-major
/// order, and each distractor's place in that list. Returns (context (M, D), targets (M, D), idx (M, K)).
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> pack(const torch::Tensor& context, const torch::Tensor& targets,
                                                             const torch::Tensor& distractors) {
  const auto B = distractors.size(0), T = distractors.size(1);
  auto keep = (distractors >= 0).all(2);  // (B, T)
  auto packed_of = (keep.reshape({-1}).to(torch::kLong).cumsum(0) - 1).view({B, T});
  auto idx = torch::where(distractors >= 0, packed_of.gather(1, distractors.clamp_min(0).view({B, -1})).view(distractors.sizes()),
                          torch::full({}, -1, torch::kLong));
  return {context.index({keep}), targets.index({keep}), idx.index({keep})};
}

/// InfoNCE of the frame layout worked out by hand on its packed frames.
ManualNce manual_frames(const torch::Tensor& context, const torch::Tensor& targets, const torch::Tensor& distractors,
                        double kappa) {
  auto [c, q, idx] = pack(context, targets, distractors);
  return manual_info_nce(c, q, idx, kappa);
}

/// The direct formulation on packed frames (the old info_nce, and fairseq2's): gathers the (M, K, D)
/// distractor vectors. Its autograd gradients are the reference for the frame layout's.
torch::Tensor gathered_loss(const torch::Tensor& c_in, const torch::Tensor& q_in, const torch::Tensor& idx, double kappa) {
  namespace F = torch::nn::functional;
  auto c = F::normalize(c_in, F::NormalizeFuncOptions().dim(-1).eps(1e-6));
  auto q = F::normalize(q_in, F::NormalizeFuncOptions().dim(-1).eps(1e-6));
  auto negatives = q.index({idx.clamp_min(0)});  // (M, K, D)
  auto logits = torch::einsum("md,mkd->mk", {c, torch::cat({q.unsqueeze(1), negatives}, 1)}) / kappa;
  auto same = negatives.eq(q.unsqueeze(1)).all(-1);
  auto usable = (idx >= 0).all(1) & (~same).any(1);
  logits = logits.masked_fill(torch::cat({torch::zeros({same.size(0), 1}, same.options()), same}, 1),
                              -std::numeric_limits<float>::infinity());
  auto ce = F::cross_entropy(logits, torch::zeros({logits.size(0)}, torch::kLong), F::CrossEntropyFuncOptions().reduction(torch::kNone));
  auto w = usable.to(logits.dtype());
  return (ce * w).sum() / w.sum().clamp_min(1.0);
}

}  // namespace

TEST_CASE("w2v_bert info_nce: a perfect predictor has loss near 0 and accuracy 1", "[w2v_bert][contrastive]") {
  torch::manual_seed(1);
  const std::int64_t rows = 4, frames = 25, K = 10, D = 256;
  auto distractors = sample_distractors(full_mask(rows, frames), K);
  auto targets = torch::randn({rows, frames, D});  // distinct, nearly orthogonal
  auto codes = codes_of(targets);
  auto out = info_nce(targets, targets, codes, distractors, 0.1);
  CHECK(out.count.item<double>() == rows * frames);
  CHECK(out.accuracy.item<double>() == 1.0);
  CHECK(out.loss.item<double>() >= 0);
  CHECK(out.loss.item<double>() < 0.01);
  // Same value as the double-precision reference.
  auto manual = manual_frames(targets, targets, distractors, 0.1);
  CHECK(out.loss.item<double>() == Approx(manual.loss).margin(1e-5));
  // Scaling the context does not change a cosine.
  CHECK(info_nce(targets * 7.5, targets, codes, distractors, 0.1).loss.item<double>() ==
        Approx(out.loss.item<double>()).margin(1e-6));
  // A larger kappa flattens the logits: the perfect predictor is less sure.
  CHECK(info_nce(targets, targets, codes, distractors, 1.0).loss.item<double>() > 10 * out.loss.item<double>());
}

TEST_CASE("w2v_bert info_nce: unrelated vectors give about log(K + 1) and chance accuracy", "[w2v_bert][contrastive]") {
  torch::manual_seed(2);
  // 1000 frames in 10 rows, D = 2048: cosines of independent Gaussian vectors are N(0, 1/D), so the
  // logits are N(0, s^2) with s^2 = 1 / (D kappa^2) ~ 0.05, and E[loss] ~ log(K + 1) + s^2 / 2.
  const std::int64_t rows = 10, frames = 100, K = 9, D = 2048;
  const double kappa = 0.1;
  auto distractors = sample_distractors(full_mask(rows, frames), K);
  auto context = torch::randn({rows, frames, D});
  auto targets = torch::randn({rows, frames, D});
  auto out = info_nce(context, targets, codes_of(targets), distractors, kappa);
  const double s2 = 1.0 / (static_cast<double>(D) * kappa * kappa);
  CHECK(out.count.item<double>() == rows * frames);
  CHECK(out.loss.item<double>() == Approx(std::log(K + 1.0) + s2 / 2).margin(0.04));
  CHECK(out.loss.item<double>() == Approx(std::log(K + 1.0)).margin(0.06));
  // Chance: 1 / (K + 1) = 0.1, with a standard error of about 0.01 over 1000 frames.
  CHECK(out.accuracy.item<double>() == Approx(1.0 / (K + 1)).margin(0.035));

  // K = 100 (w2v-BERT's value) on fewer, narrower frames: log(101) ~ 4.6.
  auto few = sample_distractors(full_mask(2, 100), 100);
  auto c2 = torch::randn({2, 100, 1024}), q2 = torch::randn({2, 100, 1024});
  auto out2 = info_nce(c2, q2, codes_of(q2), few, kappa);
  CHECK(out2.loss.item<double>() == Approx(std::log(101.0) + 1.0 / (1024 * kappa * kappa) / 2).margin(0.1));
  CHECK(out2.accuracy.item<double>() < 0.05);
}

TEST_CASE("w2v_bert info_nce in the frame layout: the loss, accuracy and gradients of the packed formulation and by hand",
          "[w2v_bert][contrastive]") {
  torch::manual_seed(11);
  // Rows of 7, 1 (no distractors), 0 and 12 masked frames, with some codes picked twice.
  auto mask = torch::zeros({4, 20}, torch::kBool);
  mask[0].narrow(0, 2, 7).fill_(true);
  mask[1][5] = true;
  mask[3].narrow(0, 0, 12).fill_(true);
  auto distractors = sample_distractors(mask, 5);
  auto targets = torch::randn({4, 20, 6});
  targets[0][4] = targets[0][2];
  targets[3][1] = targets[3][7];
  auto context = torch::randn({4, 20, 6});
  const double kappa = 0.3;
  auto codes = codes_of(targets);

  auto c = context.clone().requires_grad_(true), q = targets.clone().requires_grad_(true);
  auto out = info_nce(c, q, codes, distractors, kappa);
  out.loss.backward();
  const auto manual = manual_frames(context, targets, distractors, kappa);
  REQUIRE(manual.count == 19);
  CHECK(out.count.item<double>() == manual.count);
  CHECK(out.loss.item<double>() == Approx(manual.loss).epsilon(1e-5));
  CHECK(out.accuracy.item<double>() == Approx(manual.accuracy));

  // The gradients of the direct, packed formulation, at the packed frames; zero everywhere else.
  auto [pc, pq, pidx] = pack(context, targets, distractors);
  pc.requires_grad_(true), pq.requires_grad_(true);
  auto reference = gathered_loss(pc, pq, pidx, kappa);
  reference.backward();
  CHECK(out.loss.item<double>() == Approx(reference.item<double>()).epsilon(1e-5));
  auto keep = (distractors >= 0).all(2);
  CHECK(torch::allclose(c.grad().index({keep}), pc.grad(), 1e-4, 1e-6));
  CHECK(torch::allclose(q.grad().index({keep}), pq.grad(), 1e-4, 1e-6));
  CHECK(c.grad().index({~keep}).abs().sum().item<double>() == 0.0);
  CHECK(q.grad().index({~keep}).abs().sum().item<double>() == 0.0);
  CHECK(c.grad().abs().sum().item<double>() > 0);

  // The whole-T form that other devices run (no count read back) gives the same values and gradients.
  auto c_t = context.clone().requires_grad_(true), q_t = targets.clone().requires_grad_(true);
  auto whole = info_nce(c_t, q_t, codes, distractors, kappa, /*compact_on_cpu=*/false);
  whole.loss.backward();
  CHECK(whole.loss.item<double>() == Approx(out.loss.item<double>()).epsilon(1e-6));
  CHECK(whole.accuracy.item<double>() == out.accuracy.item<double>());
  CHECK(whole.chance.item<double>() == Approx(out.chance.item<double>()).epsilon(1e-6));
  CHECK(whole.count.item<double>() == out.count.item<double>());
  CHECK(torch::allclose(c_t.grad(), c.grad(), 1e-5, 1e-7));
  CHECK(torch::allclose(q_t.grad(), q.grad(), 1e-5, 1e-7));

  // Shapes that disagree are refused, naming them; so is K = 0.
  CHECK_THROWS_WITH(info_nce(context, targets, codes, distractors.narrow(1, 0, 10), kappa), Contains("(B, T, K)"));
  CHECK_THROWS_AS(info_nce(context.view({80, 6}), targets.view({80, 6}), codes, distractors, kappa), std::invalid_argument);
  CHECK_THROWS_AS(info_nce(context, targets, codes, distractors.narrow(2, 0, 0), kappa), std::invalid_argument);
  CHECK_THROWS_AS(info_nce(context, targets, codes, distractors, 0.0), std::invalid_argument);
  // No masked frame at all.
  auto none = sample_distractors(torch::zeros({2, 6}, torch::kBool), 5);
  auto empty = info_nce(torch::randn({2, 6, 3}), torch::randn({2, 6, 3}), torch::zeros({2, 6, 1}, torch::kLong), none, kappa);
  CHECK(empty.count.item<double>() == 0);
  CHECK(empty.loss.item<double>() == 0.0);
}

TEST_CASE("w2v_bert info_nce matches the formula by hand, leaving out duplicates and unusable frames",
          "[w2v_bert][contrastive]") {
  torch::manual_seed(3);
  // Six frames of one row; frames 0 and 1 picked the same code (equal targets), frame 5 has no
  // distractors (and, as in the plugin, nobody draws it).
  auto targets = torch::randn({1, 6, 6});
  targets[0][1] = targets[0][0];
  auto codes = torch::tensor({0, 0, 2, 3, 4, 5}, torch::kLong).view({1, 6, 1});
  auto context = torch::randn({1, 6, 6});
  auto distractors =
      torch::tensor({1, 2, 3, /**/ 0, 2, 2, /**/ 0, 1, 3, /**/ 0, 2, 4, /**/ 1, 2, 3, /**/ -1, -1, -1}, torch::kLong)
          .reshape({1, 6, 3});
  const double kappa = 0.5;
  auto out = info_nce(context, targets, codes, distractors, kappa);
  auto manual = manual_frames(context, targets, distractors, kappa);
  REQUIRE(manual.count == 5);
  CHECK(out.count.item<double>() == 5);
  CHECK(out.loss.item<double>() == Approx(manual.loss).epsilon(1e-5));
  CHECK(out.accuracy.item<double>() == Approx(manual.accuracy));

  // By hand, frame by frame: a distractor with the target's code is left out of the softmax; counting it
  // as a negative gives another loss, which the check can tell apart.
  auto cosine = [&](std::int64_t i, std::int64_t j) {
    auto c = torch::nn::functional::normalize(context[0][i], torch::nn::functional::NormalizeFuncOptions().dim(0));
    auto q = torch::nn::functional::normalize(targets[0][j], torch::nn::functional::NormalizeFuncOptions().dim(0));
    return (c * q).sum().item<double>() / kappa;
  };
  double without_duplicates = 0, with_duplicates = 0, chance = 0;
  for (std::int64_t i = 0; i < 5; ++i) {
    const double positive = cosine(i, i);
    double kept = std::exp(positive), all = std::exp(positive);
    int distinct = 0;
    for (std::int64_t k = 0; k < 3; ++k) {
      const auto j = distractors[0][i][k].item<std::int64_t>();
      all += std::exp(cosine(i, j));
      if (codes[0][j][0].item<std::int64_t>() == codes[0][i][0].item<std::int64_t>()) continue;
      kept += std::exp(cosine(i, j));
      ++distinct;
    }
    without_duplicates += (std::log(kept) - positive) / 5;
    with_duplicates += (std::log(all) - positive) / 5;
    chance += 1.0 / (1 + distinct) / 5;
  }
  CHECK(out.loss.item<double>() == Approx(without_duplicates).epsilon(1e-5));
  CHECK(std::abs(out.loss.item<double>() - with_duplicates) > 0.05);
  // Chance is 1 / (1 + distinct distractors), averaged over the counted frames.
  CHECK(out.chance.item<double>() == Approx(chance).epsilon(1e-6));

  // Every distractor a duplicate (a collapsed codebook): nothing to tell apart, so the frames are not
  // counted, rather than scored as a perfect pick.
  auto dup = torch::full({1, 6, 3}, -1, torch::kLong);
  dup[0][0] = torch::tensor({1, 1, 1}, torch::kLong);
  dup[0][1] = torch::tensor({0, 0, 0}, torch::kLong);
  auto outd = info_nce(context, targets, codes, dup, kappa);
  CHECK(outd.count.item<double>() == 0);
  CHECK(outd.loss.item<double>() == Approx(0.0).margin(1e-6));
  CHECK(outd.accuracy.item<double>() == 0.0);

  // No usable frame at all: count 0, and loss and accuracy 0 rather than NaN.
  auto none = info_nce(context, targets, codes, torch::full({1, 6, 3}, -1, torch::kLong), kappa);
  CHECK(none.count.item<double>() == 0);
  CHECK(none.loss.item<double>() == 0.0);
  CHECK(none.accuracy.item<double>() == 0.0);
}

TEST_CASE("w2v_bert info_nce: a row alone and beside a longer one, whatever its padding holds", "[w2v_bert][padding]") {
  torch::manual_seed(4);
  const std::int64_t D = 8, K = 4;
  // Row a: 12 frames, 6 masked. Row b: 30 frames, 15 masked.
  auto ca = torch::randn({1, 12, D}), qa = torch::randn({1, 12, D});
  auto cb = torch::randn({1, 30, D}), qb = torch::randn({1, 30, D});
  auto ma = torch::zeros({1, 12}, torch::kBool), mb = torch::zeros({1, 30}, torch::kBool);
  ma.narrow(1, 3, 6).fill_(true);
  mb.narrow(1, 10, 15).fill_(true);
  auto da = sample_distractors(ma, K), db = sample_distractors(mb, K);
  auto alone_a = info_nce(ca, qa, codes_of(qa), da, 0.2);
  auto alone_b = info_nce(cb, qb, codes_of(qb), db, 0.2);
  // Row a padded to 30 frames with NaN, beside row b, in one batch.
  auto nan = std::numeric_limits<float>::quiet_NaN();
  auto c = torch::cat({torch::cat({ca, torch::full({1, 18, D}, nan)}, 1), cb}).requires_grad_(true);
  auto q = torch::cat({torch::cat({qa, torch::full({1, 18, D}, nan)}, 1), qb}).requires_grad_(true);
  auto codes = torch::cat({torch::cat({codes_of(qa), torch::full({1, 18, 1}, -5, torch::kLong)}, 1), codes_of(qb) + 100});
  auto d = torch::cat({torch::cat({da, torch::full({1, 18, K}, -1, torch::kLong)}, 1), db});
  auto both = info_nce(c, q, codes, d, 0.2);
  const double na = alone_a.count.item<double>(), nb = alone_b.count.item<double>();
  CHECK(both.count.item<double>() == na + nb);
  CHECK(both.loss.item<double>() ==
        Approx((na * alone_a.loss.item<double>() + nb * alone_b.loss.item<double>()) / (na + nb)).epsilon(1e-5));
  both.loss.backward();
  // The whole-T form (other devices) reads the NaN rows into its matrix too, zeroed: the same loss.
  CHECK(info_nce(c.detach(), q.detach(), codes, d, 0.2, /*compact_on_cpu=*/false).loss.item<double>() ==
        Approx(both.loss.item<double>()).epsilon(1e-6));
  CHECK(torch::isfinite(c.grad()).all().item<bool>());
  CHECK(torch::isfinite(q.grad()).all().item<bool>());
  CHECK(c.grad()[0].narrow(0, 12, 18).abs().sum().item<double>() == 0.0);
}

TEST_CASE("w2v_bert info_nce: the gradient reaches context and targets, and only through counted frames",
          "[w2v_bert][contrastive]") {
  torch::manual_seed(4);
  auto context = torch::randn({1, 4, 5}).requires_grad_();
  auto targets = torch::randn({1, 4, 5}).requires_grad_();
  // Frames 0-2 use each other; frame 3 has no distractors.
  auto distractors = torch::tensor({1, 2, /**/ 0, 2, /**/ 0, 1, /**/ -1, -1}, torch::kLong).reshape({1, 4, 2});
  auto out = info_nce(context, targets, codes_of(targets), distractors, 0.1);
  out.loss.backward();
  CHECK(context.grad()[0][0].abs().sum().item<double>() > 0);
  CHECK(targets.grad()[0][0].abs().sum().item<double>() > 0);
  CHECK(context.grad()[0][3].abs().sum().item<double>() == 0.0);  // frame 3 does not count
  CHECK(targets.grad()[0][3].abs().sum().item<double>() == 0.0);  // and is nobody's distractor
  CHECK_FALSE(out.accuracy.requires_grad());
}

TEST_CASE("w2v_bert sample_distractors: other masked frames of the same row only", "[w2v_bert][contrastive]") {
  // Row 0: frames 1, 2, 5, 6, 7 masked; row 1: frame 3 only; row 2: none; row 3: frames 0 and 9.
  auto mask = torch::zeros({4, 10}, torch::kBool);
  for (int t : {1, 2, 5, 6, 7}) mask[0][t] = true;
  mask[1][3] = true;
  mask[3][0] = true;
  mask[3][9] = true;
  const std::int64_t K = 200;
  torch::manual_seed(5);
  auto d = sample_distractors(mask, K);
  REQUIRE(d.sizes() == torch::IntArrayRef({4, 10, K}));
  CHECK(d.dtype() == torch::kInt64);
  CHECK(d.device() == mask.device());

  // Every other masked frame of row 0 is drawn (K = 200 of 4 choices), and nothing else.
  const std::vector<std::int64_t> row0 = {1, 2, 5, 6, 7};
  for (auto i : row0) {
    INFO("frame " << i);
    auto draws = d[0][i];
    CHECK_FALSE((draws == i).any().item<bool>());
    std::int64_t in_row = 0;
    for (auto j : row0) {
      in_row += (draws == j).sum().item<std::int64_t>();
      if (j != i) CHECK((draws == j).any().item<bool>());
    }
    CHECK(in_row == K);
  }
  // Unmasked frames, the row with one masked frame and the empty row draw nothing.
  for (std::int64_t t : {0, 3, 4, 8, 9}) CHECK((d[0][t] == -1).all().item<bool>());
  CHECK((d[1] == -1).all().item<bool>());
  CHECK((d[2] == -1).all().item<bool>());
  // Row 3: each of frames 0 and 9 can only draw the other.
  CHECK((d[3][0] == 9).all().item<bool>());
  CHECK((d[3][9] == 0).all().item<bool>());

  // Uniform over the other frames: over the five frames of row 0 (1000 draws) each is drawn about 200 times.
  auto counts = torch::bincount(d[0].index({mask[0]}).reshape({-1}), {}, 10);
  for (auto j : row0) CHECK(counts[j].item<double>() == Approx(200).margin(40));

  // The same seed of torch's generator gives the same draws.
  torch::manual_seed(9);
  auto first = sample_distractors(mask, 7);
  torch::manual_seed(9);
  CHECK(torch::equal(first, sample_distractors(mask, 7)));

  // Frames of a row with one masked frame do not count in the loss.
  auto q = torch::randn({4, 10, 4});
  auto out = info_nce(q, q, codes_of(q), d, 0.1);
  CHECK(out.count.item<double>() == 7);
  CHECK(out.accuracy.item<double>() == 1.0);

  CHECK_THROWS_AS(sample_distractors(torch::zeros({5}, torch::kBool), 3), std::invalid_argument);
  CHECK_THROWS_AS(sample_distractors(mask, -1), std::invalid_argument);
  CHECK_THROWS_AS(sample_distractors(mask, 0), std::invalid_argument);
}

TEST_CASE("w2v_bert perplexity_and_diversity: G V for uniform use, G for collapse", "[w2v_bert][quantizer]") {
  const std::int64_t G = 2, V = 4;
  const double GV = G * V;
  SECTION("uniform probabilities") {
    auto [perplexity, diversity] = QuantizerImpl::perplexity_and_diversity(torch::full({5, G, V}, 1.0 / V));
    CHECK(perplexity.item<double>() == Approx(GV).epsilon(1e-5));
    CHECK(diversity.item<double>() == Approx(0.0).margin(1e-5));
  }
  SECTION("one-hot codes spread evenly over all entries") {
    auto codes = torch::zeros({8, G}, torch::kLong);
    for (std::int64_t n = 0; n < 8; ++n) {
      codes[n][0] = n % V;
      codes[n][1] = (n + 1) % V;
    }
    auto [perplexity, diversity] = QuantizerImpl::perplexity_and_diversity(torch::one_hot(codes, V).to(torch::kFloat32));
    CHECK(perplexity.item<double>() == Approx(GV).epsilon(1e-5));
    CHECK(diversity.item<double>() == Approx(0.0).margin(1e-5));
  }
  SECTION("collapse onto one entry per codebook") {
    auto codes = torch::zeros({8, G}, torch::kLong);
    codes.select(1, 1).fill_(3);  // codebook 1 collapses onto another entry, same measure
    auto [perplexity, diversity] = QuantizerImpl::perplexity_and_diversity(torch::one_hot(codes, V).to(torch::kFloat32));
    CHECK(perplexity.item<double>() == Approx(G).epsilon(1e-5));
    CHECK(diversity.item<double>() == Approx((GV - G) / GV).epsilon(1e-5));  // 0.75
    // w2v-BERT's size (V = 1024, here with G = 2): collapse costs nearly 1.
    auto big = torch::zeros({6, 2, 1024});
    big.select(2, 17).fill_(1.0);
    auto [p_big, d_big] = QuantizerImpl::perplexity_and_diversity(big);
    CHECK(p_big.item<double>() == Approx(2.0).epsilon(1e-4));
    CHECK(d_big.item<double>() == Approx((2048.0 - 2.0) / 2048.0).epsilon(1e-5));
    CHECK(d_big.item<double>() > 0.99);
  }
  SECTION("one codebook uniform, the other collapsed: V + 1") {
    auto probs = torch::zeros({3, G, V});
    probs.select(1, 0).fill_(1.0 / V);
    probs.select(1, 1).select(1, 2).fill_(1.0);
    auto [perplexity, diversity] = QuantizerImpl::perplexity_and_diversity(probs);
    CHECK(perplexity.item<double>() == Approx(V + 1.0).epsilon(1e-5));
    CHECK(diversity.item<double>() == Approx((GV - V - 1) / GV).epsilon(1e-5));
  }
  SECTION("two entries used half the time each: perplexity 2 per codebook") {
    auto codes = torch::tensor({0, 1, 0, 1, 1, 0, 1, 0}, torch::kLong).reshape({4, 2});
    auto [perplexity, diversity] = QuantizerImpl::perplexity_and_diversity(torch::one_hot(codes, V).to(torch::kFloat32));
    CHECK(perplexity.item<double>() == Approx(4.0).epsilon(1e-5));
    CHECK(diversity.item<double>() == Approx(0.5).epsilon(1e-5));
  }
}

TEST_CASE("w2v_bert quantizer: hard one-hot codebook rows in training, argmax codes", "[w2v_bert][quantizer]") {
  torch::manual_seed(6);
  const std::int64_t B = 2, T = 50, Din = 5, G = 2, V = 8, code_dim = 6, d = code_dim / G;
  Quantizer q(Din, G, V, code_dim);
  REQUIRE(q->is_training());
  CHECK(q->codebook.sizes() == torch::IntArrayRef({G, V, d}));
  CHECK(q->logits->weight.sizes() == torch::IntArrayRef({G * V, Din}));
  auto x = torch::randn({B, T, Din});
  auto valid = torch::ones({B, T}, torch::kBool);
  auto out = q->forward(x, valid, 2.0);
  REQUIRE(out.quantized.sizes() == torch::IntArrayRef({B, T, code_dim}));
  REQUIRE(out.codes.sizes() == torch::IntArrayRef({B, T, G}));
  CHECK(out.codes.dtype() == torch::kInt64);
  CHECK_FALSE(out.codes.requires_grad());

  torch::Tensor z;
  {
    torch::NoGradGuard no_grad;
    z = q->logits(x).view({B, T, G, V});
  }
  CHECK(torch::equal(out.codes, z.argmax(-1)));

  // Each group's slice of the quantized vector is exactly one codebook row (straight-through adds and
  // subtracts the soft sample, so equality is up to rounding).
  auto slices = out.quantized.detach().view({B, T, G, 1, d});
  auto distance = (slices - q->codebook.detach().view({1, 1, G, V, d})).abs().amax(-1);  // (B, T, G, V)
  CHECK((distance.amin(-1) < 1e-5).all().item<bool>());
  CHECK(((distance < 1e-5).sum(-1) == 1).all().item<bool>());
  // The Gumbel noise picks other entries than the argmax for some frames, in training only.
  auto picked = distance.argmin(-1);
  CHECK((picked != out.codes).any().item<bool>());
  // sampled_codes are exactly the entries the quantized vectors were built from: the masked-prediction
  // target of mlm_target = "sampled", the same codes the contrastive loss's targets are.
  CHECK(torch::equal(out.sampled_codes, picked));
  CHECK_FALSE(out.sampled_codes.requires_grad());
  q->eval();
  auto evaluated = q->forward(x, valid, 2.0);
  CHECK(torch::equal(evaluated.sampled_codes, evaluated.codes));  // no noise in evaluation
  q->train();

  // The straight-through estimator gives the logits a gradient from the quantized vector.
  out.quantized.sum().backward();
  REQUIRE(q->logits->weight.grad().defined());
  CHECK(q->logits->weight.grad().abs().sum().item<double>() > 0);
  CHECK(q->codebook.grad().abs().sum().item<double>() > 0);
}

TEST_CASE("w2v_bert quantizer: eval mode is deterministic and agrees with code_ids", "[w2v_bert][quantizer]") {
  torch::manual_seed(7);
  const std::int64_t B = 3, T = 20, Din = 5, G = 2, V = 8, code_dim = 6, d = code_dim / G;
  Quantizer q(Din, G, V, code_dim);
  q->eval();
  auto x = torch::randn({B, T, Din});
  auto valid = torch::ones({B, T}, torch::kBool);
  auto a = q->forward(x, valid, 2.0);
  auto b = q->forward(x, valid, 0.5);
  CHECK(torch::equal(a.quantized, b.quantized));
  CHECK(torch::equal(a.codes, b.codes));
  // The quantized vector is the codebook rows of the argmax codes.
  for (std::int64_t g = 0; g < G; ++g) {
    auto rows = q->codebook[g].index({a.codes.select(-1, g)});  // (B, T, d)
    CHECK(torch::allclose(a.quantized.narrow(-1, g * d, d), rows, 0, 1e-6));
  }
  auto ids = q->code_ids(x);
  CHECK(ids.sizes() == torch::IntArrayRef({B, T, G}));
  CHECK(ids.dtype() == torch::kInt64);
  CHECK_FALSE(ids.requires_grad());
  CHECK(torch::equal(ids, a.codes));
  // Training mode's codes are the same argmax.
  q->train();
  CHECK(torch::equal(q->forward(x, valid, 2.0).codes, a.codes));
  CHECK(torch::equal(q->code_ids(x), a.codes));
}

TEST_CASE("w2v_bert quantizer: perplexities over the valid frames only", "[w2v_bert][quantizer]") {
  torch::manual_seed(8);
  const std::int64_t B = 2, T = 12, Din = 4, G = 2, V = 5;
  Quantizer q(Din, G, V, 4);
  auto x = torch::randn({B, T, Din});
  auto valid = ~padding_mask(torch::tensor({12, 7}, torch::kLong), T);
  auto out = q->forward(x, valid, 1.0);
  torch::NoGradGuard no_grad;
  auto z = q->logits(x).view({B, T, G, V});
  auto [p, div] = QuantizerImpl::perplexity_and_diversity(torch::softmax(z, -1).index({valid}));
  CHECK(out.perplexity.item<double>() == Approx(p.item<double>()).epsilon(1e-5));
  CHECK(out.diversity.item<double>() == Approx(div.item<double>()).epsilon(1e-5));
  CHECK(out.diversity.item<double>() == Approx((G * V - out.perplexity.item<double>()) / (G * V)).epsilon(1e-5));
  auto hard = torch::one_hot(z.argmax(-1).index({valid}), V).to(torch::kFloat32);
  CHECK(out.usage_perplexity.item<double>() ==
        Approx(QuantizerImpl::perplexity_and_diversity(hard).first.item<double>()).epsilon(1e-5));
  // Changing a padded frame's features changes nothing.
  auto x2 = x.clone();
  x2[1][10] = torch::full({Din}, 50.0);
  auto out2 = q->forward(x2, valid, 1.0);
  CHECK(out2.perplexity.item<double>() == Approx(out.perplexity.item<double>()).epsilon(1e-6));
  CHECK(out2.usage_perplexity.item<double>() == Approx(out.usage_perplexity.item<double>()).epsilon(1e-6));
  // Perplexity of the soft average lies between G and G V.
  CHECK(out.perplexity.item<double>() >= G - 1e-4);
  CHECK(out.perplexity.item<double>() <= G * V + 1e-4);

  CHECK_THROWS_AS(Quantizer(4, 2, 5, 5), std::invalid_argument);  // code_dim not divisible by G
  CHECK_THROWS_AS(Quantizer(4, 1, 1, 4), std::invalid_argument);  // a single entry
}
