// The ctc loss plugin, loaded through the registry, checked against CTC values worked out by hand.
//
// Set-up: the vocabulary has one character, 'a', so V = 3 (0 = blank, 1 = unknown, 2 = 'a'); the model
// dimension is 3, the head's Linear is set to the identity with zero bias, and the speech encoder is a
// pass-through defined here. So the logits are exactly the features we feed in.
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "workbench/encoder.h"
#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/registry.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

using namespace workbench;
using Catch::Matchers::Contains;

namespace {

constexpr std::int64_t kBlank = 0, kA = 2;

/// A speech "encoder" that returns its input unchanged, at full frame rate.
class PassThroughEncoder final : public Encoder {
 public:
  explicit PassThroughEncoder(std::int64_t dim) : dim_(dim) {}
  torch::nn::Module& module() override { return module_; }
  std::int64_t output_dim() const override { return dim_; }
  EncoderOutput embed(const torch::Tensor& features, const torch::Tensor& lengths) override {
    return {features, lengths};
  }
  EncoderOutput encode(const EncoderOutput& embedded) override { return embedded; }

 private:
  torch::nn::Module module_;
  std::int64_t dim_;
};

const Registry& registry() {
  static const Registry* r = [] {
    auto* reg = new Registry();
    reg->load_directory(Registry::builtin_plugin_dir());
    return reg;
  }();
  return *r;
}

Options ctc_options(double dropout = 0.0) {
  Options o("objectives.ctc");
  o.set("dropout", dropout, "test");
  o.set("layer", std::string("auto"), "test");
  return o;
}

std::shared_ptr<const Vocabulary> vocab_a() {
  return std::make_shared<const Vocabulary>(Vocabulary::from_texts({"a", "aaa"}));
}

/// The ctc loss with an identity head (logits = features).
std::shared_ptr<Loss> make_ctc(std::shared_ptr<const Vocabulary> vocabulary = vocab_a()) {
  BuildContext ctx;
  ctx.model_dim = 3;
  ctx.vocabulary = std::move(vocabulary);
  auto loss = registry().create_as<Loss>(PluginKind::Loss, "ctc", ctc_options(), ctx);
  REQUIRE(loss->module() != nullptr);
  torch::NoGradGuard no_grad;
  bool weight = false, bias = false;
  for (auto& p : loss->module()->named_parameters()) {
    if (p.key() == "project.weight") {
      REQUIRE(p.value().sizes() == torch::IntArrayRef({3, 3}));
      p.value().copy_(torch::eye(3));
      weight = true;
    } else if (p.key() == "project.bias") {
      REQUIRE(p.value().sizes() == torch::IntArrayRef({3}));
      p.value().zero_();
      bias = true;
    }
  }
  REQUIRE(weight);
  REQUIRE(bias);
  return loss;
}

ModelParts pass_through_model() {
  ModelParts m;
  m.speech_encoder = std::make_shared<PassThroughEncoder>(3);
  return m;
}

/// A paired batch: `logits` (B, T, 3) as features, per-row frame counts and targets.
Batch make_batch(const torch::Tensor& logits, const std::vector<std::int64_t>& frames,
                 const std::vector<std::vector<std::int64_t>>& targets) {
  Batch b;
  b.kind = BatchKind::Paired;
  b.features = logits.to(torch::kFloat32);
  b.feature_lengths = torch::tensor(frames, torch::kInt64);
  std::size_t max_len = 1;
  for (const auto& t : targets) max_len = std::max(max_len, t.size());
  b.tokens = torch::zeros({static_cast<std::int64_t>(targets.size()), static_cast<std::int64_t>(max_len)}, torch::kInt64);
  std::vector<std::int64_t> lengths;
  for (std::size_t r = 0; r < targets.size(); ++r) {
    for (std::size_t i = 0; i < targets[r].size(); ++i)
      b.tokens[static_cast<std::int64_t>(r)][static_cast<std::int64_t>(i)] = targets[r][i];
    lengths.push_back(static_cast<std::int64_t>(targets[r].size()));
    b.ids.push_back("u" + std::to_string(r));
    b.langs.push_back("xx");
    b.texts.push_back(std::string(targets[r].size(), 'a'));
  }
  b.token_lengths = torch::tensor(lengths, torch::kInt64);
  return b;
}

double metric_of(const LossOutput& out, const std::string& name) {
  for (const auto& [k, v] : out.metrics)
    if (k == name) return v.item<double>();
  FAIL("no metric " << name);
  return 0;
}

double loss_of(Loss& loss, const Batch& batch) {
  ModelParts model = pass_through_model();
  return loss.compute(batch, model, StepInfo{}).loss.item<double>();
}

std::vector<double> softmax(const std::vector<double>& z) {
  double s = 0;
  for (double x : z) s += std::exp(x);
  std::vector<double> p;
  for (double x : z) p.push_back(std::exp(x) / s);
  return p;
}

// Logits of three frames over (blank, unk, a) for the less trivial cases.
const std::vector<std::vector<double>> kLogits = {{1.0, 0.0, 0.5}, {0.2, -1.0, 0.7}, {0.0, 0.3, -0.4}};

torch::Tensor logits_tensor(const std::vector<std::vector<double>>& rows) {
  std::vector<float> flat;
  for (const auto& r : rows)
    for (double x : r) flat.push_back(static_cast<float>(x));
  return torch::tensor(flat).reshape({1, static_cast<std::int64_t>(rows.size()), 3});
}

}  // namespace

TEST_CASE("ctc: two frames of uniform posteriors, target 'a', gives ln 3", "[ctc]") {
  // Paths that collapse to "a": aa, a-, -a, each (1/3)^2; p = 3/9, loss = -ln(1/3).
  auto loss = make_ctc();
  auto batch = make_batch(torch::zeros({1, 2, 3}), {2}, {{kA}});
  CHECK(loss_of(*loss, batch) == Approx(std::log(3.0)).epsilon(1e-5));
  CHECK(loss_of(*loss, batch) == Approx(1.0986).margin(1e-4));
  // Any constant feature vector gives uniform logits too.
  batch.features = torch::full({1, 2, 3}, 2.5);
  CHECK(loss_of(*loss, batch) == Approx(std::log(3.0)).epsilon(1e-5));
}

TEST_CASE("ctc: one frame with p(a) = 1/2 gives ln 2", "[ctc]") {
  // softmax(0, 0, ln 2) = (1/4, 1/4, 1/2).
  auto loss = make_ctc();
  auto logits = torch::tensor({0.0f, 0.0f, static_cast<float>(std::log(2.0))}).reshape({1, 1, 3});
  CHECK(loss_of(*loss, make_batch(logits, {1}, {{kA}})) == Approx(std::log(2.0)).epsilon(1e-5));
}

TEST_CASE("ctc: non-uniform posteriors, two targets, mean over target lengths", "[ctc]") {
  std::vector<double> b, a;  // p_t(blank), p_t(a)
  for (const auto& row : kLogits) {
    auto p = softmax(row);
    b.push_back(p[0]);
    a.push_back(p[2]);
  }
  // Target "a" over 3 frames: the alignments a--, -a-, --a, aa-, -aa, aaa.
  const double p_a = a[0] * b[1] * b[2] + b[0] * a[1] * b[2] + b[0] * b[1] * a[2] + a[0] * a[1] * b[2] +
                     b[0] * a[1] * a[2] + a[0] * a[1] * a[2];
  // Target "aa" over 3 frames: only a-a (a blank must separate the repeated character).
  const double p_aa = a[0] * b[1] * a[2];
  // Same numbers from Python's math module, as a check on the hand formula above.
  CHECK(-std::log(p_a) == Approx(1.1267096050494316).epsilon(1e-12));
  CHECK(-std::log(p_aa) == Approx(3.767362243304498).epsilon(1e-12));

  auto loss = make_ctc();
  auto logits = logits_tensor(kLogits);
  CHECK(loss_of(*loss, make_batch(logits, {3}, {{kA}})) == Approx(-std::log(p_a)).epsilon(1e-5));
  // Reduction "mean" divides each utterance's loss by its target length.
  CHECK(loss_of(*loss, make_batch(logits, {3}, {{kA, kA}})) == Approx(-std::log(p_aa) / 2).epsilon(1e-5));
  // A batch of both: the mean of the two per-utterance values.
  auto both = make_batch(torch::cat({logits, logits}), {3, 3}, {{kA}, {kA, kA}});
  CHECK(loss_of(*loss, both) == Approx((-std::log(p_a) - std::log(p_aa) / 2) / 2).epsilon(1e-5));
  CHECK(loss_of(*loss, both) == Approx(1.5051953633508404).epsilon(1e-5));
}

TEST_CASE("ctc: frames past a row's length are ignored", "[ctc]") {
  auto loss = make_ctc();
  // Row 1 has only the first two frames of kLogits; its third frame is junk that must not matter.
  auto logits = logits_tensor(kLogits);
  auto junk = logits.clone();
  junk[0][2] = torch::tensor({-5.0f, 9.0f, 3.0f});
  const double alone = loss_of(*loss, make_batch(logits.narrow(1, 0, 2), {2}, {{kA}}));
  auto batch = make_batch(torch::cat({logits, junk}), {3, 2}, {{kA}, {kA}});
  const double full = loss_of(*loss, make_batch(logits, {3}, {{kA}}));
  CHECK(loss_of(*loss, batch) == Approx((full + alone) / 2).epsilon(1e-5));
}

TEST_CASE("ctc: an impossible alignment contributes zero, not infinity, and is counted", "[ctc]") {
  // "aa" needs three frames (a, blank, a); with two it is impossible, and zero_infinity makes it 0.
  auto loss = make_ctc();
  CHECK(loss_of(*loss, make_batch(torch::zeros({1, 2, 3}), {2}, {{kA, kA}})) == 0.0);
  // So that a zero is never taken for a perfect fit, the infeasible rows are reported. Rows: "aa" in 2
  // frames (needs 3: infeasible), "aa" in 3 (fits), "au" in 2 (no repeat: fits), "aua" in 2 (needs 3).
  ModelParts model = pass_through_model();
  auto out = loss->compute(make_batch(torch::zeros({4, 3, 3}), {2, 3, 2, 2}, {{kA, kA}, {kA, kA}, {kA, 1}, {kA, 1, kA}}),
                           model, StepInfo{});
  CHECK(metric_of(out, "infeasible_utterances") == 2.0);
  CHECK(metric_of(out, "infeasible_share") == Approx(0.5));
}

TEST_CASE("ctc: the gradient reaches the head's parameters", "[ctc]") {
  auto loss = make_ctc();
  ModelParts model = pass_through_model();
  for (auto& p : loss->module()->parameters()) {
    REQUIRE(p.requires_grad());
    if (p.grad().defined()) p.grad().zero_();
  }
  // Two frames of constant features x = (1, 1, 1): uniform posteriors y = 1/3. The alignment posteriors
  // gamma are (blank 1/3, a 2/3) in both frames, so dL/dz_t = y - gamma = (0, 1/3, -1/3) per frame,
  // dL/dbias = (0, 2/3, -2/3) and dL/dW = sum_t (dL/dz_t) x_t^T = (0, 2/3, -2/3) outer (1, 1, 1).
  auto batch = make_batch(torch::ones({1, 2, 3}), {2}, {{kA}});
  auto out = loss->compute(batch, model, StepInfo{});
  out.loss.backward();
  torch::Tensor weight_grad, bias_grad;
  for (auto& p : loss->module()->named_parameters()) {
    REQUIRE(p.value().grad().defined());
    if (p.key() == "project.weight") weight_grad = p.value().grad();
    if (p.key() == "project.bias") bias_grad = p.value().grad();
  }
  REQUIRE(weight_grad.defined());
  REQUIRE(bias_grad.defined());
  const std::vector<double> expected = {0.0, 2.0 / 3.0, -2.0 / 3.0};
  for (std::int64_t k = 0; k < 3; ++k) {
    INFO("k = " << k);
    CHECK(bias_grad[k].item<double>() == Approx(expected[static_cast<std::size_t>(k)]).margin(1e-5));
    for (std::int64_t j = 0; j < 3; ++j)
      CHECK(weight_grad[k][j].item<double>() == Approx(expected[static_cast<std::size_t>(k)]).margin(1e-5));
  }

  // A less symmetric case against finite differences of the bias.
  for (auto& p : loss->module()->parameters()) p.grad().zero_();
  auto batch3 = make_batch(torch::cat({logits_tensor(kLogits), logits_tensor(kLogits)}), {3, 3}, {{kA}, {kA, kA}});
  loss->compute(batch3, model, StepInfo{}).loss.backward();
  auto analytic = bias_grad.clone();
  CHECK(analytic.abs().sum().item<double>() > 1e-3);
  torch::Tensor bias;
  for (auto& p : loss->module()->named_parameters())
    if (p.key() == "project.bias") bias = p.value();
  const double h = 1e-2;
  for (std::int64_t k = 0; k < 3; ++k) {
    torch::NoGradGuard no_grad;
    bias[k] += h;
    const double up = loss_of(*loss, batch3);
    bias[k] -= 2 * h;
    const double down = loss_of(*loss, batch3);
    bias[k] += h;
    INFO("k = " << k);
    CHECK(analytic[k].item<double>() == Approx((up - down) / (2 * h)).margin(2e-3));
  }
}

TEST_CASE("ctc: metrics are the loss and the blank share", "[ctc]") {
  auto loss = make_ctc();
  ModelParts model = pass_through_model();
  // Frame 0 prefers blank, frame 1 prefers a.
  auto logits = torch::tensor({3.0f, 0.0f, 0.0f, 0.0f, 0.0f, 3.0f}).reshape({1, 2, 3});
  auto out = loss->compute(make_batch(logits, {2}, {{kA}}), model, StepInfo{});
  REQUIRE(out.metrics.size() == 4);
  CHECK(out.metrics[0].first == "loss");
  CHECK(out.metrics[0].second.item<double>() == Approx(out.loss.item<double>()));
  CHECK_FALSE(out.metrics[0].second.requires_grad());
  CHECK(out.metrics[1].first == "blank_rate");
  CHECK(out.metrics[1].second.item<double>() == Approx(0.5));
}

TEST_CASE("ctc is a FramePredictor with per-frame log posteriors", "[ctc]") {
  auto vocabulary = vocab_a();
  auto loss = make_ctc(vocabulary);
  CHECK((loss->accepts() == std::vector<BatchKind>{BatchKind::Paired}));
  auto* predictor = dynamic_cast<FramePredictor*>(loss.get());
  REQUIRE(predictor != nullptr);
  CHECK(&predictor->vocabulary() == vocabulary.get());
  CHECK(predictor->vocabulary().size() == 3);
  CHECK(predictor->vocabulary().symbol(kA) == "a");
  CHECK(predictor->vocabulary().symbol(kBlank) == "<blank>");

  ModelParts model = pass_through_model();
  torch::NoGradGuard no_grad;
  auto features = torch::randn({2, 5, 3});
  auto batch = make_batch(features, {5, 3}, {{kA}, {kA, kA}});
  auto [log_probs, lengths] = predictor->frame_log_probs(batch, model);
  REQUIRE(log_probs.dim() == 3);
  CHECK(log_probs.size(0) == 2);
  CHECK(log_probs.size(1) == 5);
  CHECK(log_probs.size(2) == 3);
  CHECK(lengths.dtype() == torch::kInt64);
  CHECK(torch::equal(lengths, torch::tensor(std::vector<std::int64_t>{5, 3})));
  // Normalised over the vocabulary, and equal to log_softmax of the features (identity head).
  CHECK(torch::allclose(log_probs.exp().sum(-1), torch::ones({2, 5}), 1e-5, 1e-5));
  CHECK(torch::allclose(log_probs, torch::log_softmax(features, -1), 1e-5, 1e-5));
}

TEST_CASE("ctc refuses to be built or run without what it needs", "[ctc][errors]") {
  // No vocabulary: a ConfigError naming the section.
  BuildContext no_vocab;
  no_vocab.model_dim = 3;
  try {
    registry().create(PluginKind::Loss, "ctc", ctc_options(), no_vocab);
    FAIL("no error without a vocabulary");
  } catch (const ConfigError& e) {
    CHECK_THAT(std::string(e.what()), Contains("objectives.ctc") && Contains("vocabulary"));
  }
  // No model dimension: the plugin's std::invalid_argument becomes a PluginError naming ctc and its path.
  BuildContext no_dim;
  no_dim.vocabulary = vocab_a();
  try {
    registry().create(PluginKind::Loss, "ctc", ctc_options(), no_dim);
    FAIL("no error without a model dimension");
  } catch (const PluginError& e) {
    const std::string msg = e.what();
    CHECK_THAT(msg, Contains("'ctc'") && Contains("ctc.so") && Contains("output dimension"));
  }
  // No speech encoder in the model.
  auto loss = make_ctc();
  ModelParts empty;
  auto batch = make_batch(torch::zeros({1, 2, 3}), {2}, {{kA}});
  CHECK_THROWS_AS(loss->compute(batch, empty, StepInfo{}), ConfigError);
  auto* predictor = dynamic_cast<FramePredictor*>(loss.get());
  REQUIRE(predictor != nullptr);
  CHECK_THROWS_AS(predictor->frame_log_probs(batch, empty), ConfigError);
}
