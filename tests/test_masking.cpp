// The core's masking (core/src/masking.cpp): speech span masking (wav2vec 2.0 / w2v-BERT: start probability
// 0.065, span 10, about 49% of the frames), the start probability for a wanted coverage (TLM's 75%), the
// SpanBERT span lengths (geometric p = 0.2 clipped to [1, 10], mean 3.8) and SpanBERT text masking (15% of
// each row in spans, 80% [MASK] / 10% random / 10% unchanged per span). Statistics are measured over
// many seeded draws, so the tests are deterministic.
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <random>
#include <stdexcept>
#include <vector>

#include "workbench/encoder.h"
#include "workbench/masked_prediction.h"
#include "workbench/masking.h"

#include <catch2/catch.hpp>

using namespace workbench;

namespace {

/// Expected share of masked frames over rows of `lengths`: frame t is covered unless none of the
/// min(t + 1, s) frames that could start a span over it did (spans are cut at the row's end, so the first
/// frames of a row are covered a little less than 1 - (1 - p)^s).
double expected_coverage(const std::vector<std::int64_t>& lengths, double p, std::int64_t s) {
  double covered = 0, total = 0;
  for (auto n : lengths) {
    for (std::int64_t t = 0; t < n; ++t) covered += 1 - std::pow(1 - p, static_cast<double>(std::min(t + 1, s)));
    total += static_cast<double>(n);
  }
  return covered / total;
}

/// Masked share of the valid frames over `draws` masks of `lengths`.
double measured_coverage(const std::vector<std::int64_t>& lengths, std::int64_t T, double p, std::int64_t span,
                         int draws, std::uint64_t seed) {
  torch::manual_seed(seed);
  auto len = torch::tensor(lengths, torch::kInt64);
  double masked = 0, valid = 0;
  for (int d = 0; d < draws; ++d) {
    auto m = span_mask_frames(len, T, p, span);
    masked += m.sum().item<double>();
    for (auto n : lengths) valid += static_cast<double>(std::min(n, T));
  }
  return masked / valid;
}

/// E[min-clipped geometric] = sum_{k=1..K} k p (1-p)^(k-1) / sum_{k=1..K} p (1-p)^(k-1).
double truncated_geometric_mean(double p, std::int64_t K) {
  double num = 0, den = 0;
  for (std::int64_t k = 1; k <= K; ++k) {
    const double w = p * std::pow(1 - p, static_cast<double>(k - 1));
    num += static_cast<double>(k) * w;
    den += w;
  }
  return num / den;
}

/// Maximal runs of equal non-zero codes in one row of `replaced`: (code, length) in order.
std::vector<std::pair<int, std::int64_t>> runs(const torch::Tensor& replaced_row) {
  std::vector<std::pair<int, std::int64_t>> out;
  auto r = replaced_row.to(torch::kInt64).contiguous();
  const auto* p = r.data_ptr<std::int64_t>();
  for (std::int64_t t = 0; t < r.size(0); ++t) {
    const int code = static_cast<int>(p[t]);
    if (code == 0) continue;
    if (t > 0 && p[t - 1] == code)
      ++out.back().second;
    else
      out.emplace_back(code, 1);
  }
  return out;
}

/// Rows of random regular ids in [first, end), zero-padded after `lengths`.
torch::Tensor random_tokens(const std::vector<std::int64_t>& lengths, std::int64_t L, std::int64_t first,
                            std::int64_t end, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<std::int64_t> id(first, end - 1);
  auto tokens = torch::zeros({static_cast<std::int64_t>(lengths.size()), L}, torch::kInt64);
  auto a = tokens.accessor<std::int64_t, 2>();
  for (std::size_t b = 0; b < lengths.size(); ++b)
    for (std::int64_t t = 0; t < std::min(lengths[b], L); ++t) a[static_cast<std::int64_t>(b)][t] = id(rng);
  return tokens;
}

constexpr std::int64_t kMask = 50, kFirst = 2, kEnd = 50;

}  // namespace

// --- speech -------------------------------------------------------------------------------------------

TEST_CASE("span_mask_frames: w2v-BERT's 0.065 x 10 covers about 49% of long rows", "[masking][speech]") {
  const double paper = 1 - std::pow(1 - 0.065, 10.0);
  CHECK(paper == Approx(0.4894).margin(1e-3));
  const std::vector<std::int64_t> lengths = {2000, 1800, 2000, 1500, 2000, 1900, 2000, 1700};
  const double measured = measured_coverage(lengths, 2000, 0.065, 10, 25, 11);
  CHECK(measured == Approx(paper).margin(0.02));
  // Tighter: the exact expectation with spans cut at the row's end (the first frames are covered less).
  CHECK(measured == Approx(expected_coverage(lengths, 0.065, 10)).margin(0.006));
}

TEST_CASE("span_mask_frames: spans are `span` frames long and cut at the row's end", "[masking][speech]") {
  // With p = 1 every frame starts a span: everything valid is masked.
  torch::manual_seed(3);
  auto len = torch::tensor(std::vector<std::int64_t>{7, 0, 12}, torch::kInt64);
  auto all = span_mask_frames(len, 12, 1.0, 10);
  REQUIRE(all.sizes() == torch::IntArrayRef({3, 12}));
  REQUIRE(all.dtype() == torch::kBool);
  CHECK(all[0].sum().item<std::int64_t>() == 7);
  CHECK(all[1].sum().item<std::int64_t>() == 0);
  CHECK(all[2].sum().item<std::int64_t>() == 12);
  CHECK_FALSE(all[0].narrow(0, 7, 5).any().item<bool>());

  // Few, separated starts: a masked run that touches neither another span nor the row's end is exactly
  // one span long; overlapping spans make longer runs, never shorter ones.
  torch::manual_seed(5);
  const std::int64_t n = 5000;
  auto long_row = torch::tensor(std::vector<std::int64_t>{n}, torch::kInt64);
  auto m = span_mask_frames(long_row, n, 0.002, 10, 0).to(torch::kInt64)[0];
  auto a = m.accessor<std::int64_t, 1>();
  std::int64_t run = 0, runs_seen = 0, runs_of_span = 0;
  for (std::int64_t t = 0; t <= n; ++t) {
    if (t < n && a[t]) {
      ++run;
      continue;
    }
    if (run > 0 && t < n) {
      ++runs_seen;
      CHECK(run >= 10);
      runs_of_span += run == 10;
    }
    run = 0;
  }
  REQUIRE(runs_seen > 3);
  CHECK(runs_of_span >= runs_seen - 2);  // overlaps are rare at p = 0.002
}

TEST_CASE("span_mask_frames never masks padding (and cuts rows longer than max_length)", "[masking][speech]") {
  torch::manual_seed(7);
  const std::int64_t T = 60;
  auto len = torch::tensor(std::vector<std::int64_t>{60, 33, 1, 0, 9, 45, 80}, torch::kInt64);
  auto valid_len = len.clamp_max(T);
  for (int d = 0; d < 200; ++d) {
    auto m = span_mask_frames(len, T, 0.3, 10);
    REQUIRE(m.sizes() == torch::IntArrayRef({7, T}));
    CHECK_FALSE((m & padding_mask(valid_len, T)).any().item<bool>());
  }
}

TEST_CASE("span_mask_frames: rows of at least min_spans * span frames get at least min_spans spans",
          "[masking][speech]") {
  // p = 0 draws no starts: everything masked comes from the guarantee.
  torch::manual_seed(9);
  auto len = torch::tensor(std::vector<std::int64_t>{10, 19, 20, 100, 5}, torch::kInt64);
  for (int d = 0; d < 100; ++d) {
    auto one = span_mask_frames(len, 100, 0.0, 10, 1);
    CHECK(one[0].sum().item<std::int64_t>() == 10);  // exactly one span fits: all 10 frames
    for (int r = 1; r <= 3; ++r) CHECK(one[r].sum().item<std::int64_t>() == 10);
    CHECK(one[4].sum().item<std::int64_t>() == 0);  // shorter than one span: nothing

    auto two = span_mask_frames(len, 100, 0.0, 10, 2);
    CHECK(two[0].sum().item<std::int64_t>() == 0);   // 10 < 2 * 10
    CHECK(two[1].sum().item<std::int64_t>() == 0);   // 19 < 2 * 10
    const auto r2 = two[2].sum().item<std::int64_t>(), r3 = two[3].sum().item<std::int64_t>();
    CHECK(r2 >= 10);  // two spans of 10 in 20 frames, possibly overlapping
    CHECK(r2 <= 20);
    CHECK(r3 >= 10);
    CHECK(r3 <= 20);
  }
  // Over many draws two spans in 100 frames rarely coincide: the mean is close to 2 * 10 minus overlaps.
  torch::manual_seed(10);
  auto row = torch::tensor(std::vector<std::int64_t>{100}, torch::kInt64);
  double sum = 0;
  for (int d = 0; d < 2000; ++d) sum += span_mask_frames(row, 100, 0.0, 10, 2).sum().item<double>();
  CHECK(sum / 2000 > 17.0);
  // min_spans = 0: no guarantee.
  torch::manual_seed(11);
  CHECK(span_mask_frames(len, 100, 0.0, 10, 0).sum().item<std::int64_t>() == 0);
}

TEST_CASE("span_mask_frames refuses a probability outside [0, 1] and a span below 1", "[masking][speech][errors]") {
  torch::manual_seed(1);
  auto len = torch::tensor(std::vector<std::int64_t>{10}, torch::kInt64);
  CHECK_THROWS_AS(span_mask_frames(len, 10, 1.5, 10), std::invalid_argument);
  CHECK_THROWS_AS(span_mask_frames(len, 10, -0.1, 10), std::invalid_argument);
  CHECK_THROWS_AS(span_mask_frames(len, 10, std::nan(""), 10), std::invalid_argument);
  CHECK_THROWS_AS(span_mask_frames(len, 10, 0.1, 0), std::invalid_argument);
}

TEST_CASE("span_mask_frames: the same seed of torch's generator gives the same mask, on lengths' device",
          "[masking][speech]") {
  auto len = torch::tensor(std::vector<std::int64_t>{300, 120}, torch::kInt64);
  torch::manual_seed(42);
  auto ma = span_mask_frames(len, 300, 0.065, 10);
  CHECK(ma.device() == len.device());
  torch::manual_seed(42);
  CHECK(ma.equal(span_mask_frames(len, 300, 0.065, 10)));
  torch::manual_seed(43);
  CHECK_FALSE(ma.equal(span_mask_frames(len, 300, 0.065, 10)));
  CHECK_THROWS_AS(span_mask_frames(len, 300, 0.065, 10, -1), std::invalid_argument);
  CHECK_THROWS_AS(span_mask_frames(len.view({1, 2}), 300, 0.065, 10), std::invalid_argument);
  CHECK_THROWS_AS(span_mask_frames(len, -1, 0.065, 10), std::invalid_argument);
}

TEST_CASE("span_mask_frames: the guarantee's extra starts are distinct frames of the row, alone or beside a longer one",
          "[masking][speech][padding]") {
  // (The draws differ with the batch's shape; what is checked is where the spans may fall.)
  for (int seed = 0; seed < 50; ++seed) {
    torch::manual_seed(seed);
    auto alone = span_mask_frames(torch::tensor(std::vector<std::int64_t>{30}, torch::kInt64), 30, 0.0, 10, 2);
    torch::manual_seed(seed);
    auto beside = span_mask_frames(torch::tensor(std::vector<std::int64_t>{30, 200}, torch::kInt64), 200, 0.0, 10, 2);
    CHECK_FALSE(beside[0].narrow(0, 30, 170).any().item<bool>());
    // Two distinct starts in [0, 20]: at least 11 frames, at most 20.
    for (const auto& m : {alone[0], beside[0]}) {
      CHECK(m.sum().item<std::int64_t>() >= 11);
      CHECK(m.sum().item<std::int64_t>() <= 20);
    }
    CHECK(beside[1].sum().item<std::int64_t>() >= 11);
  }
}
TEST_CASE("valid_frame_std: the scale of the random mask vectors is taken over valid frames only", "[masking][padding]") {
  torch::manual_seed(8);
  auto row = torch::randn({1, 20, 6}) * 2.5 + 0.3;
  const auto alone = valid_frame_std(row, torch::ones({1, 20}, torch::kBool)).item<double>();
  // The same row beside a longer one, padded with zeros: the zeros must not shrink the scale, and the
  // other row's frames count as they are.
  auto padded = torch::cat({row, torch::zeros({1, 60, 6})}, 1);
  auto valid = torch::zeros({1, 80}, torch::kBool);
  valid.narrow(1, 0, 20).fill_(true);
  CHECK(valid_frame_std(padded, valid).item<double>() == Approx(alone).epsilon(1e-6));
  CHECK(padded.std().item<double>() < 0.7 * alone);  // what the old, unmasked scale gave
  CHECK(valid_frame_std(padded, torch::zeros({1, 80}, torch::kBool)).item<double>() == 1.0);
  CHECK_THROWS_AS(valid_frame_std(padded, valid.narrow(1, 0, 40)), std::invalid_argument);
  CHECK_THROWS_AS(valid_frame_std(padded[0], valid), std::invalid_argument);
}

TEST_CASE("start_prob_for_coverage inverts 1 - (1 - p)^span: 75% of speech for TLM", "[masking][speech]") {
  const double p = start_prob_for_coverage(0.75, 10);
  CHECK(p == Approx(1 - std::pow(0.25, 0.1)).epsilon(1e-12));
  CHECK(p == Approx(0.12945).margin(1e-4));
  CHECK(1 - std::pow(1 - p, 10.0) == Approx(0.75).epsilon(1e-12));
  CHECK(start_prob_for_coverage(0.0, 10) == 0.0);
  CHECK(start_prob_for_coverage(1 - std::pow(1 - 0.065, 10.0), 10) == Approx(0.065).epsilon(1e-9));
  CHECK(start_prob_for_coverage(0.5, 1) == Approx(0.5));
  CHECK_THROWS_AS(start_prob_for_coverage(1.0, 10), std::invalid_argument);
  CHECK_THROWS_AS(start_prob_for_coverage(-0.1, 10), std::invalid_argument);

  const std::vector<std::int64_t> lengths = {1500, 1500, 1200, 1500, 1000, 1500};
  const double measured = measured_coverage(lengths, 1500, p, 10, 25, 21);
  CHECK(measured == Approx(0.75).margin(0.02));
  CHECK(measured == Approx(expected_coverage(lengths, p, 10)).margin(0.006));
}

// --- SpanBERT span lengths ----------------------------------------------------------------------------

namespace {
TextMaskingOptions clipped(double p, std::int64_t max_span) {
  TextMaskingOptions o;
  o.geometric_p = p;
  o.max_span = max_span;
  return o;
}
}  // namespace

TEST_CASE("sample_span_lengths: geometric(0.2) clipped to [1, 10], mean 3.8", "[masking][spanbert]") {
  const double p = 0.2;
  const std::int64_t K = 10;
  const double expected = truncated_geometric_mean(p, K);
  CHECK(expected == Approx(3.8).margin(0.05));  // SpanBERT's reported mean
  torch::manual_seed(17);
  const std::int64_t n = 200000;
  auto k = sample_span_lengths(clipped(p, K), {n});
  REQUIRE(k.sizes() == torch::IntArrayRef({n}));
  REQUIRE(k.dtype() == torch::kInt64);
  REQUIRE(k.min().item<std::int64_t>() >= 1);
  REQUIRE(k.max().item<std::int64_t>() <= K);
  CHECK(k.to(torch::kDouble).mean().item<double>() == Approx(expected).margin(0.03));
  // Each length at its renormalised probability p (1-p)^(k-1) / (1 - (1-p)^K).
  const double z = 1 - std::pow(1 - p, static_cast<double>(K));
  for (std::int64_t i = 1; i <= K; ++i) {
    INFO("k = " << i);
    CHECK((k == i).sum().item<std::int64_t>() / static_cast<double>(n) ==
          Approx(p * std::pow(1 - p, static_cast<double>(i - 1)) / z).margin(0.005));
  }
  // mSLAM's character spans: clipped at 20; and p = 1 always gives 1.
  auto k20 = sample_span_lengths(clipped(p, 20), {n});
  REQUIRE(k20.max().item<std::int64_t>() <= 20);
  CHECK(k20.to(torch::kDouble).mean().item<double>() == Approx(truncated_geometric_mean(p, 20)).margin(0.04));
  CHECK((sample_span_lengths(clipped(1.0, 10), {100}) == 1).all().item<bool>());
  // Any shape; the same seed gives the same lengths.
  torch::manual_seed(3);
  auto a = sample_span_lengths(clipped(p, K), {4, 7});
  torch::manual_seed(3);
  CHECK(a.sizes() == torch::IntArrayRef({4, 7}));
  CHECK(a.equal(sample_span_lengths(clipped(p, K), {4, 7})));
}

TEST_CASE("sample_span_lengths refuses parameters without a distribution", "[masking][spanbert][errors]") {
  CHECK_THROWS_AS(sample_span_lengths(clipped(0.2, 0), {3}), std::invalid_argument);   // no length is <= 0
  CHECK_THROWS_AS(sample_span_lengths(clipped(0.0, 10), {3}), std::invalid_argument);  // geometric(0) never succeeds
  CHECK_THROWS_AS(sample_span_lengths(clipped(1.5, 10), {3}), std::invalid_argument);
}

// --- SpanBERT text masking ----------------------------------------------------------------------------

TEST_CASE("span_mask_text: each row's budget exactly, in valid positions, and every code where it belongs",
          "[masking][spanbert]") {
  const std::vector<std::int64_t> lengths = {40, 1, 7, 100, 0, 23, 64, 120};
  const std::int64_t L = 100;  // the 120 row is cut at L
  auto tokens = random_tokens(lengths, L, kFirst, kEnd, 5);
  auto len = torch::tensor(lengths, torch::kInt64);
  TextMaskingOptions o;
  torch::manual_seed(23);
  std::int64_t random_positions = 0, random_differs = 0;
  std::int64_t min_random = kEnd, max_random = -1;
  for (int draw = 0; draw < 300; ++draw) {
    auto m = span_mask_text(tokens, len, o, kMask, kFirst, kEnd);
    REQUIRE(m.inputs.sizes() == tokens.sizes());
    REQUIRE(m.targets.sizes() == tokens.sizes());
    REQUIRE(m.replaced.sizes() == tokens.sizes());
    REQUIRE(m.inputs.dtype() == torch::kInt64);
    REQUIRE(m.targets.dtype() == torch::kBool);
    REQUIRE(m.replaced.dtype() == torch::kInt8);
    REQUIRE(m.positions.sizes() == torch::IntArrayRef({static_cast<std::int64_t>(lengths.size()), 15}));
    REQUIRE(m.position_valid.sizes() == m.positions.sizes());
    std::int64_t run_count = 0;
    for (std::size_t b = 0; b < lengths.size(); ++b) {
      const auto r = static_cast<std::int64_t>(b);
      const std::int64_t n = std::min(lengths[b], L);
      const std::int64_t budget = n == 0 ? 0 : std::max<std::int64_t>(1, std::llround(0.15 * static_cast<double>(n)));
      INFO("row " << b << " of length " << n);
      CHECK(m.targets[r].sum().item<std::int64_t>() == budget);
      if (n < L) CHECK_FALSE(m.targets[r].narrow(0, n, L - n).any().item<bool>());
      // The packed positions: this row's selected ones first, in order, and exactly those marked valid.
      CHECK(m.position_valid[r].sum().item<std::int64_t>() == budget);
      if (budget > 0) {
        CHECK(m.position_valid[r].narrow(0, 0, budget).all().item<bool>());
        CHECK(m.positions[r].narrow(0, 0, budget).equal(m.targets[r].nonzero().flatten()));
      }
      run_count += static_cast<std::int64_t>(runs(m.replaced[r]).size());
    }
    // Selected <=> a replacement code; adjacent spans may merge into one run, never the reverse.
    CHECK(m.targets.equal(m.replaced != 0));
    CHECK(run_count <= m.spans.item<std::int64_t>());
    CHECK(m.spans.item<std::int64_t>() >= 7);  // one span at least in each non-empty row
    // Outside the targets (padding included) the inputs are the tokens.
    CHECK(m.inputs.masked_select(~m.targets).equal(tokens.masked_select(~m.targets)));
    // [MASK] positions hold mask_id; unchanged ones the original token.
    auto masked = m.replaced == 1, random = m.replaced == 2, kept = m.replaced == 3;
    CHECK((m.inputs.masked_select(masked) == kMask).all().item<bool>());
    CHECK(m.inputs.masked_select(kept).equal(tokens.masked_select(kept)));
    // Random positions hold regular ids: never padding, unknown or [MASK].
    auto rand_ids = m.inputs.masked_select(random);
    if (rand_ids.numel() > 0) {
      CHECK((rand_ids >= kFirst).all().item<bool>());
      CHECK((rand_ids < kEnd).all().item<bool>());
      min_random = std::min(min_random, rand_ids.min().item<std::int64_t>());
      max_random = std::max(max_random, rand_ids.max().item<std::int64_t>());
      random_positions += rand_ids.numel();
      random_differs += (rand_ids != tokens.masked_select(random)).sum().item<std::int64_t>();
    }
  }
  // The random ids cover the whole regular range, and are mostly not the original token.
  CHECK(min_random == kFirst);
  CHECK(max_random == kEnd - 1);
  REQUIRE(random_positions > 500);
  CHECK(random_differs / static_cast<double>(random_positions) == Approx(1 - 1.0 / (kEnd - kFirst)).margin(0.02));
}

TEST_CASE("span_mask_text: 80% [MASK] / 10% random / 10% unchanged per span", "[masking][spanbert]") {
  TextMaskingOptions o;
  SECTION("rows with a budget of one token: exactly one span each") {
    // 3..9 tokens: round(0.15 n) <= 1, so each row is one span and its code is the span's.
    std::vector<std::int64_t> lengths;
    for (int i = 0; i < 700; ++i) lengths.push_back(3 + i % 7);
    auto tokens = random_tokens(lengths, 9, kFirst, kEnd, 8);
    auto len = torch::tensor(lengths, torch::kInt64);
    torch::manual_seed(29);
    std::map<int, std::int64_t> spans;
    std::int64_t total = 0;
    for (int draw = 0; draw < 30; ++draw) {
      auto m = span_mask_text(tokens, len, o, kMask, kFirst, kEnd);
      REQUIRE(m.spans.item<std::int64_t>() == static_cast<std::int64_t>(lengths.size()));
      for (std::int64_t r = 0; r < m.replaced.size(0); ++r) {
        auto rr = runs(m.replaced[r]);
        REQUIRE(rr.size() == 1);
        REQUIRE(rr[0].second == 1);
        ++spans[rr[0].first];
        ++total;
      }
    }
    REQUIRE(total == 21000);
    CHECK(spans[1] / static_cast<double>(total) == Approx(0.8).margin(0.015));
    CHECK(spans[2] / static_cast<double>(total) == Approx(0.1).margin(0.015));
    CHECK(spans[3] / static_cast<double>(total) == Approx(0.1).margin(0.015));
  }
  SECTION("long rows: runs of one code, counted by code") {
    std::vector<std::int64_t> lengths(64, 400);
    auto tokens = random_tokens(lengths, 400, kFirst, kEnd, 9);
    auto len = torch::tensor(lengths, torch::kInt64);
    torch::manual_seed(31);
    std::map<int, std::int64_t> runs_by_code, tokens_by_code;
    std::int64_t run_total = 0, spans = 0, selected = 0;
    for (int draw = 0; draw < 20; ++draw) {
      auto m = span_mask_text(tokens, len, o, kMask, kFirst, kEnd);
      spans += m.spans.item<std::int64_t>();
      for (std::int64_t r = 0; r < m.replaced.size(0); ++r)
        for (auto [code, n] : runs(m.replaced[r])) {
          ++runs_by_code[code];
          tokens_by_code[code] += n;
          ++run_total;
          selected += n;
        }
    }
    REQUIRE(selected == 20 * 64 * 60);  // 15% of 400 in every row
    // Spans that touch and share a code read as one run; that is rare at 15%.
    CHECK(run_total <= spans);
    CHECK(run_total >= spans * 9 / 10);
    CHECK(runs_by_code[1] / static_cast<double>(run_total) == Approx(0.8).margin(0.03));
    CHECK(runs_by_code[2] / static_cast<double>(run_total) == Approx(0.1).margin(0.02));
    CHECK(runs_by_code[3] / static_cast<double>(run_total) == Approx(0.1).margin(0.02));
    // The code does not depend on the length, so the token shares follow the same split.
    CHECK(tokens_by_code[1] / static_cast<double>(selected) == Approx(0.8).margin(0.03));
    CHECK(tokens_by_code[2] / static_cast<double>(selected) == Approx(0.1).margin(0.02));
    CHECK(tokens_by_code[3] / static_cast<double>(selected) == Approx(0.1).margin(0.02));
    // Spans average a little under 3.8 tokens: the last span of a row is cut to the budget.
    const double mean_span = static_cast<double>(selected) / static_cast<double>(spans);
    CHECK(mean_span > 3.0);
    CHECK(mean_span < 3.8);
  }
}

TEST_CASE("span_mask_text: shares and budget follow the options", "[masking][spanbert]") {
  TextMaskingOptions o;
  o.budget = 0.5;
  o.mask_share = 0.0;
  o.random_share = 0.0;  // everything selected is kept as it was
  o.max_span = 1;
  std::vector<std::int64_t> lengths = {10, 20, 30};
  auto tokens = random_tokens(lengths, 30, kFirst, kEnd, 1);
  auto len = torch::tensor(lengths, torch::kInt64);
  torch::manual_seed(2);
  auto m = span_mask_text(tokens, len, o, kMask, kFirst, kEnd);
  CHECK(m.targets.sum(1).equal(torch::tensor(std::vector<std::int64_t>{5, 10, 15})));
  CHECK(m.spans.item<std::int64_t>() == 30);  // spans of one token
  CHECK(m.inputs.equal(tokens));
  CHECK((m.replaced.masked_select(m.targets) == 3).all().item<bool>());

  o.mask_share = 1.0;
  auto all_masked = span_mask_text(tokens, len, o, kMask, kFirst, kEnd);
  CHECK((all_masked.inputs.masked_select(all_masked.targets) == kMask).all().item<bool>());
  CHECK_THROWS_AS(span_mask_text(tokens, len, o, kMask, 5, 5), std::invalid_argument);
}

TEST_CASE("span_mask_text: the papers' span lengths, fixed or geometric with a given mean, within the budget",
          "[masking][spanbert]") {
  // Rows long enough that the 15% budget holds several spans: 400 characters -> 60 selected.
  const std::vector<std::int64_t> lengths(40, 400);
  auto tokens = random_tokens(lengths, 400, kFirst, kEnd, 3);
  auto len = torch::tensor(lengths, torch::kInt64);
  torch::manual_seed(4);
  TextMaskingOptions fixed;
  fixed.span = SpanLength::Fixed;
  fixed.span_length = 20;  // mSLAM's characters
  auto m = span_mask_text(tokens, len, fixed, kMask, kFirst, kEnd);
  CHECK(m.targets.sum(1).equal(torch::full({40}, 60, torch::kInt64)));  // the 15% budget, exactly
  CHECK(m.spans.item<std::int64_t>() == 40 * 3);                                             // three spans of 20 in each row
  // Every run of selected positions is a whole number of spans: lengths 20, 40 or 60.
  auto t = m.targets.to(torch::kCPU);
  for (std::int64_t b = 0; b < 40; ++b) {
    std::int64_t run = 0;
    for (std::int64_t i = 0; i <= 400; ++i) {
      const bool on = i < 400 && t[b][i].item<bool>();
      if (on) ++run;
      if (!on && run > 0) {
        CHECK(run % 20 == 0);
        run = 0;
      }
    }
  }

  // Geometric with mean 5 (SLAM's pieces): the realised mean span length is 5, within sampling error,
  // and the budget still holds (the last span of a row is cut to it, which shortens the mean a little).
  TextMaskingOptions geometric;
  geometric.span = SpanLength::Geometric;
  geometric.span_length = 5;
  CHECK(sample_span_lengths(geometric, {20000}).to(torch::kDouble).mean().item<double>() == Approx(5.0).epsilon(0.03));
  auto g = span_mask_text(tokens, len, geometric, kMask, kFirst, kEnd);
  CHECK(g.targets.sum(1).equal(torch::full({40}, 60, torch::kInt64)));
  const double realised = 40.0 * 60.0 / static_cast<double>(g.spans.item<std::int64_t>());
  CHECK(realised > 4.0);
  CHECK(realised < 5.5);

  // SpanBERT's own: clipped geometric, mean 3.8 (checked above); and a fixed length below 1 is refused.
  TextMaskingOptions bad;
  bad.span = SpanLength::Fixed;
  CHECK_THROWS_AS(sample_span_lengths(bad, {1}), std::invalid_argument);
  CHECK_THROWS_AS(span_mask_text(tokens, len, bad, kMask, kFirst, kEnd), std::invalid_argument);
}

TEST_CASE("span_mask_text: the same seed gives the same masking", "[masking][spanbert]") {
  std::vector<std::int64_t> lengths = {50, 80};
  auto tokens = random_tokens(lengths, 80, kFirst, kEnd, 3);
  auto len = torch::tensor(lengths, torch::kInt64);
  torch::manual_seed(5);
  auto ma = span_mask_text(tokens, len, {}, kMask, kFirst, kEnd);
  torch::manual_seed(5);
  auto mb = span_mask_text(tokens, len, {}, kMask, kFirst, kEnd);
  CHECK(ma.inputs.equal(mb.inputs));
  CHECK(ma.replaced.equal(mb.replaced));
  CHECK(ma.spans.equal(mb.spans));
}

TEST_CASE("span_mask_text: spans are placed uniformly over the non-overlapping arrangements, in random order",
          "[masking][spanbert]") {
  // Rows of 6 tokens, budget 3, fixed spans of 2: every row gets a span of 2 and one cut to 1. Counted by
  // hand: 2 spans + 3 free tokens are 5 items, C(5, 2) = 10 choices of the spans' items, in 2 orders,
  // so 20 arrangements, each 1/20. The selected sets of positions they give, as bit patterns:
  std::map<int, int> arrangements;
  for (int first = 0; first < 5; ++first)
    for (int second = first + 1; second < 5; ++second)
      for (int long_first = 0; long_first < 2; ++long_first) {
        const int a = long_first ? 2 : 1, b = long_first ? 1 : 2;
        const int start_a = first, start_b = second - 1 + a;  // after the first span's tokens
        int bits = 0;
        for (int t = start_a; t < start_a + a; ++t) bits |= 1 << t;
        for (int t = start_b; t < start_b + b; ++t) bits |= 1 << t;
        ++arrangements[bits];
      }
  REQUIRE(arrangements.size() > 10);
  const std::int64_t rows = 20000;
  auto tokens = random_tokens(std::vector<std::int64_t>(rows, 6), 6, kFirst, kEnd, 11);
  auto len = torch::full({rows}, 6, torch::kInt64);
  TextMaskingOptions o;
  o.budget = 0.5;
  o.span = SpanLength::Fixed;
  o.span_length = 2;
  torch::manual_seed(13);
  auto m = span_mask_text(tokens, len, o, kMask, kFirst, kEnd);
  CHECK(m.spans.item<std::int64_t>() == 2 * rows);
  auto weights = torch::tensor(std::vector<std::int64_t>{1, 2, 4, 8, 16, 32});
  auto bits = (m.targets.to(torch::kLong) * weights).sum(1);
  std::map<int, std::int64_t> seen;
  for (std::int64_t r = 0; r < rows; ++r) ++seen[static_cast<int>(bits[r].item<std::int64_t>())];
  for (const auto& [pattern, count] : seen) {
    INFO("pattern " << pattern);
    REQUIRE(arrangements.count(pattern) == 1);  // never an overlap, never outside the row
  }
  for (const auto& [pattern, ways] : arrangements) {
    INFO("pattern " << pattern << ", " << ways << " of 20 arrangements");
    CHECK(seen[pattern] / static_cast<double>(rows) == Approx(ways / 20.0).margin(0.01));
  }
}

TEST_CASE("span_mask_text refuses tokens and lengths of the wrong shape", "[masking][spanbert][errors]") {
  auto tokens = torch::full({2, 5}, kFirst, torch::kInt64);
  CHECK_THROWS_AS(span_mask_text(tokens.flatten(), torch::tensor({5, 5}), {}, kMask, kFirst, kEnd), std::invalid_argument);
  CHECK_THROWS_AS(span_mask_text(tokens, torch::tensor({5}), {}, kMask, kFirst, kEnd), std::invalid_argument);
  CHECK_THROWS_AS(span_mask_text(tokens, torch::full({2, 1}, 5), {}, kMask, kFirst, kEnd), std::invalid_argument);
  // A budget above the row has no placement.
  TextMaskingOptions too_much;
  too_much.budget = 1.5;
  CHECK_THROWS_AS(span_mask_text(tokens, torch::tensor({5, 5}), too_much, kMask, kFirst, kEnd), std::invalid_argument);
  // No rows, or rows of no tokens: nothing selected.
  auto empty = span_mask_text(torch::zeros({0, 4}, torch::kInt64), torch::zeros({0}, torch::kInt64), {}, kMask, kFirst, kEnd);
  CHECK(empty.targets.numel() == 0);
  CHECK(empty.spans.item<std::int64_t>() == 0);
  CHECK(empty.positions.sizes() == torch::IntArrayRef({0, 0}));
  auto zero_length = span_mask_text(tokens, torch::zeros({2}, torch::kInt64), {}, kMask, kFirst, kEnd);
  CHECK_FALSE(zero_length.targets.any().item<bool>());
  CHECK(zero_length.inputs.equal(tokens));
}

TEST_CASE("masked_prediction equals the cross-entropy, accuracy and majority over the counted positions alone",
          "[masking][prediction]") {
  torch::manual_seed(31);
  const std::int64_t B = 3, T = 6, V = 5;
  auto logits = torch::randn({B, T, V}, torch::requires_grad());
  auto targets = torch::randint(0, V, {B, T}, torch::kLong);
  auto counted = torch::rand({B, T}) < 0.5;
  counted[0][0] = true;
  auto out = masked_prediction(logits, targets, counted);
  // The reference: the boolean index the losses used before.
  auto picked = logits.detach().index({counted});
  auto picked_targets = targets.index({counted});
  const auto n = static_cast<double>(picked_targets.numel());
  CHECK(out.count.item<double>() == n);
  CHECK(out.loss.item<double>() == Approx(torch::nn::functional::cross_entropy(picked, picked_targets).item<double>()).epsilon(1e-6));
  CHECK(out.accuracy.item<double>() == Approx((picked.argmax(-1) == picked_targets).sum().item<double>() / n));
  CHECK(out.majority_accuracy.item<double>() == Approx(torch::bincount(picked_targets).max().item<double>() / n));
  // No gradient reaches an uncounted position, even through a NaN there.
  auto poisoned = logits.detach().clone();
  poisoned.index_put_({~counted}, std::nan(""));
  poisoned.requires_grad_(true);
  auto again = masked_prediction(poisoned, targets, counted);
  CHECK(again.loss.item<double>() == Approx(out.loss.item<double>()).epsilon(1e-6));
  again.loss.backward();
  CHECK(torch::isfinite(poisoned.grad()).all().item<bool>());
  CHECK(poisoned.grad().index({~counted}).abs().sum().item<double>() == 0.0);
  // Uncounted targets may be padding ids out of range.
  auto padded_targets = targets.masked_fill(~counted, -100);
  CHECK(masked_prediction(logits, padded_targets, counted).loss.item<double>() == Approx(out.loss.item<double>()).epsilon(1e-6));
  // Half-precision logits: the counts and sums are float32.
  CHECK(masked_prediction(logits.detach().to(torch::kBFloat16), targets, counted).count.dtype() == torch::kFloat32);
  // Grouped targets (B, T, G) with one softmax per group.
  auto grouped = masked_prediction(logits.view({B, 2, T / 2, V}), targets.view({B, 2, T / 2}), counted.view({B, 2, T / 2}));
  CHECK(grouped.loss.item<double>() == Approx(out.loss.item<double>()).epsilon(1e-6));
  // Nothing counted: a zero loss that is still part of the graph.
  auto none = masked_prediction(logits, targets, torch::zeros({B, T}, torch::kBool));
  CHECK(none.loss.item<double>() == 0.0);
  CHECK(none.accuracy.item<double>() == 0.0);
  REQUIRE(none.loss.requires_grad());
  none.loss.backward();
  CHECK_THROWS_AS(masked_prediction(logits, targets.narrow(1, 0, 2), counted.narrow(1, 0, 2)), std::invalid_argument);
  CHECK_THROWS_AS(masked_prediction(logits, targets, counted.narrow(0, 0, 1)), std::invalid_argument);
}

TEST_CASE("gather_positions takes each row's positions along dim 1", "[masking][prediction]") {
  auto x = torch::arange(2 * 4 * 3, torch::kFloat32).reshape({2, 4, 3});
  auto index = torch::tensor({3, 1, 0, 0}, torch::kLong).reshape({2, 2});
  auto rows = gather_positions(x, index);
  REQUIRE(rows.sizes() == torch::IntArrayRef({2, 2, 3}));
  CHECK(rows[0][0].equal(x[0][3]));
  CHECK(rows[0][1].equal(x[0][1]));
  CHECK(rows[1][0].equal(x[1][0]));
  CHECK(gather_positions(torch::arange(8, torch::kFloat32).reshape({2, 4}), index).equal(torch::tensor({3.0f, 1.0f, 4.0f, 4.0f}).reshape({2, 2})));
  CHECK_THROWS_AS(gather_positions(x, index.narrow(0, 0, 1)), std::invalid_argument);
  CHECK_THROWS_AS(gather_positions(x, index.flatten()), std::invalid_argument);
}
