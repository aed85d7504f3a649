#pragma once
// The training loop, split at its seams: one optimizer step, logging, evaluation and checkpoints, each
// callable on its own, with hooks after backward (where a gradient all-reduce goes), on log, on evaluate
// and on checkpoint. AdamW over one parameter group per component (so that a component can be frozen or
// train at its own learning-rate multiplier), clipping, the schedule of trainer.schedule, and stages.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>

#include "workbench/data.h"
#include "workbench/distributed.h"
#include "workbench/evaluator.h"
#include "workbench/experiment.h"
#include "workbench/loss.h"
#include "workbench/model.h"
#include "workbench/schedule.h"
#include "workbench/trainer_options.h"

namespace torch::serialize {
class OutputArchive;
}

namespace workbench {

using Metrics = std::vector<std::pair<std::string, double>>;

/// Whether `key` is a summary the console shows ("dev/cer", "train/loss", "dev/langid/accuracy") rather
/// than a breakdown by language, class or pair ("dev/cer/en", "dev/langid/confusion/en/fr").
bool is_summary_metric(const std::string& key);

struct Objective {
  std::string name;  ///< [objectives.<name>]
  std::shared_ptr<Loss> loss;
  double weight = 1.0;
  std::string data;  ///< the [data.<name>] it draws batches from
  std::string plugin;  ///< the loss plugin's name, for messages
};

struct EvaluatorSlot {
  std::string name;  ///< [evaluators.<name>]
  std::shared_ptr<Evaluator> evaluator;
  std::string data;
  std::int64_t every = 0;  ///< steps; 0 = at the start and the end only
  std::string plugin;      ///< the evaluator plugin's name, for messages
};

/// Receives metrics as they are produced (the run store, in `workbench run`).
class MetricSink {
 public:
  virtual ~MetricSink();
  virtual void record(std::int64_t step, const Metrics& metrics) = 0;
  /// Decoded examples of an evaluation at `step` (task already prefixed with the data name); kept by
  /// the run store, ignored by default.
  virtual void record_examples(std::int64_t step, const std::vector<EvalExample>& examples) {
    (void)step;
    (void)examples;
  }
};

/// A checkpoint file the trainer wrote.
struct CheckpointInfo {
  std::int64_t step = 0;  ///< optimizer steps done when it was written
  std::string path;
  std::string sha256;
  std::string kind;  ///< "periodic", "best", "final" or "interrupted"
  std::optional<std::string> metric_key;  ///< best: trainer.keep_best
  std::optional<double> metric_value;
};

/// Called at the trainer's seams; any may be empty.
struct TrainerHooks {
  /// After backward(), before clipping and the optimizer step, with the parameters being trained: a
  /// data-parallel run all-reduces their gradients here. Called at every step while it is set, also on a
  /// rank whose shards were all empty (it then has no gradients, but must join the all-reduce).
  std::function<void(std::int64_t step, const std::vector<torch::Tensor>& parameters)> after_backward;
  /// After training metrics are logged (step = optimizer steps done).
  std::function<void(std::int64_t step, const Metrics& metrics)> on_log;
  /// After an evaluation, with its metrics.
  std::function<void(std::int64_t step, const Metrics& metrics)> on_evaluate;
  /// After a checkpoint file is complete and in place.
  std::function<void(const CheckpointInfo& checkpoint)> on_checkpoint;
  /// After an old periodic checkpoint beyond trainer.keep_checkpoints is deleted.
  std::function<void(const std::string& path)> on_checkpoint_removed;
  /// Data parallelism: the training metrics of a log window, before they are recorded (the mean over
  /// the ranks). Every rank logs at the same steps.
  std::function<Metrics(const Metrics& metrics)> reduce_metrics;
  /// Data parallelism: once per step, before it, whether the ranks stop (the trainer's own reason in,
  /// the ranks' agreed one out), so that no rank waits at a collective the others have left.
  std::function<StopVote(StopVote mine)> vote;
};

struct TrainResult {
  std::int64_t steps = 0;          ///< optimizer steps taken
  double train_seconds = 0;        ///< wall time of the loop, evaluation excluded
  Metrics final_metrics;           ///< the last evaluation
  bool stopped_by_time = false;
};

/// What one optimizer step did.
struct StepResult {
  std::int64_t step = 0;  ///< 0-based index of the step just taken
  double lr = 0;          ///< the schedule's learning rate (before per-component multipliers)
  bool skipped = false;   ///< the gradient was not finite, so the optimizer did not step
};

class Trainer {
 public:
  /// `train` maps data names to batchers for the objectives; `eval` maps data names to evaluation batches.
  /// `stages` (may be empty: one stage of options.steps() with every objective) say which objectives each
  /// step trains. Throws ConfigError when an objective's batch kind is not one its loss accepts, a stage
  /// names an unknown objective, or trainer.freeze / trainer.lr_multipliers name an unknown component.
  Trainer(TrainerOptions options, ModelParts model, std::vector<Objective> objectives,
          std::vector<EvaluatorSlot> evaluators, std::map<std::string, std::shared_ptr<TrainBatcher>> train,
          std::map<std::string, std::vector<Batch>> eval, c10::Device device, MetricSink& sink,
          std::vector<StageConfig> stages = {}, TrainerHooks hooks = {});

  /// Runs the loop to options.steps() (or max_minutes): step, log, evaluate and periodic checkpoints.
  /// On Ctrl-C it writes a checkpoint (when set_checkpoint_directory was called), then throws Interrupted.
  TrainResult train();

  /// One optimizer step of the current stage's objectives. An exception from a loss is rethrown as the
  /// same type where it can be (ConfigError, DataError) or as Error, with the objective and the step.
  StepResult step();
  /// Records the training metrics accumulated since the last log (their means) and returns them.
  Metrics log();
  /// Runs the evaluators for which `due` is true (all of them when `due` is empty), records their metrics
  /// and keeps best.pt when trainer.keep_best improves.
  Metrics evaluate(const std::function<bool(const EvaluatorSlot&)>& due = {});

  /// Where checkpoints go (created on first use) and what each carries besides the weights.
  void set_checkpoint_directory(const std::string& dir, const std::string& config_toml, const std::string& vocabulary);
  /// Writes a checkpoint of `kind` ("periodic": step-<N>.pt, pruned to the last keep_checkpoints;
  /// "interrupted": step-<N>.pt, never pruned; "final": final.pt; "best": best.pt). Throws std::logic_error
  /// before set_checkpoint_directory.
  CheckpointInfo checkpoint(const std::string& kind);

  /// Writes every model part's and loss's parameters and buffers ("speech_encoder.<name>",
  /// "objectives.<name>.<name>"), the optimizer state, the step and stage, the resolved config and the
  /// vocabulary, atomically: a temporary file beside `path`, fsync, then rename, so that a process killed
  /// while writing never leaves a torn file where a good one was. Returns the file's sha256.
  std::string save_checkpoint(const std::string& path, const std::string& config_toml,
                              const std::string& vocabulary) const;

  /// Copies the parameters and buffers a checkpoint holds into this model and its losses (fine-tuning, or
  /// continued pre-training with other objectives). Components this trainer has and the checkpoint
  /// lacks keep their initialisation; a shape mismatch is a ConfigError naming the tensor. With
  /// `with_optimizer` the AdamW state and the step are restored too, and train() continues from that
  /// step. `components` (names as trainer.freeze takes them) limits what is loaded; each must be one this
  /// trainer has (else ConfigError listing them) and, when `require_each`, one the checkpoint holds (else
  /// ConfigError); empty = every component. Returns the names of the tensors loaded. Throws DataError
  /// when the file cannot be read.
  std::vector<std::string> load_checkpoint(const std::string& path, bool with_optimizer = false,
                                           const std::vector<std::string>& components = {},
                                           bool require_each = true);

  /// Continues the run a checkpoint of this trainer's experiment was written by, as if it had never
  /// stopped: every tensor, the AdamW state, the step (and with it the schedule and the stage), torch's
  /// random generators, each batcher's place in its data order, each loss's own random streams, the log
  /// window and the best value so far. Then train() takes the steps that are left. Throws DataError for a
  /// file that cannot be read or holds no resume state (written before they had one), ConfigError when it
  /// is not a checkpoint of this model.
  void resume(const std::string& path);

  /// The vocabulary a checkpoint was trained with (its serialize() form).
  static std::string checkpoint_vocabulary(const std::string& path);

  /// The parameters the optimizer trains now: every component's, less the frozen ones.
  std::vector<torch::Tensor> parameters() const;
  /// Optimizer steps done so far.
  std::int64_t steps_done() const;
  /// The learning rate of each component now (schedule times its multiplier); frozen ones are absent.
  std::map<std::string, double> component_learning_rates() const;
  TrainerHooks& hooks();
  const TrainerOptions& options() const;

 private:
  void set_training(bool training);
  void write_resume_state(torch::serialize::OutputArchive& archive) const;
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace workbench
