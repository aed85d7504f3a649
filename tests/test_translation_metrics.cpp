// BLEU and chrF against the values published in sacreBLEU's own test suite (mjpost/sacrebleu
// test/test_bleu.py and test/test_chrf.py; sacreBLEU is not in Debian, so they are written here). Split
// from test_translation.cpp so that the sanitized build (tests/sanitized/) runs them without LibTorch.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "bleu.h"
#include "chrf.h"

#include <catch2/catch.hpp>

using namespace workbench::translation;

namespace {

const std::vector<std::string> kHyps = {"The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."};
const std::vector<std::vector<std::string>> kRefs = {
    {"The dog bit the man.", "It was not unexpected.", "The man bit him first."},
    {"The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."}};

// sacreBLEU's raw_corpus_bleu: no tokenisation, floor smoothing, effective order.
BleuOptions raw(double floor) {
  BleuOptions o;
  o.tokenizer = BleuTokenizer::None;
  o.smoothing = BleuSmoothing::Floor;
  o.smooth_value = floor;
  o.effective_order = true;
  return o;
}

BleuStats stats(std::array<double, 4> correct, std::array<double, 4> total, std::int64_t sys, std::int64_t ref) {
  BleuStats s;
  s.correct = correct;
  s.total = total;
  s.sys_len = sys;
  s.ref_len = ref;
  return s;
}

}  // namespace

TEST_CASE("BLEU: sacreBLEU's corpus_bleu test values", "[translation][bleu]") {
  CHECK(corpus_bleu(kHyps, kRefs).score == Approx(48.530827).margin(1e-6));  // 13a, unsmoothed
  BleuOptions exp;
  exp.smoothing = BleuSmoothing::Exp;  // sacreBLEU's default
  CHECK(corpus_bleu(kHyps, kRefs, exp).score == Approx(48.530827).margin(1e-6));
  BleuOptions none;
  none.tokenizer = BleuTokenizer::None;
  CHECK(corpus_bleu(kHyps, kRefs, none).score == Approx(49.1919566).margin(1e-6));
  CHECK(corpus_bleu({"", "", ""}, kRefs).score == 0.0);  // empty hypotheses count, and score 0
  CHECK(corpus_bleu({"", "", ""}, kRefs, exp).score == 0.0);
}

TEST_CASE("BLEU: sacreBLEU's raw_corpus_bleu, statistics, scoring and degenerate cases", "[translation][bleu]") {
  CHECK(corpus_bleu({"this is a test", "another test"}, {{"ref1", "ref2"}}, raw(.01)).score / 100 ==
        Approx(0.003799178428257963).margin(1e-8));
  CHECK(corpus_bleu({"this is a test"}, {{"this is a test"}}, raw(.01)).score / 100 == Approx(1.0).margin(1e-8));
  CHECK(corpus_bleu({"this is a fest"}, {{"this is a test"}}, raw(.01)).score / 100 ==
        Approx(0.223606797749979).margin(1e-8));
  // Effective order.
  CHECK(corpus_bleu({"test"}, {{"a test"}}, raw(.01)).score / 100 == Approx(0.3678794411714425).margin(1e-8));
  CHECK(corpus_bleu({"a test"}, {{"a test"}}, raw(.01)).score / 100 == Approx(1.0).margin(1e-8));
  CHECK(corpus_bleu({"a little test"}, {{"a test"}}, raw(.01)).score / 100 == Approx(0.03218297948685433).margin(1e-8));
  // Statistics and the offset (floor value).
  const std::string hyp = "am I am a character sequence", ref = "I am a symbol string sequence a a";
  const auto s = bleu_statistics(hyp, {ref}, raw(.01));
  CHECK(s.correct == std::array<double, 4>{4, 2, 1, 0});
  CHECK(s.total == std::array<double, 4>{6, 5, 4, 3});
  CHECK(corpus_bleu({hyp}, {{ref}}, raw(0.0)).score / 100 == 0.0);
  CHECK(corpus_bleu({hyp}, {{ref}}, raw(0.1)).score / 100 == Approx(0.1555722182).margin(1e-8));
  // compute_bleu on given statistics.
  CHECK(compute_bleu(stats({9, 7, 5, 3}, {10, 8, 6, 4}, 11, 11)).score / 100 == Approx(0.8375922397).margin(1e-8));
  BleuOptions floor;
  floor.smoothing = BleuSmoothing::Floor;
  for (const auto& [st, value] : std::vector<std::pair<BleuStats, double>>{
           {stats({0, 0, 0, 0}, {4, 4, 2, 1}, 0, 1), 0.0},
           {stats({0, 0, 0, 0}, {10, 11, 12, 0}, 14, 10), 0.0},
           {stats({0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0), 0.0},
           {stats({6, 5, 4, 0}, {6, 5, 4, 3}, 6, 6), 0.0},
           {stats({0, 0, 0, 0}, {0, 0, 0, 0}, 0, 0), 0.1},
           {stats({0, 0, 0, 0}, {0, 0, 0, 0}, 1, 5), 0.01}}) {
    floor.smooth_value = value;
    CHECK(compute_bleu(st, floor).score == 0.0);
  }
}

TEST_CASE("BLEU: the 13a tokeniser splits punctuation as mteval-v13a does", "[translation][bleu]") {
  CHECK(tokenize_13a("It wasn't surprising.") == "It wasn't surprising .");
  CHECK(tokenize_13a("3.5, a-b 4-5 &amp; (x) $10") == "3.5 , a-b 4 - 5 & ( x ) $ 10");
  CHECK(tokenize_13a("<skipped>line one-\ncontinued\nnext") == "line onecontinued next");
  CHECK_THROWS_AS(corpus_bleu({"a"}, {{"a", "b"}}), std::invalid_argument);
}

TEST_CASE("chrF: sacreBLEU's test_chrf values", "[translation][chrf]") {
  ChrfOptions eps;  // test_chrf: char_order 6, word_order 0, beta 3, eps_smoothing
  eps.beta = 3;
  eps.eps_smoothing = true;
  const std::vector<std::tuple<std::vector<std::string>, std::vector<std::string>, double>> cases = {
      {{"abcdefg"}, {"hijklmnop"}, 0.0},
      {{"a"}, {"b"}, 0.0},
      {{""}, {"b"}, 0.0},
      {{""}, {"ref"}, 0.0},
      {{""}, {"reference"}, 0.0},
      {{"aa"}, {"ab"}, 8.3333},
      {{"a", "b"}, {"a", "c"}, 8.3333},
      {{"a"}, {"a"}, 16.6667},
      {{"a b c"}, {"a b c"}, 50.0},
      {{"a b c"}, {"abc"}, 50.0},
      {{" risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists ."},
       {"risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists ."},
       63.361730},
      {{" Die    Beziehung zwischen  Obama und Netanjahu ist nicht gerade  freundlich. "},
       {"Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."},
       64.1302698},
      {{"Niemand hat die Absicht, eine Mauer zu errichten"}, {"Niemand hat die Absicht, eine Mauer zu errichten"}, 100.0},
  };
  for (const auto& [h, r, expected] : cases) {
    INFO(h.front() << " | " << r.front());
    CHECK(corpus_chrf(h, {r}, eps) == Approx(expected).margin(1e-4));
  }
  ChrfOptions effective = eps;  // sacreBLEU < 2.0 mode
  effective.eps_smoothing = false;
  const std::vector<std::tuple<std::vector<std::string>, std::vector<std::string>, double>> eff = {
      {{"a"}, {"a"}, 100.0}, {{""}, {"reference"}, 0.0}, {{"a b c"}, {"a b c"}, 100.0}, {{"a b c"}, {"abc"}, 100.0},
      {{""}, {"c"}, 0.0},    {{"a", "b"}, {"a", "c"}, 50.0}, {{"aa"}, {"ab"}, 25.0}};
  for (const auto& [h, r, expected] : eff) CHECK(corpus_chrf(h, {r}, effective) == Approx(expected).margin(1e-4));
  ChrfOptions spaces;  // remove_whitespace=False, beta 3
  spaces.beta = 3;
  spaces.include_whitespace = true;
  CHECK(corpus_chrf({"Die Beziehung zwischen Obama und Netanjahu ist nicht gerade freundlich."},
                    {{"Das Verhältnis zwischen Obama und Netanyahu ist nicht gerade freundschaftlich."}}, spaces) ==
        Approx(67.3481606).margin(1e-4));
  CHECK(corpus_chrf({"risk assessment must be made of those who are qualified and expertise in the sector - these are the scientists ."},
                    {{"risk assessment has to be undertaken by those who are qualified and expert in that area - that is the scientists ."}},
                    spaces) == Approx(65.2414427).margin(1e-4));
  ChrfOptions sentence;  // sentence_chrf defaults (beta 2) with eps_smoothing
  sentence.eps_smoothing = true;
  const std::vector<std::tuple<std::string, std::string, double>> sentences = {
      {"Co nás nejvíc trápí, protože lékaři si vybírají, kdo bude žít a kdo zemře.",
       "Nejvíce smutní jsme z toho, že musíme rozhodovat o tom, kdo bude žít a kdo zemře.", 39.14078509},
      {"Nebo prostě nemají vybavení, které by jim pomohlo, uvedli lékaři.",
       "A někdy nemáme ani potřebný materiál, abychom jim pomohli, popsali lékaři.", 31.22557079},
      {"Lapali po dechu, jejich životy skončily dřív, než skutečně začaly.",
       "Lapali po dechu a pak jejich život skončil - dřív, než skutečně mohl začít, připomněli.", 57.15704367}};
  for (const auto& [h, r, expected] : sentences)
    CHECK(chrf_score(chrf_statistics(h, {r}, sentence), sentence) == Approx(expected).margin(1e-4));
}
