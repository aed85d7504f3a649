#pragma once
// The training loop: weighted sum of objectives, Adam with warm-up + inverse square root, clipping,
// periodic evaluation, metrics to a sink, a checkpoint at the end.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>

#include "workbench/data.h"
#include "workbench/evaluator.h"
#include "workbench/experiment.h"
#include "workbench/loss.h"
#include "workbench/model.h"
#include "workbench/options.h"

namespace workbench {

struct Objective {
  std::string name;  ///< [objectives.<name>]
  std::shared_ptr<Loss> loss;
  double weight = 1.0;
  std::string data;  ///< the [data.<name>] it draws batches from
};

struct EvaluatorSlot {
  std::string name;  ///< [evaluators.<name>]
  std::shared_ptr<Evaluator> evaluator;
  std::string data;
  std::int64_t every = 0;  ///< steps; 0 = at the start and the end only
};

/// Receives metrics as they are produced (the run store, in `workbench run`).
class MetricSink {
 public:
  virtual ~MetricSink();
  virtual void record(std::int64_t step, const std::vector<std::pair<std::string, double>>& metrics) = 0;
};

/// The papers' schedule (Transformer / w2v-BERT / mSLAM): linear warm-up to `peak` over `warmup` steps,
/// then peak * sqrt(warmup / step). `step` counts from 1.
double warmup_inverse_sqrt(double peak, std::int64_t warmup, std::int64_t step);

struct TrainResult {
  std::int64_t steps = 0;          ///< optimizer steps taken
  double train_seconds = 0;        ///< wall time of the loop, evaluation excluded
  std::vector<std::pair<std::string, double>> final_metrics;  ///< the last evaluation
  bool stopped_by_time = false;
};

class Trainer {
 public:
  /// `options` is the validated [trainer] table. `train` maps data names to batchers for the
  /// objectives; `eval` maps data names to evaluation batches. `stages` (may be empty: one stage of
  /// trainer.steps with every objective) say which objectives each step trains. Throws ConfigError when
  /// an objective's batch kind is not one its loss accepts, or a stage names an unknown objective.
  Trainer(const Options& options, ModelParts model, std::vector<Objective> objectives,
          std::vector<EvaluatorSlot> evaluators, std::map<std::string, std::shared_ptr<TrainBatcher>> train,
          std::map<std::string, std::vector<Batch>> eval, c10::Device device, MetricSink& sink,
          std::vector<StageConfig> stages = {});

  /// Runs the loop. Throws Interrupted on Ctrl-C (after recording what it had).
  TrainResult train();

  /// Writes the parameters and buffers of every model part and loss ("speech_encoder.<name>",
  /// "objectives.<name>.<name>"), the optimizer state, the scheduler (step, stage, peak lr, warm-up), the
  /// resolved config and the vocabulary.
  void save_checkpoint(const std::string& path, const std::string& config_toml, const std::string& vocabulary) const;

  /// Copies the parameters and buffers a checkpoint holds into this model and its losses (fine-tuning, or
  /// continued pre-training with other objectives). Components this trainer has and the checkpoint
  /// lacks keep their initialisation; a shape mismatch is a ConfigError naming the tensor. With
  /// `with_optimizer` the Adam state and the step are restored too, and train() continues from that step
  /// (schedule and stage follow from it; `workbench run` does not offer this yet). Returns the names of the
  /// tensors loaded. Throws DataError when the file cannot be read.
  std::vector<std::string> load_checkpoint(const std::string& path, bool with_optimizer = false);

  /// The vocabulary a checkpoint was trained with (its serialize() form).
  static std::string checkpoint_vocabulary(const std::string& path);

  /// All trainable parameters: the model's, then each loss's.
  std::vector<torch::Tensor> parameters() const;

 private:
  /// Runs the evaluators for which `due` is true (all of them when `due` is empty).
  std::vector<std::pair<std::string, double>> evaluate(std::int64_t step,
                                                       const std::function<bool(const EvaluatorSlot&)>& due = {});
  void set_training(bool training);

  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace workbench
