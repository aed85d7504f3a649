#pragma once
// Corpus BLEU as sacreBLEU 2.x computes it (Papineni et al. 2002; Post 2018, "A Call for Clarity in
// Reporting BLEU Scores"): the 13a tokeniser of mteval-v13a.pl, clipped n-gram counts up to 4-grams
// against every reference, the closest reference length for the brevity penalty, and sacreBLEU's
// smoothing methods. Checked against the values published in sacreBLEU's own test suite
// (test/test_bleu.py) in tests/test_translation.cpp.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace workbench::translation {

enum class BleuTokenizer {
  None,   ///< split on white space only (sacreBLEU tokenize="none")
  Mteval13a,  ///< sacreBLEU's default "13a"
};

enum class BleuSmoothing {
  None,   ///< a zero n-gram precision makes the score 0
  Exp,    ///< NIST geometric sequence: the k-th zero precision becomes 1 / (2^k * total)
  Floor,  ///< a zero count becomes `value` (sacreBLEU's default value: 0.1)
  AddK,   ///< `value` added to the counts and totals of orders 2..4 (default value: 1)
};

struct BleuOptions {
  BleuTokenizer tokenizer = BleuTokenizer::Mteval13a;
  /// sacreBLEU's corpus_bleu defaults to Exp; the workbench reports unsmoothed corpus BLEU unless asked.
  BleuSmoothing smoothing = BleuSmoothing::None;
  /// Floor / AddK value; negative = sacreBLEU's default for the method.
  double smooth_value = -1;
  /// Average only the orders that have n-grams at all (sacreBLEU's sentence-level default).
  bool effective_order = false;
};

/// Sufficient statistics of a corpus: add them over sentences, batches or ranks, score once at the end.
struct BleuStats {
  std::int64_t sys_len = 0;  ///< hypothesis tokens
  std::int64_t ref_len = 0;  ///< closest reference's tokens, summed
  std::array<double, 4> correct{};  ///< clipped matches of 1..4-grams (double: add-k smoothing adds fractions)
  std::array<double, 4> total{};    ///< hypothesis 1..4-grams
  BleuStats& operator+=(const BleuStats& other);
};

struct BleuScore {
  double score = 0;                 ///< 0..100
  double brevity_penalty = 0;
  std::array<double, 4> precisions{};  ///< 0..100, after smoothing
  BleuStats stats;
};

/// mteval-v13a tokenisation as sacreBLEU's Tokenizer13a: drops "<skipped>", joins "-\n", unescapes
/// &quot; &amp; &lt; &gt;, splits off punctuation and symbols, and periods/commas not between digits.
/// Returns the tokens joined by single spaces.
std::string tokenize_13a(const std::string& line);

/// One hypothesis against its references (one or more). Throws std::invalid_argument without references.
BleuStats bleu_statistics(const std::string& hypothesis, const std::vector<std::string>& references,
                          const BleuOptions& options = {});

/// The score of accumulated statistics (sacreBLEU's BLEU.compute_bleu).
BleuScore compute_bleu(BleuStats stats, const BleuOptions& options = {});

/// Corpus BLEU: hypotheses[i] against references[k][i] for every reference stream k (sacreBLEU's
/// corpus_bleu(hyps, [ref_stream_1, ...])). Throws std::invalid_argument when a stream's length differs.
BleuScore corpus_bleu(const std::vector<std::string>& hypotheses,
                      const std::vector<std::vector<std::string>>& references, const BleuOptions& options = {});

}  // namespace workbench::translation
