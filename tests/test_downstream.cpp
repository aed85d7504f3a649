// The downstream heads and evaluators.
//   Arithmetic, checked by hand: a 3-class confusion matrix with its accuracy, macro-F1 and majority
//   baseline; recall@k on a 4x4 similarity matrix with known ranks and a tie.
//   Heads through the registry, on the tiny test model: the classifier's labels (language, id prefixes),
//   its loss over labelled rows only and its padding invariance; the RNN-T head learning a small task
//   and decoding it, greedily and with a beam, to the same transcripts.
#include <map>
#include <string>

#include <torch/optim/adam.h>
#include <torch/torch.h>

#include "classification_metrics.h"
#include "joint_fixture.h"
#include "retrieval_metrics.h"
#include "workbench/error.h"
#include "workbench/evaluator.h"

#include <catch2/catch.hpp>

using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;

namespace {

constexpr std::int64_t kF = 6, kDs = 8, kD = 12;

Options classifier_options(const std::string& label, const std::vector<std::string>& classes) {
  Options o("objectives.langid");
  o.set("label", label, "test");
  o.set("classes", classes, "test");
  o.set("layer", std::string("auto"), "test");
  o.set("hidden_dim", std::int64_t{16}, "test");
  o.set("dropout", 0.0, "test");
  return o;
}

std::shared_ptr<Loss> make_classifier(const Options& o, const std::shared_ptr<const Vocabulary>& v) {
  return builtin_registry().create_as<Loss>(PluginKind::Loss, "classifier", o, tiny_loss_context(kDs, kD, v));
}

Options rnnt_options(std::int64_t beam) {
  Options o("objectives.rnnt");
  o.set("layer", std::string("auto"), "test");
  o.set("pred_dim", std::int64_t{16}, "test");
  o.set("pred_layers", std::int64_t{1}, "test");
  o.set("joint_dim", std::int64_t{16}, "test");
  o.set("dropout", 0.0, "test");
  o.set("max_symbols_per_frame", std::int64_t{3}, "test");
  o.set("beam_size", beam, "test");
  return o;
}

}  // namespace

TEST_CASE("classifier: labels from the language, or from id prefixes - rows of no class are left out",
          "[classifier]") {
  auto vocab = vocabulary_of({"abc"});
  auto model = tiny_joint_model(kF, kDs, kD, vocab->size());
  Batch batch = make_batch(BatchKind::Paired, {5, 7, 6}, kF, {"a", "b", "c"}, *vocab);
  batch.langs = {"fr", "en", "de"};
  batch.ids = {"fr/vm-hello", "en/conf-joined", "de/digits/1"};

  auto by_lang = make_classifier(classifier_options("lang", {"en", "fr"}), vocab);
  auto* lang = dynamic_cast<UtteranceClassifier*>(by_lang.get());
  REQUIRE(lang != nullptr);
  CHECK(torch::equal(lang->labels(batch), torch::tensor({1L, 0L, -1L})));

  auto by_id = make_classifier(classifier_options("id", {"voicemail=vm-", "conference=conf-|confbridge-"}), vocab);
  auto* intent = dynamic_cast<UtteranceClassifier*>(by_id.get());
  CHECK(intent->classes() == std::vector<std::string>{"voicemail", "conference"});
  CHECK(torch::equal(intent->labels(batch), torch::tensor({0L, 1L, -1L})));

  // The loss averages over labelled rows: the unlabelled one changes nothing.
  LossOutput all = by_id->compute(batch, model, {});
  auto z = intent->logits(batch, model).detach();
  auto expected = torch::nn::functional::cross_entropy(z.narrow(0, 0, 2), torch::tensor({0L, 1L}));
  CHECK(all.loss.item<double>() == Approx(expected.item<double>()).epsilon(1e-5));
  CHECK(metric(all, "accuracy") >= 0.0);
}

TEST_CASE("classifier: a row's logits are the same alone and beside a longer row, in training mode", "[classifier]") {
  auto vocab = vocabulary_of({"abc"});
  auto model = tiny_joint_model(kF, kDs, kD, vocab->size());
  auto loss = make_classifier(classifier_options("lang", {"en", "fr"}), vocab);
  loss->module()->train();
  Batch pair = make_batch(BatchKind::Paired, {4, 9}, kF, {"a", "b"}, *vocab);
  Batch alone = pair;
  alone.features = pair.features.narrow(0, 0, 1).narrow(1, 0, 4);
  alone.feature_lengths = pair.feature_lengths.narrow(0, 0, 1);
  auto* c = dynamic_cast<UtteranceClassifier*>(loss.get());
  auto beside = c->logits(pair, model)[0];
  auto single = c->logits(alone, model)[0];
  CHECK((beside - single).abs().max().item<double>() < 1e-5);
}

TEST_CASE("classifier: bad class lists are refused, naming the option", "[classifier]") {
  auto vocab = vocabulary_of({"abc"});
  CHECK_THROWS_WITH(make_classifier(classifier_options("lang", {"en"}), vocab), Contains("at least two classes"));
  CHECK_THROWS_WITH(make_classifier(classifier_options("id", {"a=x|", "b=y"}), vocab), Contains("empty prefix"));
  CHECK_THROWS_WITH(make_classifier(classifier_options("lang", {"en", "en"}), vocab), Contains("listed twice"));
}

TEST_CASE("rnnt: the head learns two transcripts and decodes them, greedily and with a beam", "[rnnt]") {
  torch::manual_seed(7);
  const std::vector<std::string> texts = {"abca", "cab"};
  auto vocab = vocabulary_of(texts);
  auto model = tiny_joint_model(kF, kDs, kD, vocab->size());
  auto greedy = builtin_registry().create_as<Loss>(PluginKind::Loss, "rnnt", rnnt_options(1),
                                                   tiny_loss_context(kDs, kD, vocab));
  Batch batch = make_batch(BatchKind::Paired, {10, 7}, kF, texts, *vocab);
  std::vector<torch::Tensor> params;
  for (auto* m : {&model.speech_encoder->module(), &model.shared_encoder->module(), static_cast<torch::nn::Module*>(model.modality.get()), greedy->module()})
    for (auto& p : m->parameters()) params.push_back(p);
  torch::optim::Adam adam(params, torch::optim::AdamOptions(1e-2));
  double first = 0, last = 0;
  for (int step = 0; step < 300; ++step) {
    adam.zero_grad();
    auto out = greedy->compute(batch, model, {});
    out.loss.backward();
    adam.step();
    (step == 0 ? first : last) = out.loss.item<double>();
  }
  CHECK(last < 0.1 * first);
  greedy->module()->eval();
  torch::NoGradGuard no_grad;
  auto* transcriber = dynamic_cast<Transcriber*>(greedy.get());
  REQUIRE(transcriber != nullptr);
  CHECK(transcriber->transcribe(batch, model) == texts);
  // The same weights with a beam of 4.
  auto beam = builtin_registry().create_as<Loss>(PluginKind::Loss, "rnnt", rnnt_options(4),
                                                 tiny_loss_context(kDs, kD, vocab));
  auto source = greedy->module()->named_parameters();
  for (auto& p : beam->module()->named_parameters()) p.value().copy_(source[p.key()]);
  beam->module()->eval();
  CHECK(dynamic_cast<Transcriber*>(beam.get())->transcribe(batch, model) == texts);
}

TEST_CASE("classification metrics: a 3-class confusion matrix by hand", "[classification]") {
  // truth -> predicted: a a, a a, a b, b b (en); b c, c c, c a (fr); and a row of no class.
  std::vector<classification::Prediction> p = {{0, 0, "en"}, {0, 0, "en"}, {0, 1, "en"}, {1, 1, "en"},
                                               {1, 2, "fr"}, {2, 2, "fr"}, {2, 0, "fr"}, {-1, 2, "fr"}};
  std::map<std::string, double> m;
  for (const auto& [k, v] : classification::classification_metrics(p, {"a", "b", "c"})) m[k] = v;
  CHECK(m.at("examples") == 7);
  CHECK(m.at("accuracy_pooled") == Approx(4.0 / 7));
  CHECK(m.at("accuracy/en") == Approx(0.75));
  CHECK(m.at("accuracy/fr") == Approx(1.0 / 3));
  CHECK(m.at("accuracy") == Approx((0.75 + 1.0 / 3) / 2));
  // F1: a = 2*2 / (4 + 1 + 1); b = 2 / (2 + 1 + 1); c = 2 / (2 + 1 + 1).
  CHECK(m.at("f1/a") == Approx(4.0 / 6));
  CHECK(m.at("f1/b") == Approx(0.5));
  CHECK(m.at("f1/c") == Approx(0.5));
  CHECK(m.at("macro_f1") == Approx((4.0 / 6 + 0.5 + 0.5) / 3));
  CHECK(m.at("majority") == Approx(3.0 / 7));
  CHECK(m.at("chance") == Approx(1.0 / 3));
  CHECK(m.at("confusion/a/a") == 2);
  CHECK(m.at("confusion/a/b") == 1);
  CHECK(m.at("confusion/c/a") == 1);
  CHECK(m.at("confusion/b/a") == 0);  // every cell is there, zeros too
  CHECK(m.size() == 6 + 2 + 3 + 9);
}

TEST_CASE("classification metrics: a class that never occurs is left out of macro-F1", "[classification]") {
  std::vector<classification::Prediction> p = {{0, 0, "en"}, {1, 1, "en"}};
  std::map<std::string, double> m;
  for (const auto& [k, v] : classification::classification_metrics(p, {"a", "b", "c"})) m[k] = v;
  CHECK(m.at("macro_f1") == Approx(1.0));
  CHECK(m.at("f1/c") == 0.0);
}

TEST_CASE("retrieval metrics: ranks and recall@k on a 4x4 similarity matrix", "[retrieval]") {
  auto sim = torch::tensor({{0.9, 0.1, 0.2, 0.3},    // correct first: rank 0
                            {0.5, 0.4, 0.6, 0.1},    // two above: rank 2
                            {0.1, 0.2, 0.3, 0.8},    // one above: rank 1
                            {0.7, 0.7, 0.7, 0.7}});  // all tied: rank 1.5 (half of 3)
  auto ranks = retrieval::correct_ranks(sim);
  CHECK(ranks[0].item<double>() == 0.0);
  CHECK(ranks[1].item<double>() == 2.0);
  CHECK(ranks[2].item<double>() == 1.0);
  CHECK(ranks[3].item<double>() == 1.5);
  CHECK(retrieval::recall_at(ranks, 1) == Approx(0.25));
  CHECK(retrieval::recall_at(ranks, 2) == Approx(0.75));
  CHECK(retrieval::recall_at(ranks, 3) == Approx(1.0));
  CHECK(retrieval::chance_recall(4, 1) == Approx(0.25));
  CHECK(retrieval::chance_recall(4, 10) == 1.0);
  CHECK_THROWS_AS(retrieval::correct_ranks(torch::zeros({2, 3})), std::invalid_argument);
}

TEST_CASE("retrieval metrics: random vectors retrieve at chance", "[retrieval]") {
  torch::manual_seed(3);
  const std::int64_t n = 400;
  auto a = torch::nn::functional::normalize(torch::randn({n, 16}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto b = torch::nn::functional::normalize(torch::randn({n, 16}), torch::nn::functional::NormalizeFuncOptions().dim(1));
  auto ranks = retrieval::correct_ranks(a.matmul(b.t()));
  CHECK(retrieval::recall_at(ranks, 10) == Approx(10.0 / n).margin(0.02));
  CHECK(ranks.mean().item<double>() == Approx((n - 1) / 2.0).epsilon(0.1));
}

TEST_CASE("objective_metrics: the objectives' metrics on held-out batches, weighted by their rows",
          "[objective_metrics]") {
  auto vocab = vocabulary_of({"abc", "cab"});
  auto model = tiny_joint_model(kF, kDs, kD, vocab->size());
  Options ctc_options("objectives.ctc");
  ctc_options.set("dropout", 0.0, "test");
  ctc_options.set("layer", std::string("auto"), "test");
  auto ctc = builtin_registry().create_as<Loss>(PluginKind::Loss, "ctc", ctc_options, tiny_loss_context(kDs, kD, vocab));
  Options o("evaluators.heldout");
  o.set("objectives", std::vector<std::string>{}, "test");
  auto evaluator = builtin_registry().create_as<Evaluator>(PluginKind::Evaluator, "objective_metrics", o, BuildContext{});
  evaluator->connect(Connections({{"ctc", "ctc", ctc.get()}}));
  std::vector<Batch> batches = {make_batch(BatchKind::Paired, {9, 8, 7}, kF, {"abc", "cab", "ab"}, *vocab),
                                make_batch(BatchKind::Paired, {6}, kF, {"ca"}, *vocab)};
  torch::NoGradGuard no_grad;
  const double first = metric(ctc->compute(batches[0], model, {}), "loss");
  const double second = metric(ctc->compute(batches[1], model, {}), "loss");
  auto metrics = evaluator->evaluate(EvalContext{batches, model, torch::kCPU});
  REQUIRE_FALSE(metrics.empty());
  CHECK(metrics.front().first == "ctc/loss");
  CHECK(metrics.front().second == Approx((3 * first + second) / 4).epsilon(1e-6));

  Options unknown("evaluators.heldout");
  unknown.set("objectives", std::vector<std::string>{"tlm"}, "test");
  auto bad = builtin_registry().create_as<Evaluator>(PluginKind::Evaluator, "objective_metrics", unknown, BuildContext{});
  CHECK_THROWS_WITH(bad->connect(Connections({{"ctc", "ctc", ctc.get()}})), Contains("no objective 'tlm'"));
}
