#pragma once
// Loss plugins: one training objective each (CTC, w2v-BERT, SpanBERT, TLM, STM).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "workbench/batch.h"
#include "workbench/capabilities.h"
#include "workbench/component.h"
#include "workbench/model.h"

namespace workbench {

class Vocabulary;

/// Where training is, for schedules inside a loss (e.g. Gumbel temperature annealing).
struct StepInfo {
  std::int64_t step = 0;         ///< 0-based optimizer step
  std::int64_t total_steps = 0;
};

struct LossOutput {
  /// Scalar, unweighted. The trainer multiplies by the objective's weight and sums over objectives.
  torch::Tensor loss;
  /// Named detached scalars ("loss", "accuracy", ...). The trainer prefixes them with the objective
  /// name ("ctc/loss") and reads them only when it logs, so a GPU step is not synchronised each time.
  std::vector<std::pair<std::string, torch::Tensor>> metrics;
};

/// One objective. It declares the batch kinds it accepts, runs the forward pass it needs through the
/// model's building blocks, and may own parameters (a prediction head, a quantizer), which the trainer
/// optimises and checkpoints with the model's.
class Loss : public Component {
 public:
  ~Loss() override;
  virtual std::vector<BatchKind> accepts() const = 0;
  /// The loss's own parameters, or nullptr when it has none.
  virtual torch::nn::Module* module() { return nullptr; }
  /// Called once, after every objective and evaluator exists and before the optimizer is made: take the
  /// capabilities this loss needs from other objectives (and create any parameters whose size depends
  /// on them). Throws ConfigError when one is missing, saying what to add.
  virtual void connect(const Connections& connections) { (void)connections; }
  /// `batch` is already on the training device and of one of the accepted kinds. An exception thrown
  /// here reaches the user with the objective's name and the step.
  virtual LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo& step) = 0;

  /// Resume: the state of any random stream this loss draws from itself (the built-in losses draw their
  /// masks, distractors and negatives from torch's generators instead), as text; every checkpoint keeps
  /// it, and `workbench resume` gives it back through restore_random_state, so that a resumed run draws
  /// what an uninterrupted one would. engine_state() (random_state.h) writes a
  /// std::mt19937_64's. Empty (the default): the loss draws nothing of its own; torch's generators (dropout,
  /// Gumbel noise) are the trainer's to keep.
  virtual std::string random_state() const { return {}; }
  /// Resume: sets the streams to what random_state() returned. Throws std::invalid_argument for text it
  /// did not write.
  virtual void restore_random_state(const std::string& state) { (void)state; }
};

}  // namespace workbench
