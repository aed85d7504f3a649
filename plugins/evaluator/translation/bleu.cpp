#include "bleu.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <regex>
#include <stdexcept>

#include "workbench/text.h"

namespace workbench::translation {
namespace {

using Ngrams = std::map<std::vector<std::string>, std::int64_t>;

Ngrams count_ngrams(const std::vector<std::string>& words) {
  Ngrams out;
  for (std::size_t n = 1; n <= 4; ++n)
    for (std::size_t i = 0; i + n <= words.size(); ++i)
      ++out[std::vector<std::string>(words.begin() + static_cast<std::ptrdiff_t>(i),
                                     words.begin() + static_cast<std::ptrdiff_t>(i + n))];
  return out;
}

std::vector<std::string> tokens_of(const std::string& line, BleuTokenizer tokenizer) {
  return split_words(tokenizer == BleuTokenizer::Mteval13a ? tokenize_13a(line) : line);
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (std::size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) s.replace(pos, from.size(), to);
}

}  // namespace

BleuStats& BleuStats::operator+=(const BleuStats& o) {
  sys_len += o.sys_len;
  ref_len += o.ref_len;
  for (std::size_t n = 0; n < 4; ++n) {
    correct[n] += o.correct[n];
    total[n] += o.total[n];
  }
  return *this;
}

std::string tokenize_13a(const std::string& input) {
  // The rules of mteval-v13a.pl, in sacreBLEU's order. Byte-wise regexes give the same result as
  // sacreBLEU's code-point ones: every class below is ASCII, and [^0-9] only decides where a space goes.
  static const std::regex symbols(R"(([{-~\[-\x60 -&(-+:-@/]))");
  static const std::regex period_comma_after(R"(([^0-9])([\.,]))");
  static const std::regex period_comma_before(R"(([\.,])([^0-9]))");
  static const std::regex dash_after_digit(R"(([0-9])(-))");
  std::string line = input;
  replace_all(line, "<skipped>", "");
  replace_all(line, "-\n", "");
  replace_all(line, "\n", " ");
  if (line.find('&') != std::string::npos) {
    replace_all(line, "&quot;", "\"");
    replace_all(line, "&amp;", "&");
    replace_all(line, "&lt;", "<");
    replace_all(line, "&gt;", ">");
  }
  line = " " + line + " ";
  line = std::regex_replace(line, symbols, " $1 ");
  line = std::regex_replace(line, period_comma_after, "$1 $2 ");
  line = std::regex_replace(line, period_comma_before, " $1 $2");
  line = std::regex_replace(line, dash_after_digit, "$1 $2 ");
  std::string out;
  for (const auto& w : split_words(line)) out += (out.empty() ? "" : " ") + w;
  return out;
}

BleuStats bleu_statistics(const std::string& hypothesis, const std::vector<std::string>& references,
                          const BleuOptions& options) {
  if (references.empty()) throw std::invalid_argument("BLEU needs at least one reference per hypothesis");
  const auto hyp = tokens_of(hypothesis, options.tokenizer);
  const auto hyp_len = static_cast<std::int64_t>(hyp.size());
  // Clip each n-gram by its largest count in any one reference; the brevity penalty uses the reference
  // length closest to the hypothesis's (the shorter one on a tie).
  Ngrams max_ref;
  std::int64_t closest = -1, closest_diff = -1;
  for (const auto& r : references) {
    const auto ref = tokens_of(r, options.tokenizer);
    const auto len = static_cast<std::int64_t>(ref.size());
    const auto diff = std::abs(hyp_len - len);
    if (closest_diff < 0 || diff < closest_diff || (diff == closest_diff && len < closest)) {
      closest_diff = diff;
      closest = len;
    }
    for (const auto& [g, c] : count_ngrams(ref)) {
      auto& m = max_ref[g];
      m = std::max(m, c);
    }
  }
  BleuStats s;
  s.sys_len = hyp_len;
  s.ref_len = closest;
  for (const auto& [g, c] : count_ngrams(hyp)) {
    const std::size_t n = g.size() - 1;
    s.total[n] += static_cast<double>(c);
    auto it = max_ref.find(g);
    if (it != max_ref.end()) s.correct[n] += static_cast<double>(std::min(c, it->second));
  }
  return s;
}

BleuScore compute_bleu(BleuStats stats, const BleuOptions& options) {
  BleuScore out;
  double value = options.smooth_value;
  if (value < 0) value = options.smoothing == BleuSmoothing::AddK ? 1.0 : 0.1;
  auto& correct = stats.correct;
  auto& total = stats.total;
  int order = 4;
  double mteval = 1;
  for (int n = 1; n <= 4; ++n) {
    const auto i = static_cast<std::size_t>(n - 1);
    if (options.smoothing == BleuSmoothing::AddK && n > 1) {
      correct[i] += value;
      total[i] += value;
    }
    if (total[i] == 0) break;
    if (options.effective_order) order = n;
    if (correct[i] == 0) {
      if (options.smoothing == BleuSmoothing::Exp) {
        mteval *= 2;
        out.precisions[i] = 100.0 / (mteval * total[i]);
      } else if (options.smoothing == BleuSmoothing::Floor) {
        out.precisions[i] = 100.0 * value / total[i];
      }
    } else {
      out.precisions[i] = 100.0 * correct[i] / total[i];
    }
  }
  if (stats.sys_len < stats.ref_len)
    out.brevity_penalty = stats.sys_len > 0 ? std::exp(1.0 - static_cast<double>(stats.ref_len) / static_cast<double>(stats.sys_len)) : 0.0;
  else
    out.brevity_penalty = 1.0;
  double log_sum = 0;
  for (int n = 0; n < order; ++n) {
    const double p = out.precisions[static_cast<std::size_t>(n)];
    log_sum += p > 0 ? std::log(p) : -9999999999.0;  // sacreBLEU's my_log(0)
  }
  out.score = out.brevity_penalty * std::exp(log_sum / order);
  out.stats = stats;
  return out;
}

BleuScore corpus_bleu(const std::vector<std::string>& hypotheses, const std::vector<std::vector<std::string>>& references,
                      const BleuOptions& options) {
  if (references.empty()) throw std::invalid_argument("corpus BLEU needs at least one reference stream");
  for (const auto& stream : references)
    if (stream.size() != hypotheses.size())
      throw std::invalid_argument("corpus BLEU: " + std::to_string(hypotheses.size()) + " hypotheses but a reference stream of " +
                                  std::to_string(stream.size()));
  BleuStats total;
  for (std::size_t i = 0; i < hypotheses.size(); ++i) {
    std::vector<std::string> refs;
    for (const auto& stream : references) refs.push_back(stream[i]);
    total += bleu_statistics(hypotheses[i], refs, options);
  }
  return compute_bleu(total, options);
}

}  // namespace workbench::translation
