// The stm loss plugin's choice of negatives (negatives.h), compiled into the test and checked directly,
// without the registry, so that the sanitized build (tests/sanitized/) runs it too. The plugin itself is
// in test_stm.cpp.
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "negatives.h"

#include <catch2/catch.hpp>

using namespace workbench;

namespace {

/// Texts as a batch of token rows: each byte an id, rows zero-padded; (tokens (B, L), lengths (B)).
std::pair<torch::Tensor, torch::Tensor> rows_of(const std::vector<std::string>& texts) {
  std::size_t longest = 0;
  for (const auto& t : texts) longest = std::max(longest, t.size());
  auto tokens = torch::zeros({static_cast<std::int64_t>(texts.size()), static_cast<std::int64_t>(longest)}, torch::kLong);
  std::vector<std::int64_t> lengths;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    for (std::size_t j = 0; j < texts[i].size(); ++j)
      tokens[static_cast<std::int64_t>(i)][static_cast<std::int64_t>(j)] = static_cast<unsigned char>(texts[i][j]);
    lengths.push_back(static_cast<std::int64_t>(texts[i].size()));
  }
  return {tokens, torch::tensor(lengths, torch::kLong)};
}

std::vector<std::int64_t> partners_of(const std::vector<std::string>& texts, double rate, bool nearest_length = false) {
  auto [tokens, lengths] = rows_of(texts);
  auto p = stm::choose_partners(tokens, lengths, rate, nearest_length).contiguous();
  return std::vector<std::int64_t>(p.data_ptr<std::int64_t>(), p.data_ptr<std::int64_t>() + p.numel());
}

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
  torch::manual_seed(3);
  std::int64_t negatives = 0;
  for (int batch = 0; batch < 200; ++batch) {
    auto texts = prompts(12, 1 + batch % 4, rng);  // one to four distinct texts per batch
    for (bool nearest : {false, true}) {
      auto partners = partners_of(texts, 0.5, nearest);
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
  }
  CHECK(negatives > 1000);
}

TEST_CASE("stm negatives: the rate follows the option when texts differ", "[stm][negatives]") {
  torch::manual_seed(5);
  std::vector<std::string> texts;
  for (int i = 0; i < 16; ++i) texts.push_back("text " + std::to_string(i));
  for (double rate : {0.0, 0.2, 0.5, 1.0}) {
    INFO("negative_rate = " << rate);
    std::int64_t negatives = 0, rows = 0;
    std::map<std::int64_t, std::int64_t> partner_of_0;
    for (int batch = 0; batch < 400; ++batch) {
      auto partners = partners_of(texts, rate);
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
  torch::manual_seed(7);
  const std::vector<std::string> same(10, "hello");
  for (int batch = 0; batch < 50; ++batch) {
    auto partners = partners_of(same, 1.0);
    for (std::size_t i = 0; i < partners.size(); ++i) CHECK(partners[i] == static_cast<std::int64_t>(i));
  }
  // One odd row out: every negative is that row, or pairs that row with one of the others.
  std::vector<std::string> one_odd(6, "hello");
  one_odd[4] = "bye";
  auto partners = partners_of(one_odd, 1.0);
  for (std::size_t i = 0; i < partners.size(); ++i) CHECK(partners[i] == (i == 4 ? partners[4] : 4));
  CHECK(partners[4] != 4);
  CHECK(partners_of({}, 0.5).empty());
  auto [tokens, lengths] = rows_of(same);
  CHECK_THROWS_AS(stm::choose_partners(tokens, lengths, 1.5), std::invalid_argument);
  CHECK_THROWS_AS(stm::choose_partners(tokens, lengths.narrow(0, 0, 3), 0.5), std::invalid_argument);
}

TEST_CASE("stm negatives: the speech-to-text length ratio cannot tell them from matched pairs", "[stm][negatives]") {
  // Batches of 32 utterances: text lengths 5..60 tokens, speech about 6 frames a token (a speaking rate
  // with 10% jitter). A classifier that sees only the lengths of a pair, the best threshold on
  // |log(frames / tokens) - log 6|, is measured on the pairs STM builds.
  std::mt19937_64 rng(17);
  torch::manual_seed(17);
  std::uniform_int_distribution<std::int64_t> text_length(5, 60);
  std::normal_distribution<double> jitter(0.0, 0.1);
  auto best_threshold_accuracy = [&](bool nearest_length) {
    std::vector<std::pair<double, bool>> pairs;  // (feature, is matched)
    for (int batch = 0; batch < 200; ++batch) {
      std::vector<std::int64_t> tokens, frames;
      auto ids = torch::zeros({32, 60}, torch::kLong);
      for (int i = 0; i < 32; ++i) {
        tokens.push_back(text_length(rng));
        frames.push_back(static_cast<std::int64_t>(std::lround(6.0 * static_cast<double>(tokens.back()) *
                                                                std::exp(jitter(rng)))));
        ids[i][0] = batch * 32 + i + 1;  // every text its own
      }
      auto partners = stm::choose_partners(ids, torch::tensor(tokens, torch::kLong), 0.5, nearest_length).contiguous();
      const auto* p = partners.data_ptr<std::int64_t>();
      for (std::size_t i = 0; i < tokens.size(); ++i) {
        const double ratio = static_cast<double>(frames[i]) / static_cast<double>(tokens[static_cast<std::size_t>(p[i])]);
        pairs.emplace_back(std::abs(std::log(ratio / 6.0)), p[i] == static_cast<std::int64_t>(i));
      }
    }
    // Predict "matched" below a threshold; the best threshold over every observed value.
    std::sort(pairs.begin(), pairs.end());
    const double n = static_cast<double>(pairs.size());
    double negatives = 0;
    for (const auto& pr : pairs) negatives += pr.second ? 0 : 1;
    double best = std::max(negatives, n - negatives) / n;  // the majority guess
    double matched_below = 0, negatives_below = 0;
    for (const auto& pr : pairs) {
      (pr.second ? matched_below : negatives_below) += 1;
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
  torch::manual_seed(3);
  const std::vector<std::string> texts = {std::string(10, 'a'), std::string(30, 'b'), std::string(11, 'c'),
                                          std::string(29, 'd')};
  for (int round = 0; round < 20; ++round) CHECK(partners_of(texts, 1.0, true) == std::vector<std::int64_t>{2, 3, 0, 1});
  // Two at the same distance: each is drawn.
  const std::vector<std::string> tie = {std::string(10, 'a'), std::string(9, 'b'), std::string(11, 'c')};
  std::map<std::int64_t, int> partner_of_0;
  for (int round = 0; round < 200; ++round) ++partner_of_0[partners_of(tie, 1.0, true)[0]];
  CHECK(partner_of_0.size() == 2);
  CHECK(partner_of_0[1] > 60);
  CHECK(partner_of_0[2] > 60);
}

TEST_CASE("stm negatives: rows are the same text when their valid token ids are", "[stm][negatives]") {
  // Rows 0 and 1 hold the same two tokens (what lies past the length does not count); row 2 differs.
  auto tokens = torch::tensor({3, 4, 5, 3, 4, 0, 3, 4, 9}, torch::kLong).reshape({3, 3});
  auto lengths = torch::tensor({2, 2, 3}, torch::kLong);
  torch::manual_seed(1);
  for (int round = 0; round < 50; ++round) {
    auto p = stm::choose_partners(tokens, lengths, 1.0, false);
    CHECK(p[0].item<std::int64_t>() == 2);
    CHECK(p[1].item<std::int64_t>() == 2);
    CHECK(p[2].item<std::int64_t>() != 2);
  }
  // The same seed of torch's generator gives the same partners, on the tokens' device.
  torch::manual_seed(9);
  auto a = stm::choose_partners(tokens, lengths, 0.5);
  torch::manual_seed(9);
  CHECK(torch::equal(a, stm::choose_partners(tokens, lengths, 0.5)));
  CHECK(a.device() == tokens.device());
}
