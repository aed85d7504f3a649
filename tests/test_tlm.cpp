// The tlm loss plugin (translation language modelling on paired data, SLAM section 3.3), loaded through the
// registry and run on the tiny joint model of joint_fixture.h; and the masking helpers compiled into it.
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "joint_fixture.h"
#include "test_support.h"
#include "tlm_masking.h"
#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/masking.h"
#include "workbench/registry.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;

namespace {

constexpr std::int64_t kF = 6, kDs = 8, kD = 12;

/// The plugin's declared defaults, then `overrides`: what the core would hand the plugin.
Options tlm_options(const std::map<std::string, OptionValue>& overrides = {}) {
  Options o("objectives.tlm");
  const auto* plugin = builtin_registry().find(PluginKind::Loss, "tlm");
  REQUIRE(plugin != nullptr);
  for (const auto& spec : plugin->descriptor.options.specs()) o.set(spec.name, spec.default_value, "default");
  for (const auto& [name, value] : overrides) o.set(name, value, "test");
  return o;
}

/// A connected TLM. Unless a test names a code provider (and passes the objectives in `connections`), it
/// trains the text side only.
std::shared_ptr<Loss> make_tlm(const std::shared_ptr<const Vocabulary>& vocabulary,
                               const std::map<std::string, OptionValue>& overrides = {}, std::uint64_t seed = 1,
                               const Connections& connections = Connections()) {
  auto o = overrides;
  o.emplace("code_provider", std::string());
  auto loss = builtin_registry().create_as<Loss>(PluginKind::Loss, "tlm", tlm_options(o),
                                                 tiny_loss_context(kDs, kD, vocabulary, seed));
  loss->connect(connections);
  return loss;
}

/// Expected share of masked frames for span masking with start probability p and span s over rows of
/// `lengths`: frame t is covered unless none of the min(t + 1, s) frames that could start a span over it
/// did (spans are cut at the row's end, so the first frames of a row are covered less).
double expected_coverage(const std::vector<std::int64_t>& lengths, double p, std::int64_t s) {
  double covered = 0, total = 0;
  for (auto n : lengths) {
    for (std::int64_t t = 0; t < n; ++t) covered += 1 - std::pow(1 - p, static_cast<double>(std::min(t + 1, s)));
    total += static_cast<double>(n);
  }
  return covered / total;
}

/// A stand-in for w2v-BERT's quantizer: G groups of V entries; group g's id is floor(V * sigmoid(x_g))
/// of feature channel g. Records what it was given.
class FakeCodes final : public Loss, public SpeechCodeProvider {
 public:
  FakeCodes(std::int64_t groups, std::int64_t entries) : g_(groups), v_(entries) {}
  std::vector<BatchKind> accepts() const override { return {BatchKind::Speech}; }
  LossOutput compute(const Batch&, ModelParts&, const StepInfo&) override { throw std::logic_error("not used"); }
  std::int64_t groups() const override { return g_; }
  std::int64_t entries() const override { return v_; }
  torch::Tensor code_ids(const torch::Tensor& features) override {
    seen = features.clone();
    seen_requires_grad = features.requires_grad();
    grad_mode = torch::GradMode::is_enabled();
    ++calls;
    auto ids = torch::floor(torch::sigmoid(features.narrow(-1, 0, g_)) * static_cast<double>(v_));
    return ids.clamp(0, static_cast<double>(v_ - 1)).to(torch::kLong);
  }
  torch::Tensor seen;
  bool seen_requires_grad = true, grad_mode = true;
  int calls = 0;

 private:
  std::int64_t g_, v_;
};

/// An objective without speech codes.
class NotAProvider final : public Loss {
 public:
  std::vector<BatchKind> accepts() const override { return {BatchKind::Paired}; }
  LossOutput compute(const Batch&, ModelParts&, const StepInfo&) override { throw std::logic_error("not used"); }
};

}  // namespace

TEST_CASE("tlm: built through the registry, its speech head sized from the provider at connect", "[tlm]") {
  auto texts = random_texts(4, 12, 1);
  auto vocabulary = vocabulary_of(texts);
  const std::int64_t text_rows = vocabulary->size() + 1;  // + [MASK]

  auto loss = make_tlm(vocabulary);
  CHECK((loss->accepts() == std::vector<BatchKind>{BatchKind::Paired}));
  REQUIRE(loss->module() != nullptr);
  CHECK(parameter(*loss->module(), "text_head.weight").sizes() == torch::IntArrayRef({text_rows, kD}));
  CHECK(loss->module()->named_parameters().find("speech_head.weight") == nullptr);  // text only: no speech head

  FakeCodes codes(2, 4);
  auto small = make_tlm(vocabulary, {{"code_provider", std::string("w2v_bert")}}, 1,
                        Connections({{"w2v_bert", "fake", &codes}}));
  CHECK(parameter(*small->module(), "speech_head.weight").sizes() == torch::IntArrayRef({8, kD}));
  CHECK(parameter(*small->module(), "speech_head.bias").sizes() == torch::IntArrayRef({8}));

  // Without a text embedding the core passes text_vocab_size = 0.
  auto ctx = tiny_loss_context(kDs, kD, vocabulary);
  ctx.text_vocab_size = 0;
  try {
    builtin_registry().create(PluginKind::Loss, "tlm", tlm_options(), ctx);
    FAIL("no error without a text embedding");
  } catch (const ConfigError& e) {
    CHECK_THAT(std::string(e.what()), Contains("objectives.tlm") && Contains("[model.text_embedding]"));
  }
  // A value outside its range, given directly rather than through an experiment file.
  CHECK_THROWS_AS(builtin_registry().create(PluginKind::Loss, "tlm", tlm_options({{"speech_mask_coverage", 1.0}}),
                                            tiny_loss_context(kDs, kD, vocabulary)),
                  ConfigError);
}

TEST_CASE("tlm: speech masking replaces the configured share of frames by random vectors", "[tlm][masking]") {
  torch::manual_seed(3);
  const std::vector<std::int64_t> lengths = {300, 250, 200, 300, 120, 280};
  const std::int64_t B = 6, T = 300, D = 8;
  auto len = torch::tensor(lengths, torch::kLong);
  auto pad = padding_mask(len, T);
  auto features = (torch::randn({B, T, D}) * 3.0 + 1.0).masked_fill(pad.unsqueeze(-1), 0.0);
  const double coverage = 0.75;
  const std::int64_t span = 10;

  double masked = 0, valid = 0;
  std::vector<torch::Tensor> noise;
  for (int draw = 0; draw < 20; ++draw) {
    auto m = tlm::mask_frames_with_noise(features, len, coverage, span);
    REQUIRE(m.mask.sizes() == torch::IntArrayRef({B, T}));
    REQUIRE(m.inputs.sizes() == features.sizes());
    CHECK_FALSE((m.mask & pad).any().item<bool>());
    // Unmasked frames pass unchanged; every channel of a masked frame is replaced.
    auto keep = ~m.mask;
    CHECK(torch::equal(m.inputs.index({keep}), features.index({keep})));
    CHECK((m.inputs.index({m.mask}) != features.index({m.mask})).all().item<bool>());
    noise.push_back(m.inputs.index({m.mask}));
    masked += m.mask.sum().item<double>();
    valid += len.sum().item<double>();
  }
  const double share = masked / valid;
  const double expected = expected_coverage(lengths, start_prob_for_coverage(coverage, span), span);
  CHECK(share == Approx(expected).margin(0.01));
  CHECK(share == Approx(0.75).margin(0.03));  // SLAM: about 75% of speech frames
  // N(0, s^2) with s the standard deviation of the valid features (3 here), not their mean.
  auto all_noise = torch::cat(noise);
  CHECK(all_noise.mean().item<double>() == Approx(0.0).margin(0.05));
  CHECK(all_noise.std().item<double>() == Approx(3.0).epsilon(0.05));

  // A lower coverage masks less, in proportion.
  double low = 0;
  for (int draw = 0; draw < 20; ++draw) low += tlm::mask_frames_with_noise(features, len, 0.3, span).mask.sum().item<double>();
  CHECK(low / valid == Approx(expected_coverage(lengths, start_prob_for_coverage(0.3, span), span)).margin(0.01));

  CHECK_THROWS_AS(tlm::mask_frames_with_noise(features, len, 1.0, span), std::invalid_argument);
  CHECK_THROWS_AS(tlm::mask_frames_with_noise(features, len, 0.5, 0), std::invalid_argument);
}

TEST_CASE("tlm: masks about 50% of text and 75% of speech over many draws", "[tlm]") {
  torch::manual_seed(5);
  auto texts = random_texts(4, 40, 2);
  auto vocabulary = vocabulary_of(texts);
  const std::vector<std::int64_t> frames = {300, 300, 260, 240};
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Paired, frames, kF, texts, *vocabulary);

  auto measure = [&](Loss& loss, int draws) {
    double text = 0, speech = 0;
    torch::NoGradGuard no_grad;
    for (int i = 0; i < draws; ++i) {
      auto out = loss.compute(batch, model, StepInfo{});
      text += metric(out, "text_mask_rate");
      speech += metric(out, "speech_mask_rate");
    }
    return std::make_pair(text / draws, speech / draws);
  };
  auto defaults = make_tlm(vocabulary);
  // 100 draws of 1100 frames: spans make neighbouring frames correlated, and the standard error of the
  // speech share is still about 0.004.
  auto [text, speech] = measure(*defaults, 100);
  CHECK(text == Approx(0.5).margin(0.02));
  CHECK(speech == Approx(expected_coverage(frames, start_prob_for_coverage(0.75, 10), 10)).margin(0.015));
  CHECK(speech == Approx(0.75).margin(0.03));

  auto lighter = make_tlm(vocabulary, {{"text_mask_rate", 0.2}, {"speech_mask_coverage", 0.4}, {"speech_mask_span", std::int64_t{5}}});
  auto [text2, speech2] = measure(*lighter, 100);
  CHECK(text2 == Approx(0.2).margin(0.02));
  CHECK(speech2 == Approx(expected_coverage(frames, start_prob_for_coverage(0.4, 5), 5)).margin(0.015));
}

TEST_CASE("tlm without a code provider predicts the masked text only", "[tlm]") {
  torch::manual_seed(11);
  auto texts = random_texts(3, 15, 3);
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Paired, {20, 14, 9}, kF, texts, *vocabulary);

  for (const std::string provider : {""}) {
    INFO("code_provider = '" << provider << "'");
    auto loss = make_tlm(vocabulary, {{"code_provider", provider}});
    auto out = loss->compute(batch, model, StepInfo{});
    CHECK(metric_names(out) ==
          std::vector<std::string>{"loss", "text_loss", "text_accuracy", "text_mask_rate", "speech_mask_rate"});
    for (const auto& [name, value] : out.metrics) CHECK_FALSE(value.requires_grad());
    const double value = out.loss.item<double>();
    CHECK(std::isfinite(value));
    CHECK(value > 0);
    CHECK(metric(out, "loss") == Approx(value));
    CHECK(metric(out, "text_loss") == Approx(value));
    // At initialisation the prediction is near chance: about ln(vocabulary size).
    CHECK(value == Approx(std::log(static_cast<double>(vocabulary->size() + 1))).epsilon(0.5));

    zero_gradients(model, *loss);
    out.loss.backward();
    auto trained = parameters_with_gradient(model, *loss);
    for (const std::string name : {"speech_encoder.frontend.weight", "speech_encoder.context.weight",
                                   "shared_encoder.projection.weight", "shared_encoder.layer.weight",
                                   "text_embedding.table.weight", "modality_embedding.table.weight",
                                   "loss.text_head.weight", "loss.text_head.bias"}) {
      INFO(name);
      CHECK(has(trained, name));
    }
    CHECK_FALSE(has(trained, "loss.speech_head.weight"));
  }
}

TEST_CASE("tlm: padding and [MASK] are never text targets", "[tlm]") {
  torch::manual_seed(13);
  auto texts = random_texts(3, 17, 4);
  texts[1].resize(6);  // rows of different lengths: padding in rows 1 and 2
  texts[2].resize(11);
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Paired, {12, 10, 8}, kF, texts, *vocabulary);
  // Single-token spans, so that masking every token never runs out of places for the last spans.
  auto loss = make_tlm(vocabulary, {{"code_provider", std::string()},
                                    {"text_mask_rate", 1.0},
                                    {"text_span_p", 1.0},
                                    {"text_max_span", std::int64_t{1}}});
  auto weight = parameter(*loss->module(), "text_head.weight");
  auto bias = parameter(*loss->module(), "text_head.bias");
  {
    torch::NoGradGuard no_grad;
    weight.zero_();
    bias.zero_();
  }
  // With constant logits every class has p = 1/V, so d(loss)/d(bias_k) = 1/V - (share of targets equal
  // to k): exactly 1/V for an id that is never a target.
  const double V = static_cast<double>(vocabulary->size() + 1);
  auto out = loss->compute(batch, model, StepInfo{});
  CHECK(metric(out, "text_mask_rate") == Approx(1.0));  // every valid token, and only those
  CHECK(out.loss.item<double>() == Approx(std::log(V)).epsilon(1e-5));
  zero_gradients(model, *loss);
  out.loss.backward();
  auto g = bias.grad();
  CHECK(g[0].item<double>() == Approx(1.0 / V).epsilon(1e-5));                          // padding
  CHECK(g[vocabulary->size()].item<double>() == Approx(1.0 / V).epsilon(1e-5));         // [MASK]
  CHECK(g.sum().item<double>() == Approx(0.0).margin(1e-5));
  // Every target is one of the 17 + 6 + 11 real tokens: the share of 'a' among them is 1/V - g['a'].
  const auto a = vocabulary->encode("a").front();
  double count_a = 0;
  for (const auto& t : texts) count_a += static_cast<double>(std::count(t.begin(), t.end(), 'a'));
  CHECK(1.0 / V - g[a].item<double>() == Approx(count_a / (17 + 6 + 11)).margin(1e-5));
}

TEST_CASE("tlm predicts a SpeechCodeProvider's codes of the unmasked features", "[tlm]") {
  torch::manual_seed(17);
  auto texts = random_texts(3, 15, 5);
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  FakeCodes codes(2, 4);
  const Connections objectives({{"quantizer", "fake", &codes}});
  auto batch = make_batch(BatchKind::Paired, {30, 24, 18}, kF, texts, *vocabulary);
  auto loss = make_tlm(vocabulary, {{"code_provider", std::string("quantizer")}, {"speech_weight", 0.5}}, 1, objectives);

  auto out = loss->compute(batch, model, StepInfo{});
  CHECK(metric_names(out) == std::vector<std::string>{"loss", "text_loss", "text_accuracy", "speech_loss",
                                                      "speech_accuracy", "text_mask_rate", "speech_mask_rate"});
  const double total = out.loss.item<double>();
  CHECK(std::isfinite(total));
  CHECK(total > 0);
  CHECK(metric(out, "speech_loss") > 0);
  CHECK(metric(out, "speech_accuracy") >= 0);
  CHECK(metric(out, "speech_accuracy") <= 1);
  CHECK(total == Approx(metric(out, "text_loss") + 0.5 * metric(out, "speech_loss")).epsilon(1e-5));

  // The provider saw the speech encoder's unmasked embed() output, detached and outside autograd.
  REQUIRE(codes.calls == 1);
  {
    torch::NoGradGuard no_grad;
    auto expected = model.speech_encoder->embed(batch.features, batch.feature_lengths).x;
    CHECK(torch::allclose(codes.seen, expected, 1e-5, 1e-6));
  }
  CHECK_FALSE(codes.seen_requires_grad);
  CHECK_FALSE(codes.grad_mode);

  zero_gradients(model, *loss);
  out.loss.backward();
  auto trained = parameters_with_gradient(model, *loss);
  for (const std::string name : {"speech_encoder.frontend.weight", "speech_encoder.context.weight",
                                 "shared_encoder.projection.weight", "shared_encoder.layer.weight",
                                 "text_embedding.table.weight", "modality_embedding.table.weight",
                                 "loss.text_head.weight", "loss.speech_head.weight", "loss.speech_head.bias"}) {
    INFO(name);
    CHECK(has(trained, name));
  }

  // speech_weight = 0 leaves the speech loss reported but out of the total.
  auto unweighted =
      make_tlm(vocabulary, {{"code_provider", std::string("quantizer")}, {"speech_weight", 0.0}}, 1, objectives);
  auto out0 = unweighted->compute(batch, model, StepInfo{});
  CHECK(out0.loss.item<double>() == Approx(metric(out0, "text_loss")));
  CHECK(metric(out0, "speech_loss") > 0);
}

TEST_CASE("tlm: a missing or wrong code provider is a ConfigError at connect", "[tlm][errors]") {
  auto texts = random_texts(2, 10, 6);
  auto vocabulary = vocabulary_of(texts);
  FakeCodes codes(2, 4);
  NotAProvider ctc_like;
  const Connections objectives({{"quantizer", "fake", &codes}, {"ctc", "ctc", &ctc_like}});
  // The default provider, w2v_bert, is not among the objectives.
  const std::string missing = error_message<ConfigError>(
      [&] { make_tlm(vocabulary, {{"code_provider", std::string("w2v_bert")}}, 1, objectives); });
  CHECK_THAT(missing, Contains("objectives.tlm") && Contains("speech codes") && Contains("'w2v_bert'") &&
                          Contains("add a w2v_bert objective") && Contains("quantizer, ctc"));
  const std::string wrong = error_message<ConfigError>(
      [&] { make_tlm(vocabulary, {{"code_provider", std::string("ctc")}}, 1, objectives); });
  CHECK_THAT(wrong, Contains("objective 'ctc'") && Contains("gives no speech codes"));
}

TEST_CASE("tlm refuses a model without the parts it needs", "[tlm][errors]") {
  auto texts = random_texts(2, 10, 7);
  auto vocabulary = vocabulary_of(texts);
  auto batch = make_batch(BatchKind::Paired, {12, 9}, kF, texts, *vocabulary);
  auto loss = make_tlm(vocabulary, {{"code_provider", std::string()}});
  struct Case {
    const char* part;
    void (*remove)(ModelParts&);
  };
  for (const Case& c : {Case{"[model.text_embedding]", [](ModelParts& m) { m.text_embedding.reset(); }},
                        Case{"[model.shared_encoder]", [](ModelParts& m) { m.shared_encoder.reset(); }},
                        Case{"[model.speech_encoder]", [](ModelParts& m) { m.speech_encoder.reset(); }}}) {
    INFO(c.part);
    auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
    c.remove(model);
    try {
      loss->compute(batch, model, StepInfo{});
      FAIL("no error");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("tlm") && Contains(c.part));
    }
  }
}

TEST_CASE("tlm: the masks come from torch's generator: the same seed gives the same masks", "[tlm]") {
  auto texts = random_texts(3, 25, 8);
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Paired, {40, 33, 21}, kF, texts, *vocabulary);
  auto loss = make_tlm(vocabulary);
  auto run = [&](std::uint64_t torch_seed) {
    torch::manual_seed(torch_seed);
    std::vector<double> rates;
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 5; ++i) {
      auto out = loss->compute(batch, model, StepInfo{});
      rates.push_back(metric(out, "speech_mask_rate"));
      rates.push_back(metric(out, "text_loss"));
    }
    return rates;
  };
  const auto first = run(1);
  CHECK(run(1) == first);  // the loss keeps no generator of its own: the core's seed decides
  CHECK(run(2) != first);
}
