// The downstream evaluators' arithmetic, checked by hand: a 3-class confusion matrix with its accuracy,
// macro-F1 and majority baseline, and recall@k on a 4x4 similarity matrix with known ranks and a tie.
#include <map>
#include <string>

#include <torch/torch.h>

#include "classification_metrics.h"
#include "retrieval_metrics.h"

#include <catch2/catch.hpp>

using namespace workbench;

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
