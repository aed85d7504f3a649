#pragma once
// A run as a library: the one place that turns an experiment into a trained, recorded model, in explicit
// phases that can be called (and tested) one at a time:
//
//   resolve          the experiment file (+ --set) -> ExperimentConfig, plugin schemas from the factory
//   configure_runtime threads, BLAS threads, the device
//   prepare_data     datasets loaded once, features computed once and shared by every consumer; the
//                    vocabulary (from the training texts, or from the [init] checkpoint when its weights index it)
//   build_model      speech encoder -> (projection) shared encoder <- text embedding (mSLAM figure 1)
//   create_components objectives and evaluators from their plugins
//   connect          typed capabilities between them (TLM <- w2v-BERT's codes, ASR <- CTC's
//                    posteriors), before any optimizer exists
//   make_trainer     the trainer over the model, objectives, batchers and evaluation batches
//   train            the loop, periodic and final checkpoints, everything reported to a RunRecorder
//
// `workbench run` and the tests use it; so will `eval`, `sweep` and each distributed rank. The runner
// knows neither the plugin loader nor the database of runs: it reaches them through the two small
// interfaces below, which the app implements.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>
#include <torch/arg.h>

#include "workbench/data.h"
#include "workbench/distributed.h"
#include "workbench/experiment.h"
#include "workbench/trainer.h"
#include "workbench/vocabulary.h"

namespace workbench {

/// Plugins by kind and name: their schemas (for resolving a config) and their components.
class ComponentFactory {
 public:
  virtual ~ComponentFactory();
  /// Throws ConfigError (starting with `where`) for an unknown plugin.
  virtual const OptionSchema& schema(PluginKind kind, const std::string& name, const std::string& where) = 0;
  /// Builds a component; the result keeps its plugin's library alive.
  virtual std::shared_ptr<Component> create(PluginKind kind, const std::string& name, const Options& options,
                                            const BuildContext& context) = 0;
};

/// Where a run's facts go as the runner produces them (the run store, in `workbench run`).
class RunRecorder : public MetricSink {
 public:
  ~RunRecorder() override;
  /// Derived facts (data sizes, parameter counts, the vocabulary size, runtime settings), by dotted key.
  virtual void record_params(const std::vector<std::pair<std::string, OptionValue>>& params) = 0;
  virtual void record_checkpoint(const CheckpointInfo& checkpoint) = 0;
  virtual void remove_checkpoint(const std::string& path) = 0;
};

struct RunnerOptions {
  /// --set key=value overrides, applied before the preset and the schemas.
  TORCH_ARG(std::vector<std::string>, overrides) = {};
  /// Build the model and losses and count their parameters; load no data, train nothing.
  TORCH_ARG(bool, dry_run) = false;
  /// `workbench eval`: run() builds everything, then evaluates once instead of training (no checkpoints).
  TORCH_ARG(bool, evaluate_only) = false;
  /// Print what each phase did to stderr.
  TORCH_ARG(bool, verbose) = true;
  /// `workbench resume`: a checkpoint this experiment's run wrote; run() continues that run from it
  /// (Trainer::resume) instead of starting at step 0. Its vocabulary is the checkpoint's, and [init] is not
  /// loaded again (the checkpoint's weights already started from it).
  TORCH_ARG(std::string, resume_from) = "";
};

/// What configure_runtime chose.
struct RuntimeInfo {
  int threads = 1;
  std::string blas;          ///< "OpenBLAS 0.3.21 (pthread)", ...
  std::string blas_path;
  bool reference_blas = false;
  c10::Device device = c10::Device(c10::DeviceType::CPU);
};

class Runner {
 public:
  explicit Runner(ComponentFactory& factory, RunnerOptions options = {});
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  /// Phase 1. Parses `experiment_path` with the overrides and resolves it against the factory's schemas.
  /// Throws ConfigError.
  const ExperimentConfig& resolve(const std::string& experiment_path);
  /// Phase 1, from a parsed file (tests, sweeps).
  const ExperimentConfig& resolve(const ExperimentFile& file);
  /// Phase 1, from a resolved config (a sweep point, a rank).
  const ExperimentConfig& adopt(ExperimentConfig config);

  /// Sets torch's intra-op threads and OpenBLAS's pool from [trainer], and picks the device. Throws
  /// ConfigError when trainer.device = "cuda" and CUDA is not available.
  const RuntimeInfo& configure_runtime();

  /// Phase 1b, for data parallelism: this process is one rank of `group`, which must outlive the runner.
  /// Its batchers then draw the global batches of world_size() ranks' budget and keep their shard; its
  /// objectives' random streams differ by rank; the trainer averages gradients, reduces metrics and
  /// votes on stopping through the group; only rank 0 loads evaluation data and evaluates. The
  /// parameters are broadcast from rank 0 in make_trainer. A CUDA device becomes cuda:<local rank>.
  /// Call after configure_runtime and before prepare_data.
  void join(std::shared_ptr<DataParallel> group);

  /// Phase 2. Loads the datasets the objectives and evaluators use (none in a dry run), builds the
  /// vocabulary and computes the features. Throws DataError / ConfigError.
  void prepare_data();

  /// Phase 3. Builds the model parts from their plugins. Throws ConfigError on mismatched dimensions.
  void build_model();

  /// Phase 4a. Creates every objective and evaluator (each objective with its own random stream).
  void create_components();
  /// Phase 4b. Connects capabilities: every loss's and evaluator's connect(). Throws ConfigError naming
  /// what is missing and what to add.
  void connect();

  /// Phase 5a. The trainer, with metrics and checkpoints going to `recorder`; loads
  /// the [init] checkpoint's components when set ([init] from_run must already be resolved to a path). Checkpoints go to `checkpoint_dir` ("" = none written).
  Trainer& make_trainer(RunRecorder& recorder, const std::string& checkpoint_dir);
  /// Phase 5b. Trains, then writes final.pt (when a checkpoint directory was given) and records the
  /// derived results (steps, seconds, checkpoint path).
  TrainResult train();

  /// Phase 5b instead of train(): every evaluator once, on the weights as they are (`workbench eval`);
  /// the metrics are recorded at step 0.
  Metrics evaluate();
  /// Every phase from prepare_data to train (or to connect, in a dry run; or to evaluate, with
  /// evaluate_only, whose metrics come back as final_metrics), recording the derived params as they
  /// become known. resolve() and configure_runtime() must have been called.
  TrainResult run(RunRecorder& recorder, const std::string& checkpoint_dir);

  // What the phases built so far.
  const ExperimentConfig& config() const;
  const RuntimeInfo& runtime() const;
  const std::shared_ptr<const Vocabulary>& vocabulary() const;
  const std::map<std::string, PreparedData>& data() const;
  ModelParts& model();
  std::vector<Objective>& objectives();
  std::vector<EvaluatorSlot>& evaluators();
  Trainer& trainer();
  /// The derived params recorded so far ("derived.data.train.hours", "derived.parameters.model", ...).
  const std::vector<std::pair<std::string, OptionValue>>& derived() const;
  /// Every (kind, plugin) the configuration names, each once, in experiment order.
  std::vector<std::pair<PluginKind, std::string>> plugins_used() const;
  /// Parameters of each model part and loss, the model (losses excluded) and in all.
  std::vector<std::pair<std::string, std::int64_t>> parameter_counts() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The metric `workbench runs` shows for a run: trainer.keep_best, else the first evaluation metric
/// (evaluators list their averages first: "dev/cer", not "dev/cer/en"), else "train/loss".
std::string headline_metric(const ExperimentConfig& cfg, const Metrics& metrics);
/// The device for trainer.device ("auto", "cpu", "cuda"). Throws ConfigError for "cuda" without CUDA.
c10::Device select_device(const std::string& choice);

}  // namespace workbench
