// The stm loss plugin (speech-text matching on paired data, SLAM section 3.3), loaded through the registry
// and run on the tiny joint model of joint_fixture.h. Its choice of negatives is checked directly in
// test_stm_negatives.cpp.
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "joint_fixture.h"
#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/registry.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;

namespace {

constexpr std::int64_t kF = 6, kDs = 8, kD = 12;

Options stm_options(double negative_rate = 0.5) {
  Options o("objectives.stm");
  o.set("negative_rate", negative_rate, "test");
  return o;
}

std::shared_ptr<Loss> make_stm(const std::shared_ptr<const Vocabulary>& vocabulary, double negative_rate = 0.5,
                               std::uint64_t seed = 1) {
  return builtin_registry().create_as<Loss>(PluginKind::Loss, "stm", stm_options(negative_rate),
                                            tiny_loss_context(kDs, kD, vocabulary, seed));
}

}  // namespace

TEST_CASE("stm: built through the registry, a binary head on the pooled joint output", "[stm]") {
  auto vocabulary = vocabulary_of({"abc", "de"});
  auto loss = make_stm(vocabulary);
  CHECK((loss->accepts() == std::vector<BatchKind>{BatchKind::Paired}));
  REQUIRE(loss->module() != nullptr);
  CHECK(parameter(*loss->module(), "classify.weight").sizes() == torch::IntArrayRef({1, kD}));
  CHECK(parameter(*loss->module(), "classify.bias").sizes() == torch::IntArrayRef({1}));
  CHECK_THROWS_AS(builtin_registry().create(PluginKind::Loss, "stm", stm_options(1.5),
                                            tiny_loss_context(kDs, kD, vocabulary)),
                  ConfigError);
}

TEST_CASE("stm: loss, accuracy and negative rate over batches", "[stm]") {
  torch::manual_seed(19);
  const std::vector<std::string> texts = {"one two", "three", "four five six", "seven", "eight nine", "zero"};
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Paired, {14, 11, 9, 16, 7, 12}, kF, texts, *vocabulary);
  auto loss = make_stm(vocabulary);

  double rate = 0;
  const int draws = 150;
  for (int i = 0; i < draws; ++i) {
    torch::NoGradGuard no_grad;
    auto out = loss->compute(batch, model, StepInfo{});
    REQUIRE(out.metrics.size() == 3);
    CHECK(out.metrics[0].first == "loss");
    CHECK(out.metrics[1].first == "accuracy");
    CHECK(out.metrics[2].first == "negative_rate");
    const double value = out.loss.item<double>();
    CHECK(std::isfinite(value));
    CHECK(value > 0);
    CHECK(metric(out, "loss") == Approx(value));
    const double accuracy = metric(out, "accuracy");
    CHECK(accuracy >= 0);
    CHECK(accuracy <= 1);
    rate += metric(out, "negative_rate");
  }
  CHECK(rate / draws == Approx(0.5).margin(0.04));  // 900 rows: the standard error is about 0.017

  // All transcripts equal: no row can be mismatched, whatever the option says.
  const std::vector<std::string> same(4, "three");
  auto same_batch = make_batch(BatchKind::Paired, {10, 9, 8, 12}, kF, same, *vocabulary);
  auto always = make_stm(vocabulary, 1.0);
  for (int i = 0; i < 5; ++i) {
    torch::NoGradGuard no_grad;
    CHECK(metric(always->compute(same_batch, model, StepInfo{}), "negative_rate") == 0.0);
  }
}

TEST_CASE("stm: label 1 means matched", "[stm]") {
  torch::manual_seed(23);
  const std::vector<std::string> texts = {"one two", "three", "four five six", "seven"};
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Paired, {14, 11, 9, 16}, kF, texts, *vocabulary);
  // A head that says "matched" with logit 5 for every pair: BCE is ln(1 + e^-5) for matched pairs and
  // ln(1 + e^5) for mismatched ones.
  for (double rate : {0.0, 1.0}) {
    INFO("negative_rate = " << rate);
    auto loss = make_stm(vocabulary, rate);
    {
      torch::NoGradGuard no_grad;
      parameter(*loss->module(), "classify.weight").zero_();
      parameter(*loss->module(), "classify.bias").fill_(5.0);
    }
    auto out = loss->compute(batch, model, StepInfo{});
    const bool matched = rate == 0.0;
    CHECK(out.loss.item<double>() == Approx(std::log1p(std::exp(matched ? -5.0 : 5.0))).epsilon(1e-5));
    CHECK(metric(out, "accuracy") == (matched ? 1.0 : 0.0));
    CHECK(metric(out, "negative_rate") == (matched ? 0.0 : 1.0));
  }
}

TEST_CASE("stm: gradients reach the speech encoder, shared encoder, text embedding and head", "[stm]") {
  torch::manual_seed(29);
  const std::vector<std::string> texts = {"one two", "three", "four five six", "seven"};
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Paired, {14, 11, 9, 16}, kF, texts, *vocabulary);
  auto loss = make_stm(vocabulary);
  auto out = loss->compute(batch, model, StepInfo{});
  out.loss.backward();
  auto trained = parameters_with_gradient(model, *loss);
  for (const std::string name :
       {"speech_encoder.frontend.weight", "speech_encoder.context.weight", "shared_encoder.projection.weight",
        "shared_encoder.layer.weight", "text_embedding.table.weight", "modality_embedding.table.weight",
        "loss.classify.weight", "loss.classify.bias"}) {
    INFO(name);
    CHECK(std::find(trained.begin(), trained.end(), name) != trained.end());
  }
}

TEST_CASE("stm refuses a model without the parts it needs", "[stm][errors]") {
  const std::vector<std::string> texts = {"one two", "three"};
  auto vocabulary = vocabulary_of(texts);
  auto batch = make_batch(BatchKind::Paired, {10, 8}, kF, texts, *vocabulary);
  auto loss = make_stm(vocabulary);
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
      CHECK_THAT(std::string(e.what()), Contains("stm") && Contains(c.part));
    }
  }
}
