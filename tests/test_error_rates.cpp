// Levenshtein distance, character and word error rates, checked on cases worked out by hand.
#include <algorithm>
#include <fstream>
#include <sstream>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "workbench/edit_distance.h"

#include <catch2/catch.hpp>

using namespace workbench;

namespace {

/// An independent full-matrix Levenshtein distance for the randomized comparison below.
std::int64_t reference_distance(const std::vector<std::int64_t>& a, const std::vector<std::int64_t>& b) {
  std::vector<std::vector<std::int64_t>> d(a.size() + 1, std::vector<std::int64_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = static_cast<std::int64_t>(i);
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = static_cast<std::int64_t>(j);
  for (std::size_t i = 1; i <= a.size(); ++i)
    for (std::size_t j = 1; j <= b.size(); ++j)
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
  return d[a.size()][b.size()];
}

}  // namespace

TEST_CASE("identical strings have no errors", "[cer][wer]") {
  auto c = char_errors("hello world", "hello world");
  CHECK(c.errors == 0);
  CHECK(c.ref_length == 11);
  CHECK(c.rate() == 0.0);
  auto w = word_errors("hello world", "hello world");
  CHECK(w.errors == 0);
  CHECK(w.ref_length == 2);
  CHECK(w.rate() == 0.0);
}

TEST_CASE("kitten -> sitting: three edits over six reference characters", "[cer]") {
  // k->s, e->i, +g.
  auto c = char_errors("kitten", "sitting");
  CHECK(c.errors == 3);
  CHECK(c.ref_length == 6);
  CHECK(c.rate() == Approx(0.5));
  // The other way round the reference is longer.
  auto r = char_errors("sitting", "kitten");
  CHECK(r.errors == 3);
  CHECK(r.ref_length == 7);
}

TEST_CASE("insertions only, deletions only, substitutions only", "[cer]") {
  auto ins = char_errors("abc", "xabyc");
  CHECK(ins.errors == 2);
  CHECK(ins.ref_length == 3);
  auto del = char_errors("abcdef", "ace");
  CHECK(del.errors == 3);
  CHECK(del.ref_length == 6);
  auto sub = char_errors("abcd", "abxy");
  CHECK(sub.errors == 2);
  CHECK(sub.ref_length == 4);
  auto swap = char_errors("ab", "ba");  // no transpositions in Levenshtein
  CHECK(swap.errors == 2);
  // Spaces are characters too.
  auto space = char_errors("a b", "ab");
  CHECK(space.errors == 1);
  CHECK(space.ref_length == 3);
}

TEST_CASE("an empty hypothesis is all deletions, an empty reference counts insertions", "[cer][wer]") {
  auto c = char_errors("abcd", "");
  CHECK(c.errors == 4);
  CHECK(c.ref_length == 4);
  CHECK(c.rate() == 1.0);
  auto w = word_errors("one two three", "");
  CHECK(w.errors == 3);
  CHECK(w.ref_length == 3);
  CHECK(w.rate() == 1.0);

  auto e = char_errors("", "xyz");
  CHECK(e.errors == 3);
  CHECK(e.ref_length == 0);
  CHECK(e.rate() == 3.0);  // documented: errors alone when the reference is empty
  auto both = char_errors("", "");
  CHECK(both.errors == 0);
  CHECK(both.ref_length == 0);
  CHECK(both.rate() == 0.0);
  auto ew = word_errors("   ", "some words");
  CHECK(ew.errors == 2);
  CHECK(ew.ref_length == 0);
}

TEST_CASE("CER counts Unicode code points, not bytes", "[cer][utf8]") {
  // "привет" is 6 code points (12 bytes); one substitution е -> о.
  auto c = char_errors("привет", "привот");
  CHECK(c.errors == 1);
  CHECK(c.ref_length == 6);
  CHECK(c.rate() == Approx(1.0 / 6.0));
  // An accented letter against its plain form is one substitution, not two byte edits.
  auto e = char_errors("école", "ecole");
  CHECK(e.errors == 1);
  CHECK(e.ref_length == 5);
  // Three-byte (CJK) and four-byte (emoji) code points.
  auto cjk = char_errors("日本語", "日本");
  CHECK(cjk.errors == 1);
  CHECK(cjk.ref_length == 3);
  auto emoji = char_errors("a\xF0\x9F\x98\x80" "b", "ab");  // U+1F600
  CHECK(emoji.errors == 1);
  CHECK(emoji.ref_length == 3);
}

TEST_CASE("WER works on white-space separated words", "[wer]") {
  auto w = word_errors("the cat sat", "the cat sat down");
  CHECK(w.errors == 1);
  CHECK(w.ref_length == 3);
  CHECK(w.rate() == Approx(1.0 / 3.0));
  auto s = word_errors("the cat sat", "the bat sat");
  CHECK(s.errors == 1);
  CHECK(s.ref_length == 3);
  // One wrong letter is one whole wrong word.
  auto d = word_errors("a quick brown fox", "a quick brawn");
  CHECK(d.errors == 2);
  CHECK(d.ref_length == 4);
  // Runs of spaces, tabs and new lines separate words the same as one space.
  auto ws = word_errors("  the cat\tsat\n", "the  cat sat");
  CHECK(ws.errors == 0);
  CHECK(ws.ref_length == 3);
  // Multi-byte words.
  auto ru = word_errors("привет мир", "привет мiр");
  CHECK(ru.errors == 1);
  CHECK(ru.ref_length == 2);
}

TEST_CASE("ErrorCount pools corpus errors the way sclite does", "[cer]") {
  ErrorCount none;
  CHECK(none.errors == 0);
  CHECK(none.ref_length == 0);
  CHECK(none.rate() == 0.0);

  ErrorCount total;
  total += char_errors("kitten", "sitting");  // 3 / 6
  total += char_errors("abcd", "abcd");       // 0 / 4
  total += ErrorCount{1, 10};
  CHECK(total.errors == 4);
  CHECK(total.ref_length == 20);
  CHECK(total.rate() == Approx(0.2));
  // Pooled, not the mean of per-utterance rates ((0.5 + 0 + 0.1) / 3 = 0.2 only by accident here).
  ErrorCount two;
  two += ErrorCount{1, 1};
  two += ErrorCount{0, 9};
  CHECK(two.rate() == Approx(0.1));
  // operator+= returns the object, so it chains.
  ErrorCount chained;
  (chained += ErrorCount{1, 2}) += ErrorCount{1, 2};
  CHECK(chained.errors == 2);
  CHECK(chained.ref_length == 4);
}

TEST_CASE("edit_distance agrees with a full-matrix implementation and is a metric", "[edit_distance]") {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int> len(0, 12), sym(0, 3);
  auto random_seq = [&] {
    std::vector<std::int64_t> v(static_cast<std::size_t>(len(rng)));
    for (auto& x : v) x = sym(rng);
    return v;
  };
  for (int trial = 0; trial < 300; ++trial) {
    auto a = random_seq(), b = random_seq(), c = random_seq();
    const auto dab = edit_distance(a, b);
    INFO("trial " << trial);
    CHECK(dab == reference_distance(a, b));
    CHECK(dab == edit_distance(b, a));
    CHECK(dab <= edit_distance(a, c) + edit_distance(c, b));
    const auto la = static_cast<std::int64_t>(a.size()), lb = static_cast<std::int64_t>(b.size());
    CHECK(dab >= std::abs(la - lb));
    CHECK(dab <= std::max(la, lb));
    CHECK((dab == 0) == (a == b));
  }
  CHECK(edit_distance(std::vector<std::string>{"a", "b"}, std::vector<std::string>{"b"}) == 1);
  CHECK(edit_distance(std::vector<char32_t>{U'п', U'р'}, std::vector<char32_t>{U'р', U'п'}) == 2);
}

TEST_CASE("WER against NIST sclite on a fixed corpus", "[error_rates][golden]") {
  // tests/golden/make_sclite_golden.py ran sclite (sctk) on these reference and hypothesis files and kept
  // its raw summary: the corpus's words and errors on the "Sum" line.
  const std::string dir = std::string(WORKBENCH_TEST_DATA_DIR) + "/sclite/";
  auto lines = [](const std::string& path) {
    std::ifstream in(path);
    REQUIRE(in.good());
    std::vector<std::string> out;
    std::string line;
    while (std::getline(in, line)) out.push_back(line.substr(0, line.rfind('(')));  // drop "(id)"
    return out;
  };
  const auto refs = lines(dir + "ref.trn"), hyps = lines(dir + "hyp.trn");
  REQUIRE(refs.size() == hyps.size());
  ErrorCount total;
  std::int64_t wrong_sentences = 0;
  for (std::size_t i = 0; i < refs.size(); ++i) {
    const auto e = word_errors(refs[i], hyps[i]);
    total += e;
    wrong_sentences += e.errors > 0;
  }
  std::ifstream summary(dir + "sclite_rsum.txt");
  std::string line, sum;
  while (std::getline(summary, line))
    if (line.find("| Sum ") != std::string::npos) sum = line;
  REQUIRE_FALSE(sum.empty());
  // "| Sum  |   12     49 |   31      9      9      9     27     11 |": sentences, words | correct,
  // substitutions, deletions, insertions, errors, sentences with an error.
  for (char& c : sum)
    if (c == '|') c = ' ';
  std::istringstream fields(sum);
  std::string label;
  std::int64_t sentences = 0, words = 0, correct = 0, sub = 0, del = 0, ins = 0, errors = 0, sentence_errors = 0;
  fields >> label >> sentences >> words >> correct >> sub >> del >> ins >> errors >> sentence_errors;
  REQUIRE(label == "Sum");
  CHECK(sentences == static_cast<std::int64_t>(refs.size()));
  CHECK(total.ref_length == words);
  CHECK(total.errors == errors);
  CHECK(wrong_sentences == sentence_errors);
  CHECK(total.rate() == Approx(static_cast<double>(errors) / static_cast<double>(words)));
}
