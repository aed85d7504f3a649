// The w2v_bert loss plugin (w2v-BERT pre-training, Chung et al. 2021, as SLAM/mSLAM use it): its
// contrastive helpers (sample_distractors, info_nce) and Gumbel quantizer compiled into the test and
// checked directly, then the plugin loaded through the registry and run on the tiny joint model of
// joint_fixture.h.
#include <torch/types.h>
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
#include "joint_fixture.h"
#include "quantizer.h"
#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/masking.h"
#include "workbench/registry.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

using namespace workbench;
using namespace workbench::testing;
using namespace workbench::w2v_bert;
using Catch::Matchers::Contains;

namespace {

constexpr std::int64_t kF = 6, kDs = 8, kD = 12;

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

// ---------------------------------------------------------------------------------------------------
// Helpers for the plugin.

Options w2v_options(const std::map<std::string, OptionValue>& overrides = {}) {
  Options o("objectives.w2v_bert");
  const auto* plugin = builtin_registry().find(PluginKind::Loss, "w2v_bert");
  REQUIRE(plugin != nullptr);
  for (const auto& spec : plugin->descriptor.options.specs()) o.set(spec.name, spec.default_value, "default");
  for (const auto& [name, value] : overrides) o.set(name, value, "test");
  return o;
}

/// Small codebooks so that the tiny model's losses stay cheap: 2 x 16 entries of 4 channels each.
std::map<std::string, OptionValue> small_codebooks(std::map<std::string, OptionValue> extra = {}) {
  std::map<std::string, OptionValue> o = {{"codebooks", std::int64_t{2}},
                                          {"codebook_entries", std::int64_t{16}},
                                          {"code_dim", std::int64_t{8}},
                                          {"distractors", std::int64_t{10}}};
  for (auto& [k, v] : extra) o[k] = v;
  return o;
}

std::shared_ptr<const Vocabulary> speech_vocabulary() {
  return std::make_shared<const Vocabulary>(Vocabulary::from_texts({"abc"}));
}

std::shared_ptr<Loss> make_w2v(const std::map<std::string, OptionValue>& overrides = small_codebooks(),
                               std::uint64_t seed = 1) {
  return builtin_registry().create_as<Loss>(PluginKind::Loss, "w2v_bert", w2v_options(overrides),
                                            tiny_loss_context(kDs, kD, speech_vocabulary(), seed));
}

ModelParts w2v_model() { return tiny_joint_model(kF, kDs, kD, speech_vocabulary()->size()); }

Batch speech_batch(const std::vector<std::int64_t>& frames, BatchKind kind = BatchKind::Speech) {
  std::vector<std::string> texts(frames.size(), "abcab");
  return make_batch(kind, frames, kF, texts, *speech_vocabulary());
}

bool has_parameter(torch::nn::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters())
    if (p.key() == name) return true;
  return false;
}

/// Expected share of masked frames for span masking with start probability p and span s (spans cut at
/// the row's end): frame t is covered unless none of the min(t + 1, s) frames that could start a span
/// over it did.
double expected_coverage(const std::vector<std::int64_t>& lengths, double p, std::int64_t s) {
  double covered = 0, total = 0;
  for (auto n : lengths) {
    for (std::int64_t t = 0; t < n; ++t) covered += 1 - std::pow(1 - p, static_cast<double>(std::min(t + 1, s)));
    total += static_cast<double>(n);
  }
  return covered / total;
}

}  // namespace

// =====================================================================================================
// info_nce

TEST_CASE("w2v_bert info_nce: a perfect predictor has loss near 0 and accuracy 1", "[w2v_bert][contrastive]") {
  torch::manual_seed(1);
  std::mt19937_64 rng(1);
  const std::int64_t rows = 4, frames = 25, K = 10, D = 256;
  auto distractors = sample_distractors(full_mask(rows, frames), K, rng);
  auto targets = torch::randn({rows * frames, D});  // distinct, nearly orthogonal
  auto out = info_nce(targets, targets, distractors, 0.1);
  CHECK(out.count.item<double>() == rows * frames);
  CHECK(out.accuracy.item<double>() == 1.0);
  CHECK(out.loss.item<double>() >= 0);
  CHECK(out.loss.item<double>() < 0.01);
  // Same value as the double-precision reference.
  auto manual = manual_info_nce(targets, targets, distractors, 0.1);
  CHECK(out.loss.item<double>() == Approx(manual.loss).margin(1e-5));
  // Scaling the context does not change a cosine.
  CHECK(info_nce(targets * 7.5, targets, distractors, 0.1).loss.item<double>() == Approx(out.loss.item<double>()).margin(1e-6));
  // A larger kappa flattens the logits: the perfect predictor is less sure.
  CHECK(info_nce(targets, targets, distractors, 1.0).loss.item<double>() > 10 * out.loss.item<double>());
}

TEST_CASE("w2v_bert info_nce: unrelated vectors give about log(K + 1) and chance accuracy", "[w2v_bert][contrastive]") {
  torch::manual_seed(2);
  std::mt19937_64 rng(2);
  // 1000 frames in 10 rows, D = 2048: cosines of independent Gaussian vectors are N(0, 1/D), so the
  // logits are N(0, s^2) with s^2 = 1 / (D kappa^2) ~ 0.05, and E[loss] ~ log(K + 1) + s^2 / 2.
  const std::int64_t rows = 10, frames = 100, K = 9, D = 2048;
  const double kappa = 0.1;
  auto distractors = sample_distractors(full_mask(rows, frames), K, rng);
  auto context = torch::randn({rows * frames, D});
  auto targets = torch::randn({rows * frames, D});
  auto out = info_nce(context, targets, distractors, kappa);
  const double s2 = 1.0 / (static_cast<double>(D) * kappa * kappa);
  CHECK(out.count.item<double>() == rows * frames);
  CHECK(out.loss.item<double>() == Approx(std::log(K + 1.0) + s2 / 2).margin(0.04));
  CHECK(out.loss.item<double>() == Approx(std::log(K + 1.0)).margin(0.06));
  // Chance: 1 / (K + 1) = 0.1, with a standard error of about 0.01 over 1000 frames.
  CHECK(out.accuracy.item<double>() == Approx(1.0 / (K + 1)).margin(0.035));

  // K = 100 (w2v-BERT's value) on fewer, narrower frames: log(101) ~ 4.6.
  auto few = sample_distractors(full_mask(2, 100), 100, rng);
  auto c2 = torch::randn({200, 1024}), q2 = torch::randn({200, 1024});
  auto out2 = info_nce(c2, q2, few, kappa);
  CHECK(out2.loss.item<double>() == Approx(std::log(101.0) + 1.0 / (1024 * kappa * kappa) / 2).margin(0.1));
  CHECK(out2.accuracy.item<double>() < 0.05);
}

TEST_CASE("w2v_bert info_nce by blocks: the same loss, accuracy, chance and gradients as over one block and by hand",
          "[w2v_bert][contrastive]") {
  torch::manual_seed(11);
  std::mt19937_64 rng(5);
  // Rows of 7, 1 (no distractors), 0 and 12 masked frames, with some codes picked twice.
  auto mask = torch::zeros({4, 20}, torch::kBool);
  mask[0].narrow(0, 2, 7).fill_(true);
  mask[1][5] = true;
  mask[3].narrow(0, 0, 12).fill_(true);
  const auto rows = masked_per_row(mask);
  REQUIRE(rows == std::vector<std::int64_t>{7, 1, 0, 12});
  auto distractors = sample_distractors(mask, 5, rng);
  auto targets = torch::randn({20, 6});
  targets[3] = targets[1];
  targets[10] = targets[11];
  auto context = torch::randn({20, 6});
  const double kappa = 0.3;

  auto run = [&](const std::vector<std::int64_t>& blocks) {
    auto c = context.clone().requires_grad_(true), q = targets.clone().requires_grad_(true);
    auto out = info_nce(c, q, distractors, kappa, blocks);
    out.loss.backward();
    return std::make_tuple(out, c.grad(), q.grad());
  };
  auto [blocked, c_grad, q_grad] = run(rows);
  auto [whole, c_grad1, q_grad1] = run({});
  const auto manual = manual_info_nce(context, targets, distractors, kappa);
  CHECK(blocked.count.item<double>() == manual.count);
  CHECK(blocked.loss.item<double>() == Approx(manual.loss).epsilon(1e-5));
  CHECK(blocked.accuracy.item<double>() == Approx(manual.accuracy));
  CHECK(blocked.loss.item<double>() == Approx(whole.loss.item<double>()).epsilon(1e-6));
  CHECK(blocked.chance.item<double>() == Approx(whole.chance.item<double>()).epsilon(1e-6));
  CHECK(torch::allclose(c_grad, c_grad1, 1e-5, 1e-7));
  CHECK(torch::allclose(q_grad, q_grad1, 1e-5, 1e-7));
  CHECK(c_grad.abs().sum().item<double>() > 0);
  // Blocks that do not cover the frames are refused.
  CHECK_THROWS_WITH(info_nce(context, targets, distractors, kappa, {7, 1}), Contains("sum to 8, not to the 20"));
  // No masked frame at all.
  auto empty = info_nce(torch::zeros({0, 6}), torch::zeros({0, 6}), torch::zeros({0, 5}, torch::kLong), kappa, {0, 0});
  CHECK(empty.count.item<double>() == 0);
  CHECK(empty.loss.item<double>() == 0.0);
}

TEST_CASE("w2v_bert info_nce matches the formula by hand, leaving out duplicates and unusable frames",
          "[w2v_bert][contrastive]") {
  torch::manual_seed(3);
  // Five frames; frames 0 and 1 picked the same code (equal targets), frame 4 has no distractors.
  auto targets = torch::randn({5, 6});
  targets[1] = targets[0];
  auto context = torch::randn({5, 6});
  auto distractors = torch::tensor({1, 2, 3, /**/ 0, 2, 2, /**/ 0, 1, 3, /**/ 0, 2, 4, /**/ -1, -1, -1}, torch::kLong)
                         .reshape({5, 3});
  const double kappa = 0.5;
  auto out = info_nce(context, targets, distractors, kappa);
  auto manual = manual_info_nce(context, targets, distractors, kappa);
  REQUIRE(manual.count == 4);
  CHECK(out.count.item<double>() == 4);
  CHECK(out.loss.item<double>() == Approx(manual.loss).epsilon(1e-5));
  CHECK(out.accuracy.item<double>() == Approx(manual.accuracy));

  // Frame 0 alone, by hand: its distractors are frame 1 (its own vector: excluded), frames 2 and 3.
  auto cosine = [&](std::int64_t i, std::int64_t j) {
    auto c = torch::nn::functional::normalize(context[i], torch::nn::functional::NormalizeFuncOptions().dim(0));
    auto q = torch::nn::functional::normalize(targets[j], torch::nn::functional::NormalizeFuncOptions().dim(0));
    return (c * q).sum().item<double>() / kappa;
  };
  const double l0 = cosine(0, 0), l2 = cosine(0, 2), l3 = cosine(0, 3);
  const double without_duplicate = std::log(std::exp(l0) + std::exp(l2) + std::exp(l3)) - l0;
  const double with_duplicate = std::log(2 * std::exp(l0) + std::exp(l2) + std::exp(l3)) - l0;
  auto only0 = torch::full({5, 3}, -1, torch::kLong);
  only0[0] = distractors[0];
  auto out0 = info_nce(context, targets, only0, kappa);
  CHECK(out0.count.item<double>() == 1);
  CHECK(out0.loss.item<double>() == Approx(without_duplicate).epsilon(1e-5));
  CHECK(std::abs(out0.loss.item<double>() - with_duplicate) > 0.1);  // the check can tell the two apart

  // Every distractor a duplicate (a collapsed codebook): nothing to tell apart, so the frame is not
  // counted, rather than scored as a perfect pick.
  auto dup = torch::full({5, 3}, -1, torch::kLong);
  dup[0] = torch::tensor({1, 1, 1}, torch::kLong);
  auto outd = info_nce(context, targets, dup, kappa);
  CHECK(outd.count.item<double>() == 0);
  CHECK(outd.loss.item<double>() == Approx(0.0).margin(1e-6));
  CHECK(outd.accuracy.item<double>() == 0.0);
  // Chance is 1 / (1 + distinct distractors): frame 0 of `only0` has two distinct ones.
  CHECK(out0.chance.item<double>() == Approx(1.0 / 3.0));

  // No usable frame at all: count 0, and loss and accuracy 0 rather than NaN.
  auto none = info_nce(context, targets, torch::full({5, 3}, -1, torch::kLong), kappa);
  CHECK(none.count.item<double>() == 0);
  CHECK(none.loss.item<double>() == 0.0);
  CHECK(none.accuracy.item<double>() == 0.0);
}

TEST_CASE("w2v_bert info_nce: the gradient reaches context and targets, and only through counted frames",
          "[w2v_bert][contrastive]") {
  torch::manual_seed(4);
  auto context = torch::randn({4, 5}).requires_grad_();
  auto targets = torch::randn({4, 5}).requires_grad_();
  // Frames 0-2 use each other; frame 3 has no distractors.
  auto distractors = torch::tensor({1, 2, /**/ 0, 2, /**/ 0, 1, /**/ -1, -1}, torch::kLong).reshape({4, 2});
  auto out = info_nce(context, targets, distractors, 0.1);
  out.loss.backward();
  CHECK(context.grad()[0].abs().sum().item<double>() > 0);
  CHECK(targets.grad()[0].abs().sum().item<double>() > 0);
  CHECK(context.grad()[3].abs().sum().item<double>() == 0.0);  // frame 3 does not count
  CHECK(targets.grad()[3].abs().sum().item<double>() == 0.0);  // and is nobody's distractor
  CHECK_FALSE(out.accuracy.requires_grad());
}

// =====================================================================================================
// sample_distractors

TEST_CASE("w2v_bert sample_distractors: other masked frames of the same row only", "[w2v_bert][contrastive]") {
  // Row 0: frames 1, 2, 5, 6, 7 masked; row 1: frame 3 only; row 2: none; row 3: frames 0 and 9.
  auto mask = torch::zeros({4, 10}, torch::kBool);
  for (int t : {1, 2, 5, 6, 7}) mask[0][t] = true;
  mask[1][3] = true;
  mask[3][0] = true;
  mask[3][9] = true;
  const std::int64_t K = 200;
  std::mt19937_64 rng(5);
  auto d = sample_distractors(mask, K, rng);
  REQUIRE(d.dim() == 2);
  REQUIRE(d.size(0) == 8);  // M = 5 + 1 + 0 + 2, row-major
  REQUIRE(d.size(1) == K);
  CHECK(d.dtype() == torch::kInt64);
  CHECK(d.device().is_cpu());

  // Row 0 owns masked indices [0, 5); every other frame of the row is drawn (K = 200 of 4 choices).
  for (std::int64_t i = 0; i < 5; ++i) {
    INFO("frame " << i);
    auto row = d[i];
    CHECK((row >= 0).all().item<bool>());
    CHECK((row < 5).all().item<bool>());
    CHECK_FALSE((row == i).any().item<bool>());
    for (std::int64_t j = 0; j < 5; ++j)
      if (j != i) CHECK((row == j).any().item<bool>());
  }
  // Row 1's single masked frame has nothing to draw from.
  CHECK((d[5] == -1).all().item<bool>());
  // Row 3 (indices 6, 7): each can only draw the other.
  CHECK((d[6] == 7).all().item<bool>());
  CHECK((d[7] == 6).all().item<bool>());

  // Uniform over the other frames: each of the 4 choices about 1/4 of frame 0's 200 draws... over all
  // five frames of row 0 (1000 draws) each index is drawn about 200 times.
  auto counts = torch::bincount(d.narrow(0, 0, 5).reshape({-1}), {}, 5);
  for (std::int64_t j = 0; j < 5; ++j) CHECK(counts[j].item<double>() == Approx(200).margin(40));

  // The same seed gives the same draws.
  std::mt19937_64 a(9), b(9);
  CHECK(torch::equal(sample_distractors(mask, 7, a), sample_distractors(mask, 7, b)));

  // Frames of a row with one masked frame do not count in the loss.
  auto q = torch::randn({8, 4});
  auto out = info_nce(q, q, d, 0.1);
  CHECK(out.count.item<double>() == 7);
  CHECK(out.accuracy.item<double>() == 1.0);

  // A mask without any masked frame gives an empty (0, K) table.
  auto empty = sample_distractors(torch::zeros({2, 5}, torch::kBool), 3, rng);
  CHECK(empty.size(0) == 0);
  CHECK(empty.size(1) == 3);
}

// =====================================================================================================
// Quantizer

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

TEST_CASE("w2v_bert: the scale of the random mask vectors is taken over valid frames only", "[w2v_bert][padding]") {
  torch::manual_seed(8);
  auto row = torch::randn({1, 20, 6}) * 2.5 + 0.3;
  const auto alone = valid_std(row, torch::ones({1, 20}, torch::kBool)).item<double>();
  // The same row beside a longer one, padded with zeros: the zeros must not shrink the scale, and the
  // other row's frames count as they are.
  auto padded = torch::cat({row, torch::zeros({1, 60, 6})}, 1);
  auto valid = torch::zeros({1, 80}, torch::kBool);
  valid.narrow(1, 0, 20).fill_(true);
  CHECK(valid_std(padded, valid).item<double>() == Approx(alone).epsilon(1e-6));
  CHECK(padded.std().item<double>() < 0.7 * alone);  // what the old, unmasked scale gave
  CHECK(valid_std(padded, torch::zeros({1, 80}, torch::kBool)).item<double>() == 1.0);
}

TEST_CASE("w2v_bert: mlm_target chooses the sampled (default, fairseq2) or the argmax codes", "[w2v_bert]") {
  const auto* plugin = builtin_registry().find(PluginKind::Loss, "w2v_bert");
  REQUIRE(plugin != nullptr);
  const auto* spec = plugin->descriptor.options.find("mlm_target");
  REQUIRE(spec != nullptr);
  CHECK(std::get<std::string>(spec->default_value) == "sampled");
  // Same seeds, same masks, same Gumbel noise: in training the two targets differ on the frames where the
  // sample is not the argmax, so the masked-prediction losses differ; in evaluation there is no noise and
  // they agree.
  auto model = w2v_model();
  auto batch = speech_batch({60, 48});
  auto mlm_loss = [&](const std::string& target, bool training) {
    torch::manual_seed(20);  // the same initial weights for both
    auto loss = make_w2v(small_codebooks({{"mlm_target", target}}));
    loss->module()->train(training);
    torch::manual_seed(21);
    torch::NoGradGuard no_grad;
    return metric(loss->compute(batch, model, StepInfo{0, 0}), "mlm_loss");
  };
  CHECK(mlm_loss("sampled", true) != Approx(mlm_loss("argmax", true)).epsilon(1e-6));
  CHECK(mlm_loss("sampled", false) == Approx(mlm_loss("argmax", false)).epsilon(1e-6));
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

// =====================================================================================================
// The plugin

TEST_CASE("w2v_bert: the Gumbel temperature anneals by the factor per step and floors at gumbel_end",
          "[w2v_bert]") {
  torch::manual_seed(9);
  auto model = w2v_model();
  auto batch = speech_batch({40, 30});
  auto temperature_at = [&](Loss& loss, std::int64_t step) {
    torch::NoGradGuard no_grad;
    return metric(loss.compute(batch, model, StepInfo{step, 0}), "gumbel_temperature");
  };
  auto defaults = make_w2v();  // 2.0 -> 0.5 by 0.999995
  CHECK(temperature_at(*defaults, 0) == Approx(2.0));
  // The metric is a float32 scalar: 7 significant digits.
  CHECK(temperature_at(*defaults, 1) == Approx(2.0 * 0.999995).epsilon(1e-7));
  CHECK(temperature_at(*defaults, 1) < 2.0);
  CHECK(temperature_at(*defaults, 10000) == Approx(2.0 * std::pow(0.999995, 10000)).epsilon(1e-6));
  CHECK(temperature_at(*defaults, 10000) == Approx(1.9025).margin(1e-4));
  // 2 * 0.999995^n reaches 0.5 at n = ln 4 / -ln 0.999995 ~ 277,258.
  CHECK(temperature_at(*defaults, 270000) > 0.5);
  CHECK(temperature_at(*defaults, 300000) == Approx(0.5));
  CHECK(temperature_at(*defaults, 1000000) == Approx(0.5));

  auto fast = make_w2v(small_codebooks({{"gumbel_decay", 0.5}, {"gumbel_end", 0.1}, {"gumbel_start", 1.6}}));
  CHECK(temperature_at(*fast, 0) == Approx(1.6));
  CHECK(temperature_at(*fast, 1) == Approx(0.8));
  CHECK(temperature_at(*fast, 3) == Approx(0.2));
  CHECK(temperature_at(*fast, 4) == Approx(0.1));
  CHECK(temperature_at(*fast, 5) == Approx(0.1));
  CHECK(temperature_at(*fast, 50) == Approx(0.1));
}

TEST_CASE("w2v_bert: built through the registry, reports every metric, trains the speech path", "[w2v_bert]") {
  torch::manual_seed(10);
  auto model = w2v_model();
  auto loss = make_w2v();
  CHECK((loss->accepts() == std::vector<BatchKind>{BatchKind::Speech, BatchKind::Paired}));
  REQUIRE(loss->module() != nullptr);
  CHECK(parameter(*loss->module(), "quantizer.logits.weight").sizes() == torch::IntArrayRef({2 * 16, kDs}));
  CHECK(parameter(*loss->module(), "quantizer.codebook").sizes() == torch::IntArrayRef({2, 16, 4}));
  CHECK(parameter(*loss->module(), "project.weight").sizes() == torch::IntArrayRef({8, kDs}));
  CHECK(parameter(*loss->module(), "mlm.weight").sizes() == torch::IntArrayRef({2 * 16, kD}));

  auto batch = speech_batch({100, 80, 120});
  auto out = loss->compute(batch, model, StepInfo{});
  CHECK(metric_names(out) == std::vector<std::string>{"loss", "contrastive_loss", "contrastive_accuracy",
                                                      "contrastive_chance", "contrastive_frames", "mlm_loss",
                                                      "mlm_accuracy", "mlm_majority_accuracy", "code_perplexity", "code_usage_perplexity",
                                                      "diversity_loss", "gumbel_temperature", "mask_rate"});
  for (const auto& [name, value] : out.metrics) {
    INFO(name);
    CHECK_FALSE(value.requires_grad());
    CHECK(value.numel() == 1);
    CHECK(std::isfinite(value.item<double>()));
  }
  const double total = out.loss.item<double>();
  REQUIRE(std::isfinite(total));
  CHECK(out.loss.requires_grad());
  CHECK(metric(out, "loss") == Approx(total));
  // Weights 1 / 0.1 / 1.
  CHECK(total == Approx(metric(out, "contrastive_loss") + 0.1 * metric(out, "diversity_loss") + metric(out, "mlm_loss"))
                     .epsilon(1e-5));
  // At initialisation: the contrastive loss is at most a few nats around log(K + 1), the masked
  // prediction near log(V) (16 entries per codebook).
  CHECK(metric(out, "contrastive_loss") > 0);
  CHECK(metric(out, "contrastive_loss") < 3 * std::log(11.0));
  CHECK(metric(out, "mlm_loss") == Approx(std::log(16.0)).epsilon(0.5));
  for (const std::string name : {"contrastive_accuracy", "mlm_accuracy", "mask_rate"}) {
    INFO(name);
    CHECK(metric(out, name) >= 0);
    CHECK(metric(out, name) <= 1);
  }
  // Perplexities lie in [G, G V] = [2, 32]; the diversity loss is (G V - perplexity) / (G V).
  for (const std::string name : {"code_perplexity", "code_usage_perplexity"}) {
    INFO(name);
    CHECK(metric(out, name) >= 2 - 1e-4);
    CHECK(metric(out, name) <= 32 + 1e-4);
  }
  CHECK(metric(out, "diversity_loss") == Approx((32 - metric(out, "code_perplexity")) / 32).margin(1e-5));
  CHECK(metric(out, "gumbel_temperature") == Approx(2.0));
  CHECK(metric(out, "mask_rate") > 0.3);
  CHECK(metric(out, "mask_rate") < 0.7);

  zero_gradients(model, *loss);
  out.loss.backward();
  auto trained = parameters_with_gradient(model, *loss);
  for (const std::string name :
       {"speech_encoder.frontend.weight", "speech_encoder.frontend.bias", "speech_encoder.context.weight",
        "shared_encoder.projection.weight", "shared_encoder.layer.weight", "modality_embedding.table.weight",
        "loss.quantizer.logits.weight", "loss.quantizer.codebook", "loss.project.weight", "loss.project.bias",
        "loss.mlm.weight", "loss.mlm.bias"}) {
    INFO(name);
    CHECK(has(trained, name));
  }
  for (const auto& name : trained) {
    INFO(name);
    CHECK(name.rfind("text_embedding.", 0) == std::string::npos);
  }
  // Only the speech row of the modality embedding is used.
  auto modality_grad = model.modality->table->weight.grad();
  CHECK(modality_grad[0].abs().sum().item<double>() > 0);
  CHECK(modality_grad[1].abs().sum().item<double>() == 0.0);
}

TEST_CASE("w2v_bert: each weight moves its own term, and the learned mask embedding trains", "[w2v_bert]") {
  torch::manual_seed(11);
  auto model = w2v_model();
  auto batch = speech_batch({90, 70});
  auto weighted = make_w2v(small_codebooks({{"contrastive_weight", 0.5}, {"diversity_weight", 2.0}, {"mlm_weight", 0.25}}));
  auto out = weighted->compute(batch, model, StepInfo{});
  CHECK(out.loss.item<double>() == Approx(0.5 * metric(out, "contrastive_loss") + 2.0 * metric(out, "diversity_loss") +
                                          0.25 * metric(out, "mlm_loss"))
                                       .epsilon(1e-5));
  // mlm_weight = 0: no gradient reaches the masked-prediction head or the shared encoder.
  auto no_mlm = make_w2v(small_codebooks({{"mlm_weight", 0.0}}));
  auto out0 = no_mlm->compute(batch, model, StepInfo{});
  zero_gradients(model, *no_mlm);
  out0.loss.backward();
  auto trained0 = parameters_with_gradient(model, *no_mlm);
  CHECK(has(trained0, "loss.project.weight"));
  CHECK_FALSE(has(trained0, "loss.mlm.weight"));
  CHECK_FALSE(has(trained0, "shared_encoder.layer.weight"));

  // The random-vector replacement (the paper) has no mask embedding; Meta's learned one is trained.
  CHECK_FALSE(has_parameter(*make_w2v()->module(), "mask_embedding"));
  auto learned = make_w2v(small_codebooks({{"mask_replacement", std::string("learned")}}));
  auto mask_embedding = parameter(*learned->module(), "mask_embedding");
  CHECK(mask_embedding.sizes() == torch::IntArrayRef({kDs}));
  auto out1 = learned->compute(batch, model, StepInfo{});
  CHECK(std::isfinite(out1.loss.item<double>()));
  zero_gradients(model, *learned);
  out1.loss.backward();
  CHECK(has(parameters_with_gradient(model, *learned), "loss.mask_embedding"));
}

TEST_CASE("w2v_bert masks about 49% of the frames, never padding", "[w2v_bert][masking]") {
  torch::manual_seed(12);
  auto model = w2v_model();
  const std::vector<std::int64_t> frames = {100, 80, 120, 60};
  auto batch = speech_batch(frames);
  auto loss = make_w2v();
  torch::NoGradGuard no_grad;
  double sum = 0;
  // One draw's rate has a standard deviation of about 0.076 (few, long spans), so 200 draws give a
  // standard error of about 0.005.
  const int draws = 200;
  for (int i = 0; i < draws; ++i) sum += metric(loss->compute(batch, model, StepInfo{}), "mask_rate");
  const double rate = sum / draws;
  // 1 - 0.935^10 = 0.489 inside a row; less over a row's first nine frames (0.468 for these rows).
  CHECK(rate == Approx(expected_coverage(frames, 0.065, 10)).margin(0.02));
  CHECK(rate == Approx(0.49).margin(0.04));

  // mask_prob 0: each row of at least 10 frames still gets one span of 10 (a contrastive task needs
  // masked frames), exactly.
  auto minimal = make_w2v(small_codebooks({{"mask_prob", 0.0}}));
  auto out = minimal->compute(speech_batch({100, 50, 30}), model, StepInfo{});
  CHECK(metric(out, "mask_rate") == Approx(30.0 / 180.0));
  // mask_prob 1: every valid frame, and the rate is over valid frames only.
  auto everything = make_w2v(small_codebooks({{"mask_prob", 1.0}}));
  auto all = everything->compute(speech_batch({100, 50, 30}), model, StepInfo{});
  CHECK(metric(all, "mask_rate") == Approx(1.0));
  CHECK(std::isfinite(all.loss.item<double>()));
  // Span length 1 with p = 0.3: about 30%.
  auto single = make_w2v(small_codebooks({{"mask_prob", 0.3}, {"mask_span", std::int64_t{1}}}));
  double s = 0;
  for (int i = 0; i < draws; ++i) s += metric(single->compute(batch, model, StepInfo{}), "mask_rate");
  CHECK(s / draws == Approx(0.3).margin(0.02));
}

TEST_CASE("w2v_bert is a SpeechCodeProvider of its quantizer's argmax codes", "[w2v_bert]") {
  torch::manual_seed(13);
  auto model = w2v_model();
  auto loss = make_w2v(small_codebooks({{"codebooks", std::int64_t{4}}, {"codebook_entries", std::int64_t{8}}}));
  auto* provider = dynamic_cast<SpeechCodeProvider*>(loss.get());
  REQUIRE(provider != nullptr);
  CHECK(provider->groups() == 4);
  CHECK(provider->entries() == 8);

  auto batch = speech_batch({30, 20});
  auto features = model.speech_encoder->embed(batch.features, batch.feature_lengths).x;
  REQUIRE(features.requires_grad());
  auto ids = provider->code_ids(features);
  REQUIRE(ids.sizes() == torch::IntArrayRef({2, 30, 4}));
  CHECK(ids.dtype() == torch::kInt64);
  CHECK_FALSE(ids.requires_grad());
  CHECK((ids >= 0).all().item<bool>());
  CHECK((ids < 8).all().item<bool>());
  // The argmax of the quantizer's Linear, per codebook.
  torch::NoGradGuard no_grad;
  auto W = parameter(*loss->module(), "quantizer.logits.weight");
  auto b = parameter(*loss->module(), "quantizer.logits.bias");
  auto expected = (torch::matmul(features, W.t()) + b).view({2, 30, 4, 8}).argmax(-1);
  CHECK(torch::equal(ids, expected));
  // The defaults: one codebook of 1024 entries, as w2v-BERT.
  auto defaults = builtin_registry().create_as<Loss>(PluginKind::Loss, "w2v_bert", w2v_options(),
                                                     tiny_loss_context(kDs, kD, speech_vocabulary()));
  auto* p2 = dynamic_cast<SpeechCodeProvider*>(defaults.get());
  REQUIRE(p2 != nullptr);
  CHECK(p2->groups() == 1);
  CHECK(p2->entries() == 1024);
  CHECK(p2->code_ids(features).sizes() == torch::IntArrayRef({2, 30, 1}));
}

TEST_CASE("w2v_bert accepts paired batches and ignores their transcripts", "[w2v_bert]") {
  torch::manual_seed(14);
  auto model = w2v_model();
  auto loss = make_w2v();
  auto batch = speech_batch({70, 90}, BatchKind::Paired);
  auto out = loss->compute(batch, model, StepInfo{});
  CHECK(std::isfinite(out.loss.item<double>()));
  zero_gradients(model, *loss);
  out.loss.backward();
  auto trained = parameters_with_gradient(model, *loss);
  CHECK(has(trained, "speech_encoder.context.weight"));
  CHECK_FALSE(has(trained, "text_embedding.table.weight"));
}

TEST_CASE("w2v_bert refuses a model or options it cannot work with", "[w2v_bert][errors]") {
  auto batch = speech_batch({60, 40});
  SECTION("no shared encoder") {
    auto model = w2v_model();
    model.shared_encoder.reset();
    auto loss = make_w2v();
    try {
      loss->compute(batch, model, StepInfo{});
      FAIL("no error without a shared encoder");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("w2v_bert") && Contains("shared_encoder"));
    }
  }
  SECTION("no speech encoder") {
    auto model = w2v_model();
    model.speech_encoder.reset();
    auto loss = make_w2v();
    try {
      loss->compute(batch, model, StepInfo{});
      FAIL("no error without a speech encoder");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("w2v_bert") && Contains("speech_encoder"));
    }
  }
  SECTION("code_dim not divisible by codebooks") {
    try {
      make_w2v(small_codebooks({{"codebooks", std::int64_t{3}}, {"code_dim", std::int64_t{8}}}));
      FAIL("no error for code_dim 8 over 3 codebooks");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("objectives.w2v_bert") && Contains("code_dim") && Contains("codebooks"));
    }
    // code_dim 0 takes the speech encoder's width (8): 3 codebooks do not divide it either.
    CHECK_THROWS_AS(make_w2v(small_codebooks({{"codebooks", std::int64_t{3}}, {"code_dim", std::int64_t{0}}})),
                    ConfigError);
    CHECK_NOTHROW(make_w2v(small_codebooks({{"codebooks", std::int64_t{4}}, {"code_dim", std::int64_t{0}}})));
  }
  SECTION("gumbel_end above gumbel_start") {
    try {
      make_w2v(small_codebooks({{"gumbel_end", 3.0}, {"gumbel_start", 2.0}}));
      FAIL("no error for gumbel_end > gumbel_start");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("objectives.w2v_bert") && Contains("gumbel_end"));
    }
    CHECK_NOTHROW(make_w2v(small_codebooks({{"gumbel_end", 2.0}, {"gumbel_start", 2.0}})));
  }
}
