#pragma once
// chrF (Popović 2015, "chrF: character n-gram F-score for automatic MT evaluation") as sacreBLEU 2.x
// computes it: character n-grams of orders 1..6 with white space removed, precision and recall averaged
// over the orders that occur, and F-beta with beta = 2. Word n-grams (chrF++) are not implemented.
// Checked against the values published in sacreBLEU's test/test_chrf.py (tests/test_translation.cpp).
#include <cstdint>
#include <string>
#include <vector>

namespace workbench::translation {

struct ChrfOptions {
  int char_order = 6;
  double beta = 2;
  /// Keep spaces inside the n-grams (sacreBLEU whitespace=True); by default they are removed.
  bool include_whitespace = false;
  /// chrF++.py's epsilon smoothing: average the F-scores of all orders, an empty order counting as ~0.
  /// By default (false) precision and recall are averaged over the orders that have n-grams on both sides.
  bool eps_smoothing = false;
};

/// Per order n: hypothesis n-grams, reference n-grams, matches; 3 * char_order counts. Add them over a corpus.
using ChrfStats = std::vector<std::int64_t>;

/// One hypothesis against its references: the statistics of the reference with the best F-score.
/// Throws std::invalid_argument without references.
ChrfStats chrf_statistics(const std::string& hypothesis, const std::vector<std::string>& references,
                          const ChrfOptions& options = {});
/// 0..100.
double chrf_score(const ChrfStats& stats, const ChrfOptions& options = {});
/// Corpus chrF: the statistics of every sentence added, then scored once (sacreBLEU's corpus_chrf).
double corpus_chrf(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references,
                   const ChrfOptions& options = {});

}  // namespace workbench::translation
