// The w2v_bert loss plugin (w2v-BERT pre-training, Chung et al. 2021, as SLAM/mSLAM use it), loaded
// through the registry and run on the tiny joint model of joint_fixture.h. Its contrastive helpers and
// Gumbel quantizer are checked directly in test_w2v_bert_parts.cpp.
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

#include "joint_fixture.h"
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
// Quantizer

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
