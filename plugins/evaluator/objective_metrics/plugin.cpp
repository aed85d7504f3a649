// The "objective_metrics" evaluator: the pre-training objectives' own metrics (masked-prediction and
// contrastive accuracy of w2v-BERT, SpanBERT's and TLM's accuracy, STM's, CTC's loss) on held-out data,
// in eval mode: no dropout, no gradients. Masking is still drawn at random (it is what the objectives
// measure), from each objective's own stream.
// Each metric is the mean over batches weighted by their rows, under "<objective>/<metric>".
#include <map>

#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

namespace workbench::objective_metrics {
namespace {

class ObjectiveMetricsEvaluator final : public Evaluator {
 public:
  explicit ObjectiveMetricsEvaluator(const Options& o) : wanted_(o.get_strings("objectives")), options_(o) {}

  void connect(const Connections& connections) override {
    for (const auto& e : connections.objectives()) {
      if (!wanted_.empty() && std::find(wanted_.begin(), wanted_.end(), e.name) == wanted_.end()) continue;
      if (auto* loss = dynamic_cast<Loss*>(e.component)) losses_.emplace_back(e.name, loss);
    }
    for (const auto& w : wanted_)
      if (std::none_of(losses_.begin(), losses_.end(), [&](const auto& l) { return l.first == w; }))
        options_.fail("objectives", fmt::format("no objective '{}' (objectives: {})", w, connections.names()));
  }

  std::vector<std::pair<std::string, double>> evaluate(const EvalContext& ctx) override {
    std::map<std::string, std::pair<double, double>> sums;  // key -> (weighted sum, rows)
    std::vector<std::string> order;
    for (const auto& cpu_batch : ctx.batches) {
      for (const auto& [name, loss] : losses_) {
        // Paired data serves as speech or text too, as it does in training.
        Batch batch = cpu_batch.to(ctx.device);
        auto kinds = loss->accepts();
        if (std::find(kinds.begin(), kinds.end(), batch.kind) == kinds.end()) {
          if (batch.kind != BatchKind::Paired) continue;
          batch.kind = kinds.front();
        }
        LossOutput out = loss->compute(batch, ctx.model, StepInfo{0, 0});
        const double rows = static_cast<double>(batch.size());
        for (const auto& [metric, value] : out.metrics) {
          const std::string key = name + "/" + metric;
          auto [it, fresh] = sums.try_emplace(key, 0.0, 0.0);
          if (fresh) order.push_back(key);
          it->second.first += value.item<double>() * rows;
          it->second.second += rows;
        }
      }
    }
    std::vector<std::pair<std::string, double>> out;
    for (const auto& key : order) out.emplace_back(key, sums[key].first / std::max(1.0, sums[key].second));
    return out;
  }

 private:
  std::vector<std::string> wanted_;
  Options options_;
  std::vector<std::pair<std::string, Loss*>> losses_;
};

PluginDescriptor describe() {
  return describe_plugin<ObjectiveMetricsEvaluator>(PluginKind::Evaluator, "objective_metrics", "1.0.0",
      "the objectives' own metrics (accuracies, losses) on held-out data, without dropout",
      OptionSchema().add_strings("objectives", {}, "the objectives to evaluate (empty = every one)"));
}

}  // namespace
}  // namespace workbench::objective_metrics

WORKBENCH_PLUGIN(workbench::objective_metrics::describe)
