// The "classification" evaluator: scores an utterance classifier (the classifier loss: language ID,
// intent) on held-out data: accuracy, macro-F1, the majority-class and chance baselines, and the
// confusion matrix, under "<objective>/..." so that two classifiers on one dataset do not collide.
#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

#include "classification_metrics.h"

namespace workbench::classification {
namespace {

class ClassificationEvaluator final : public Evaluator {
 public:
  explicit ClassificationEvaluator(const Options& o) : name_(o.get_string("classifier")), options_(o) {}

  void connect(const Connections& connections) override {
    classifier_ = &connections.require<UtteranceClassifier>(
        name_, "[" + options_.section() + "] (classification)", "an utterance classifier",
        "add a classifier objective, or set classifier = \"<its name>\"");
  }

  std::vector<std::pair<std::string, double>> evaluate(const EvalContext& ctx) override {
    if (!classifier_) throw std::logic_error("classification evaluator: evaluate() before connect()");
    std::vector<Prediction> predictions;
    for (const auto& cpu_batch : ctx.batches) {
      Batch batch = cpu_batch.to(ctx.device);
      auto truth = classifier_->labels(cpu_batch);
      auto predicted = classifier_->logits(batch, ctx.model).argmax(-1).to(torch::kCPU);
      for (std::int64_t b = 0; b < cpu_batch.size(); ++b)
        predictions.push_back({truth[b].item<std::int64_t>(), predicted[b].item<std::int64_t>(),
                               cpu_batch.langs[static_cast<std::size_t>(b)]});
    }
    auto metrics = classification_metrics(predictions, classifier_->classes());
    for (auto& [k, v] : metrics) k = name_ + "/" + k;
    return metrics;
  }

 private:
  std::string name_;
  Options options_;
  UtteranceClassifier* classifier_ = nullptr;
};

PluginDescriptor describe() {
  return describe_plugin<ClassificationEvaluator>(PluginKind::Evaluator, "classification", "1.0.0",
      "accuracy (per language and averaged), macro-F1, majority and chance baselines and the confusion matrix of a classifier objective",
      OptionSchema().add_string("classifier", "langid", "the classifier objective to score (its name is the metrics' prefix)"));
}

}  // namespace
}  // namespace workbench::classification

WORKBENCH_PLUGIN(workbench::classification::describe)
