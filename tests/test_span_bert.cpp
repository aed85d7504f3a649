// The span_bert loss plugin (SpanBERT masked language modelling on text, at the top of the shared
// encoder; SLAM section 3.2, mSLAM figure 1), loaded through the registry and run on the tiny joint model
// of joint_fixture.h.
#include <torch/optim/adam.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <random>
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

Options span_options(const std::map<std::string, OptionValue>& overrides = {}) {
  Options o("objectives.span_bert");
  const auto* plugin = builtin_registry().find(PluginKind::Loss, "span_bert");
  REQUIRE(plugin != nullptr);
  for (const auto& spec : plugin->descriptor.options.specs()) o.set(spec.name, spec.default_value, "default");
  for (const auto& [name, value] : overrides) o.set(name, value, "test");
  return o;
}

std::shared_ptr<Loss> make_span_bert(const std::shared_ptr<const Vocabulary>& vocabulary,
                                     const std::map<std::string, OptionValue>& overrides = {}, std::uint64_t seed = 1) {
  return builtin_registry().create_as<Loss>(PluginKind::Loss, "span_bert", span_options(overrides),
                                            tiny_loss_context(kDs, kD, vocabulary, seed));
}

}  // namespace

TEST_CASE("span_bert: built through the registry with a head over the text vocabulary", "[span_bert]") {
  auto texts = random_texts({20, 30}, 1);
  auto vocabulary = vocabulary_of(texts);
  auto loss = make_span_bert(vocabulary);
  CHECK((loss->accepts() == std::vector<BatchKind>{BatchKind::Text, BatchKind::Paired}));
  REQUIRE(loss->module() != nullptr);
  const std::int64_t rows = vocabulary->size() + 1;  // + [MASK]
  CHECK(parameter(*loss->module(), "project.weight").sizes() == torch::IntArrayRef({rows, kD}));
  CHECK(parameter(*loss->module(), "project.bias").sizes() == torch::IntArrayRef({rows}));
}

TEST_CASE("span_bert selects 15% of each text and reports its metrics", "[span_bert]") {
  torch::manual_seed(2);
  // Budgets round(0.15 n): 6, 9, 3, 12 of 40, 60, 20, 80 tokens, so exactly 30 / 200 per draw.
  auto texts = random_texts({40, 60, 20, 80}, 2);
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Text, {}, kF, texts, *vocabulary);
  auto loss = make_span_bert(vocabulary);
  for (int draw = 0; draw < 5; ++draw) {
    auto out = loss->compute(batch, model, StepInfo{});
    CHECK(metric_names(out) == std::vector<std::string>{"loss", "accuracy", "majority_accuracy", "mask_rate"});
    for (const auto& [name, value] : out.metrics) {
      INFO(name);
      CHECK_FALSE(value.requires_grad());
      CHECK(std::isfinite(value.item<double>()));
    }
    CHECK(metric(out, "mask_rate") == Approx(0.15));
    const double value = out.loss.item<double>();
    CHECK(metric(out, "loss") == Approx(value));
    // Near chance at initialisation: about ln(V + 1).
    CHECK(value == Approx(std::log(static_cast<double>(vocabulary->size() + 1))).epsilon(0.5));
    for (const std::string name : {"accuracy", "majority_accuracy"}) {
      INFO(name);
      CHECK(metric(out, name) >= 0);
      CHECK(metric(out, name) <= 1);
    }
    // 30 targets over 10 letters: the most frequent one is at least 3 of them.
    CHECK(metric(out, "majority_accuracy") >= 3.0 / 30.0 - 1e-6);
  }
  // A different budget.
  auto more = make_span_bert(vocabulary, {{"mask_rate", 0.25}});
  CHECK(metric(more->compute(batch, model, StepInfo{}), "mask_rate") == Approx((10.0 + 15 + 5 + 20) / 200));
}

TEST_CASE("span_bert on a batch of empty texts gives a zero loss that backpropagates, not NaN", "[span_bert]") {
  auto vocabulary = vocabulary_of({"abc"});
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Text, {}, kF, {"", ""}, *vocabulary);
  auto loss = make_span_bert(vocabulary);
  auto out = loss->compute(batch, model, StepInfo{});
  CHECK(out.loss.item<double>() == 0.0);
  CHECK(metric(out, "accuracy") == 0.0);
  CHECK(metric(out, "mask_rate") == 0.0);
  out.loss.backward();  // still part of the graph
}

TEST_CASE("span_bert predicts the original tokens at the selected positions", "[span_bert]") {
  torch::manual_seed(3);
  // Row 0 is 40 a's, row 1 is 20 b's: 6 targets 'a' and 3 targets 'b', whatever the spans.
  std::vector<std::string> texts = {std::string(40, 'a'), std::string(20, 'b')};
  auto vocabulary = vocabulary_of(texts);
  const std::int64_t a = vocabulary->encode("a").front(), b = vocabulary->encode("b").front();
  const std::int64_t V = vocabulary->size() + 1;  // blank, unk, a, b, [MASK]
  REQUIRE(V == 5);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Text, {}, kF, texts, *vocabulary);
  // The head ignores its input: logits = bias, with 'a' favoured. Then the loss is the cross-entropy of
  // a fixed distribution against the targets, which must be the original tokens (not [MASK] nor random
  // replacements) at the 9 selected positions (not padding).
  auto loss = make_span_bert(vocabulary);
  auto weight = parameter(*loss->module(), "project.weight");
  auto bias = parameter(*loss->module(), "project.bias");
  {
    torch::NoGradGuard no_grad;
    weight.zero_();
    bias.zero_();
    bias[a] = 2.0;
  }
  const double z = std::exp(2.0) + (V - 1);
  const double nll_a = -std::log(std::exp(2.0) / z), nll_b = -std::log(1.0 / z);
  for (int draw = 0; draw < 5; ++draw) {
    auto out = loss->compute(batch, model, StepInfo{});
    CHECK(metric(out, "mask_rate") == Approx(9.0 / 60.0));
    CHECK(out.loss.item<double>() == Approx((6 * nll_a + 3 * nll_b) / 9).epsilon(1e-5));
    // Always guessing 'a': right on the 6 a's.
    CHECK(metric(out, "accuracy") == Approx(6.0 / 9.0));
    CHECK(metric(out, "majority_accuracy") == Approx(6.0 / 9.0));

    // d(loss)/d(bias_k) = p_k - (share of targets equal to k): 0 share for blank, unk and [MASK].
    zero_gradients(model, *loss);
    out.loss.backward();
    auto g = bias.grad();
    CHECK(g[0].item<double>() == Approx(1.0 / z).epsilon(1e-5));
    CHECK(g[V - 1].item<double>() == Approx(1.0 / z).epsilon(1e-5));
    CHECK(g[a].item<double>() == Approx(std::exp(2.0) / z - 6.0 / 9.0).epsilon(1e-5));
    CHECK(g[b].item<double>() == Approx(1.0 / z - 3.0 / 9.0).epsilon(1e-5));
  }

  // A single repeated character: every target is that character.
  std::vector<std::string> one = {std::string(20, 'a'), std::string(60, 'a')};
  auto out = loss->compute(make_batch(BatchKind::Text, {}, kF, one, *vocabulary), model, StepInfo{});
  CHECK(metric(out, "majority_accuracy") == Approx(1.0));
  CHECK(metric(out, "accuracy") == Approx(1.0));
  CHECK(metric(out, "mask_rate") == Approx((3.0 + 9.0) / 80.0));
  CHECK(out.loss.item<double>() == Approx(nll_a).epsilon(1e-5));
}

TEST_CASE("span_bert replaces spans by [MASK], random tokens or leaves them, per the shares", "[span_bert]") {
  torch::manual_seed(4);
  auto texts = random_texts({40, 40, 40}, 4);
  auto vocabulary = vocabulary_of(texts);
  const std::int64_t mask_id = vocabulary->size();
  auto batch = make_batch(BatchKind::Text, {}, kF, texts, *vocabulary);
  // Which rows of the embedding table a loss reads shows which ids went in.
  auto mask_row_used = [&](const std::map<std::string, OptionValue>& shares) {
    auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
    auto loss = make_span_bert(vocabulary, shares);
    auto out = loss->compute(batch, model, StepInfo{});
    out.loss.backward();
    auto g = parameter(model.text_embedding->module(), "table.weight").grad();
    return g[mask_id].abs().sum().item<double>() > 0;
  };
  CHECK(mask_row_used({{"mask_token_share", 1.0}, {"random_token_share", 0.0}}));
  CHECK_FALSE(mask_row_used({{"mask_token_share", 0.0}, {"random_token_share", 0.0}}));
  CHECK_FALSE(mask_row_used({{"mask_token_share", 0.0}, {"random_token_share", 1.0}}));

  // Everything [MASK]ed: the selected positions of one row have identical inputs, so identical logits.
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto all_masked = make_span_bert(vocabulary, {{"mask_token_share", 1.0}, {"random_token_share", 0.0}});
  torch::NoGradGuard no_grad;
  auto out = all_masked->compute(make_batch(BatchKind::Text, {}, kF, {texts[0]}, *vocabulary), model, StepInfo{});
  // One row, all its targets predicted from identical inputs: accuracy is the share of the predicted
  // letter among the targets, at most the majority.
  CHECK(metric(out, "accuracy") <= metric(out, "majority_accuracy") + 1e-6);
}

TEST_CASE("span_bert trains the text path and not the speech encoder", "[span_bert]") {
  torch::manual_seed(5);
  auto texts = random_texts({25, 18, 32}, 5);
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto loss = make_span_bert(vocabulary);
  for (auto kind : {BatchKind::Text, BatchKind::Paired}) {
    INFO(to_string(kind));
    auto batch = make_batch(kind, {40, 30, 50}, kF, texts, *vocabulary);
    auto out = loss->compute(batch, model, StepInfo{});
    CHECK(std::isfinite(out.loss.item<double>()));
    // Budgets round(0.15 n): 4, 3, 5 of 25, 18, 32 (the paired batch's transcripts are the same texts).
    CHECK(metric(out, "mask_rate") == Approx(12.0 / 75.0));
    zero_gradients(model, *loss);
    out.loss.backward();
    auto trained = parameters_with_gradient(model, *loss);
    for (const std::string name : {"text_embedding.table.weight", "shared_encoder.layer.weight",
                                   "shared_encoder.layer.bias", "modality_embedding.table.weight",
                                   "loss.project.weight", "loss.project.bias"}) {
      INFO(name);
      CHECK(has(trained, name));
    }
    for (const auto& name : trained) {
      INFO(name);
      CHECK(name.rfind("speech_encoder.", 0) == std::string::npos);
    }
    // Text does not go through the speech-to-shared projection, and uses the text modality row only.
    CHECK_FALSE(has(trained, "shared_encoder.projection.weight"));
    auto modality_grad = model.modality->table->weight.grad();
    CHECK(modality_grad[0].abs().sum().item<double>() == 0.0);
    CHECK(modality_grad[1].abs().sum().item<double>() > 0);
  }
}

TEST_CASE("span_bert refuses a model or options it cannot work with", "[span_bert][errors]") {
  auto texts = random_texts({20, 20}, 6);
  auto vocabulary = vocabulary_of(texts);
  auto batch = make_batch(BatchKind::Text, {}, kF, texts, *vocabulary);
  SECTION("no text embedding in the model") {
    auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
    model.text_embedding.reset();
    auto loss = make_span_bert(vocabulary);
    try {
      loss->compute(batch, model, StepInfo{});
      FAIL("no error without a text embedding");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("span_bert") && Contains("text_embedding"));
    }
  }
  SECTION("no text vocabulary in the build context") {
    auto ctx = tiny_loss_context(kDs, kD, vocabulary);
    ctx.text_vocab_size = 0;
    try {
      builtin_registry().create(PluginKind::Loss, "span_bert", span_options(), ctx);
      FAIL("no error without a text embedding");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("objectives.span_bert") && Contains("text_embedding"));
    }
  }
  SECTION("no shared encoder") {
    auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
    model.shared_encoder.reset();
    auto loss = make_span_bert(vocabulary);
    try {
      loss->compute(batch, model, StepInfo{});
      FAIL("no error without a shared encoder");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("span_bert") && Contains("shared_encoder"));
    }
  }
  SECTION("replacement shares above 1") {
    try {
      make_span_bert(vocabulary, {{"mask_token_share", 0.8}, {"random_token_share", 0.3}});
      FAIL("no error for shares 0.8 + 0.3");
    } catch (const ConfigError& e) {
      CHECK_THAT(std::string(e.what()), Contains("objectives.span_bert") && Contains("random_token_share"));
    }
    CHECK_NOTHROW(make_span_bert(vocabulary, {{"mask_token_share", 0.5}, {"random_token_share", 0.5}}));
  }
}

TEST_CASE("span_bert: 100 Adam steps on a tiny fixed text batch halve the loss", "[span_bert][learning]") {
  torch::manual_seed(7);
  // Each row repeats one letter, so a masked position's letter can be read from the rest of its row
  // (the tiny shared encoder adds the row mean).
  std::vector<std::string> texts = {std::string(30, 'a'), std::string(24, 'b'), std::string(36, 'c'),
                                    std::string(28, 'd')};
  auto vocabulary = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocabulary->size());
  auto batch = make_batch(BatchKind::Text, {}, kF, texts, *vocabulary);
  auto loss = make_span_bert(vocabulary);
  std::vector<torch::Tensor> params;
  for (auto* m : {&model.text_embedding->module(), &model.shared_encoder->module(),
                  static_cast<torch::nn::Module*>(model.modality.ptr().get()), loss->module()})
    for (auto& p : m->parameters()) params.push_back(p);
  torch::optim::Adam adam(params, torch::optim::AdamOptions(1e-2));
  std::vector<double> losses;
  for (int step = 0; step < 100; ++step) {
    adam.zero_grad();
    auto out = loss->compute(batch, model, StepInfo{step, 100});
    out.loss.backward();
    adam.step();
    losses.push_back(out.loss.item<double>());
  }
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += losses[static_cast<std::size_t>(i)] / 5;
  for (int i = 90; i < 100; ++i) last += losses[static_cast<std::size_t>(i)] / 10;
  INFO("first " << first << ", last " << last);
  CHECK(std::isfinite(last));
  CHECK(last < 0.5 * first);
  // And it predicts: accuracy well above the 1/4 of guessing one of the four letters.
  torch::NoGradGuard no_grad;
  double accuracy = 0;
  for (int i = 0; i < 10; ++i) accuracy += metric(loss->compute(batch, model, StepInfo{}), "accuracy") / 10;
  CHECK(accuracy > 0.6);
}
