#pragma once
// Accuracy, macro-F1 and the confusion matrix of a classifier's predictions, per language and pooled.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace workbench::classification {

struct Prediction {
  std::int64_t truth = -1;  ///< class index; < 0 = no class (skipped)
  std::int64_t predicted = 0;
  std::string lang;
};

/// Named metrics, averages first: "accuracy" (mean of the per-language accuracies, so that every
/// language weighs the same), "accuracy_pooled", "macro_f1" (the unweighted mean over classes of
/// 2 TP / (2 TP + FP + FN), over the classes that occur as truth or prediction), "majority" (the
/// accuracy of always predicting the most frequent true class: the baseline), "chance" (1 / classes),
/// "examples"; then "accuracy/<lang>", "f1/<class>" and "confusion/<true>/<predicted>" (counts, every
/// cell, zeros included, so that SQL can print the whole matrix).
std::vector<std::pair<std::string, double>> classification_metrics(const std::vector<Prediction>& predictions,
                                                                  const std::vector<std::string>& classes);

}  // namespace workbench::classification
