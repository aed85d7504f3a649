#include "classification_metrics.h"

#include <algorithm>
#include <map>

namespace workbench::classification {

std::vector<std::pair<std::string, double>> classification_metrics(const std::vector<Prediction>& predictions,
                                                                  const std::vector<std::string>& classes) {
  const std::size_t C = classes.size();
  std::vector<std::vector<double>> confusion(C, std::vector<double>(C, 0.0));
  std::map<std::string, std::pair<double, double>> per_lang;  // correct, total
  double correct = 0, total = 0;
  for (const auto& p : predictions) {
    if (p.truth < 0 || p.truth >= static_cast<std::int64_t>(C) || p.predicted < 0 ||
        p.predicted >= static_cast<std::int64_t>(C))
      continue;
    confusion[static_cast<std::size_t>(p.truth)][static_cast<std::size_t>(p.predicted)] += 1;
    const bool ok = p.truth == p.predicted;
    correct += ok;
    total += 1;
    auto& l = per_lang[p.lang];
    l.first += ok;
    l.second += 1;
  }
  double f1_sum = 0, f1_classes = 0, majority = 0;
  std::vector<double> f1(C, 0.0);
  for (std::size_t c = 0; c < C; ++c) {
    double tp = confusion[c][c], fp = 0, fn = 0, support = 0;
    for (std::size_t o = 0; o < C; ++o) {
      support += confusion[c][o];
      if (o == c) continue;
      fp += confusion[o][c];
      fn += confusion[c][o];
    }
    majority = std::max(majority, support);
    if (tp + fp + fn == 0) continue;  // neither true nor predicted anywhere: no F1 to average
    f1[c] = 2 * tp / (2 * tp + fp + fn);
    f1_sum += f1[c];
    f1_classes += 1;
  }
  double lang_mean = 0;
  for (const auto& [lang, l] : per_lang) lang_mean += l.first / l.second;
  std::vector<std::pair<std::string, double>> out;
  out.emplace_back("accuracy", per_lang.empty() ? 0.0 : lang_mean / static_cast<double>(per_lang.size()));
  out.emplace_back("accuracy_pooled", total > 0 ? correct / total : 0.0);
  out.emplace_back("macro_f1", f1_classes > 0 ? f1_sum / f1_classes : 0.0);
  out.emplace_back("majority", total > 0 ? majority / total : 0.0);
  out.emplace_back("chance", C > 0 ? 1.0 / static_cast<double>(C) : 0.0);
  out.emplace_back("examples", total);
  for (const auto& [lang, l] : per_lang) out.emplace_back("accuracy/" + lang, l.first / l.second);
  for (std::size_t c = 0; c < C; ++c) out.emplace_back("f1/" + classes[c], f1[c]);
  for (std::size_t t = 0; t < C; ++t)
    for (std::size_t p = 0; p < C; ++p) out.emplace_back("confusion/" + classes[t] + "/" + classes[p], confusion[t][p]);
  return out;
}

}  // namespace workbench::classification
