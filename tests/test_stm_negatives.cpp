// The stm loss plugin's choice of negatives (negatives.h), compiled into the test and checked directly,
// without the registry, so that the sanitized build (tests/sanitized/) runs it too. The plugin itself is
// in test_stm.cpp.
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

#include "negatives.h"
#include "workbench/error.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

using namespace workbench;

namespace {

/// The texts of a batch of digit prompts, as in a read-speech corpus: few distinct texts, many repeats.
std::vector<std::string> prompts(std::size_t count, std::size_t distinct, std::mt19937_64& rng) {
  static const std::vector<std::string> kPrompts = {"one two", "three", "four five six", "seven", "eight nine",
                                                    "zero",    "two two", "six one"};
  std::uniform_int_distribution<std::size_t> pick(0, std::min(distinct, kPrompts.size()) - 1);
  std::vector<std::string> texts;
  for (std::size_t i = 0; i < count; ++i) texts.push_back(kPrompts[pick(rng)]);
  return texts;
}

}  // namespace

TEST_CASE("stm negatives: every negative's text differs from its own", "[stm][negatives]") {
  std::mt19937_64 rng(3);
  std::int64_t negatives = 0;
  for (int batch = 0; batch < 200; ++batch) {
    auto texts = prompts(12, 1 + batch % 4, rng);  // one to four distinct texts per batch
    auto partners = stm::choose_partners(texts, 0.5, rng);
    REQUIRE(partners.size() == texts.size());
    for (std::size_t i = 0; i < texts.size(); ++i) {
      const auto j = partners[i];
      REQUIRE(j >= 0);
      REQUIRE(j < static_cast<std::int64_t>(texts.size()));
      if (j == static_cast<std::int64_t>(i)) continue;
      ++negatives;
      INFO("batch " << batch << " row " << i << " partner " << j);
      CHECK(texts[static_cast<std::size_t>(j)] != texts[i]);
    }
  }
  CHECK(negatives > 500);
}

TEST_CASE("stm negatives: the rate follows the option when texts differ", "[stm][negatives]") {
  std::mt19937_64 rng(5);
  std::vector<std::string> texts;
  for (int i = 0; i < 16; ++i) texts.push_back("text " + std::to_string(i));
  for (double rate : {0.0, 0.2, 0.5, 1.0}) {
    INFO("negative_rate = " << rate);
    std::int64_t negatives = 0, rows = 0;
    std::map<std::int64_t, std::int64_t> partner_of_0;
    for (int batch = 0; batch < 400; ++batch) {
      auto partners = stm::choose_partners(texts, rate, rng);
      for (std::size_t i = 0; i < partners.size(); ++i) negatives += partners[i] != static_cast<std::int64_t>(i);
      rows += static_cast<std::int64_t>(partners.size());
      if (partners[0] != 0) ++partner_of_0[partners[0]];
    }
    CHECK(static_cast<double>(negatives) / static_cast<double>(rows) == Approx(rate).margin(0.015));
    if (rate == 1.0) {
      // Partners are spread over all the other rows (uniform: 400 / 15, about 27 each).
      CHECK(partner_of_0.size() == 15);
      for (const auto& [j, n] : partner_of_0) CHECK(n > 8);
    }
  }
}

TEST_CASE("stm negatives: a batch whose texts are all equal has none", "[stm][negatives]") {
  std::mt19937_64 rng(7);
  const std::vector<std::string> same(10, "hello");
  for (int batch = 0; batch < 50; ++batch) {
    auto partners = stm::choose_partners(same, 1.0, rng);
    for (std::size_t i = 0; i < partners.size(); ++i) CHECK(partners[i] == static_cast<std::int64_t>(i));
  }
  // One odd row out: every negative is that row, or pairs that row with one of the others.
  std::vector<std::string> one_odd(6, "hello");
  one_odd[4] = "bye";
  auto partners = stm::choose_partners(one_odd, 1.0, rng);
  for (std::size_t i = 0; i < partners.size(); ++i)
    CHECK(partners[i] == (i == 4 ? partners[4] : 4));
  CHECK(partners[4] != 4);
  CHECK(stm::choose_partners({}, 0.5, rng).empty());
  CHECK_THROWS_AS(stm::choose_partners(same, 1.5, rng), std::invalid_argument);
}

TEST_CASE("stm negatives: the speech-to-text length ratio cannot tell them from matched pairs", "[stm][negatives]") {
  // Batches of 32 utterances: text lengths 5..60 tokens, speech about 6 frames a token (a speaking rate
  // with 10% jitter). A classifier that sees only the lengths of a pair, the best threshold on
  // |log(frames / tokens) - log 6|, is measured on the pairs STM builds.
  std::mt19937_64 rng(17);
  std::uniform_int_distribution<std::int64_t> text_length(5, 60);
  std::normal_distribution<double> jitter(0.0, 0.1);
  auto best_threshold_accuracy = [&](bool nearest_length) {
    std::vector<std::pair<double, bool>> pairs;  // (feature, is matched)
    for (int batch = 0; batch < 200; ++batch) {
      std::vector<std::string> keys;
      std::vector<std::int64_t> tokens, frames;
      for (int i = 0; i < 32; ++i) {
        tokens.push_back(text_length(rng));
        frames.push_back(static_cast<std::int64_t>(std::lround(6.0 * static_cast<double>(tokens.back()) *
                                                                std::exp(jitter(rng)))));
        keys.push_back("text " + std::to_string(batch) + "/" + std::to_string(i));
      }
      auto partners = stm::choose_partners(keys, 0.5, rng, nearest_length ? tokens : std::vector<std::int64_t>{});
      for (std::size_t i = 0; i < partners.size(); ++i) {
        const double ratio = static_cast<double>(frames[i]) / static_cast<double>(tokens[partners[i]]);
        pairs.emplace_back(std::abs(std::log(ratio / 6.0)), partners[i] == static_cast<std::int64_t>(i));
      }
    }
    // Predict "matched" below a threshold; the best threshold over every observed value.
    std::sort(pairs.begin(), pairs.end());
    const double n = static_cast<double>(pairs.size());
    double negatives = 0;
    for (const auto& p : pairs) negatives += p.second ? 0 : 1;
    double best = std::max(negatives, n - negatives) / n;  // the majority guess
    double matched_below = 0, negatives_below = 0;
    for (const auto& p : pairs) {
      (p.second ? matched_below : negatives_below) += 1;
      best = std::max(best, (matched_below + (negatives - negatives_below)) / n);
    }
    return best;
  };
  // Uniform partners: the lengths alone give most of them away (the cue the old negatives had) ...
  CHECK(best_threshold_accuracy(false) > 0.8);
  // ... partners of the nearest length leave the lengths-only classifier near chance.
  CHECK(best_threshold_accuracy(true) < 0.6);
}

TEST_CASE("stm negatives: with lengths, the partner has the nearest length among the other texts", "[stm][negatives]") {
  std::mt19937_64 rng(3);
  const std::vector<std::string> keys = {"a", "b", "c", "d"};
  const std::vector<std::int64_t> lengths = {10, 30, 11, 29};
  for (int round = 0; round < 20; ++round) {
    auto partners = stm::choose_partners(keys, 1.0, rng, lengths);
    CHECK(partners == std::vector<std::int64_t>{2, 3, 0, 1});
  }
  CHECK_THROWS_AS(stm::choose_partners(keys, 1.0, rng, {1, 2}), std::invalid_argument);
}

TEST_CASE("stm negatives: keys are the valid token ids of each row", "[stm][negatives]") {
  auto tokens = torch::tensor({3, 4, 5, 3, 4, 0, 3, 4, 9}, torch::kLong).reshape({3, 3});
  auto keys = stm::token_row_keys(tokens, torch::tensor({2, 2, 3}, torch::kLong));
  REQUIRE(keys.size() == 3);
  CHECK(keys[0] == keys[1]);  // the same two tokens; what lies past the length does not count
  CHECK(keys[0] != keys[2]);
  CHECK(keys[0].size() == 2 * sizeof(std::int64_t));
}
