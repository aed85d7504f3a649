#include "chrf.h"

#include <algorithm>
#include <map>
#include <stdexcept>

#include "workbench/text.h"

namespace workbench::translation {
namespace {

std::u32string prepare(const std::string& line, bool include_whitespace) {
  if (include_whitespace) return utf8_decode(line);
  std::string joined;
  for (const auto& w : split_words(line)) joined += w;
  return utf8_decode(joined);
}

std::map<std::u32string, std::int64_t> char_ngrams(const std::u32string& s, std::size_t n) {
  std::map<std::u32string, std::int64_t> out;
  for (std::size_t i = 0; i + n <= s.size(); ++i) ++out[s.substr(i, n)];
  return out;
}

ChrfStats statistics_of(const std::u32string& hyp, const std::u32string& ref, int order) {
  ChrfStats s(static_cast<std::size_t>(3 * order), 0);
  for (int n = 1; n <= order; ++n) {
    const auto h = char_ngrams(hyp, static_cast<std::size_t>(n));
    const auto r = char_ngrams(ref, static_cast<std::size_t>(n));
    std::int64_t nh = 0, nr = 0, match = 0;
    for (const auto& [g, c] : h) {
      nh += c;
      auto it = r.find(g);
      if (it != r.end()) match += std::min(c, it->second);
    }
    for (const auto& [g, c] : r) nr += c;
    const auto i = static_cast<std::size_t>(3 * (n - 1));
    s[i] = nh;
    s[i + 1] = nr;
    s[i + 2] = match;
  }
  return s;
}

}  // namespace

ChrfStats chrf_statistics(const std::string& hypothesis, const std::vector<std::string>& references,
                          const ChrfOptions& options) {
  if (references.empty()) throw std::invalid_argument("chrF needs at least one reference per hypothesis");
  const auto hyp = prepare(hypothesis, options.include_whitespace);
  ChrfStats best;
  double best_score = -1;
  for (const auto& r : references) {
    auto s = statistics_of(hyp, prepare(r, options.include_whitespace), options.char_order);
    const double f = chrf_score(s, options);
    if (f > best_score) {
      best_score = f;
      best = std::move(s);
    }
  }
  return best;
}

double chrf_score(const ChrfStats& stats, const ChrfOptions& options) {
  const double eps = 1e-16, factor = options.beta * options.beta;
  double score = 0, avg_prec = 0, avg_rec = 0;
  int effective = 0;
  for (int n = 0; n < options.char_order; ++n) {
    const auto i = static_cast<std::size_t>(3 * n);
    const auto nh = stats.at(i), nr = stats.at(i + 1), match = stats.at(i + 2);
    const double prec = nh > 0 ? static_cast<double>(match) / static_cast<double>(nh) : eps;
    const double rec = nr > 0 ? static_cast<double>(match) / static_cast<double>(nr) : eps;
    const double denom = factor * prec + rec;
    score += denom > 0 ? (1 + factor) * prec * rec / denom : eps;
    if (nh > 0 && nr > 0) {
      avg_prec += prec;
      avg_rec += rec;
      ++effective;
    }
  }
  if (options.eps_smoothing) return 100.0 * score / options.char_order;
  if (effective == 0) return 0.0;
  avg_prec /= effective;
  avg_rec /= effective;
  if (avg_prec + avg_rec == 0) return 0.0;
  return 100.0 * (1 + factor) * avg_prec * avg_rec / (factor * avg_prec + avg_rec);
}

double corpus_chrf(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references,
                   const ChrfOptions& options) {
  if (references.empty()) throw std::invalid_argument("corpus chrF needs at least one reference stream");
  ChrfStats total(static_cast<std::size_t>(3 * options.char_order), 0);
  for (const auto& stream : references)
    if (stream.size() != hypotheses.size()) throw std::invalid_argument("corpus chrF: a reference stream's length differs");
  for (std::size_t i = 0; i < hypotheses.size(); ++i) {
    std::vector<std::string> refs;
    for (const auto& stream : references) refs.push_back(stream[i]);
    const auto s = chrf_statistics(hypotheses[i], refs, options);
    for (std::size_t k = 0; k < total.size(); ++k) total[k] += s[k];
  }
  return chrf_score(total, options);
}

}  // namespace workbench::translation
