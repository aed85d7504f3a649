#pragma once
// Loss plugins: one training objective each (CTC now; w2v-BERT, SpanBERT, TLM, STM later).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "workbench/batch.h"
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
  /// `batch` is already on the training device and of one of the accepted kinds.
  virtual LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo& step) = 0;
};

/// A capability some losses have: per-frame token posteriors for speech, as CTC produces.
/// The ASR evaluator finds its predictor by objective name and dynamic_casts to this.
class FramePredictor {
 public:
  virtual ~FramePredictor();
  /// Log-probabilities (B, T', V) over the vocabulary with blank = 0, and valid lengths (B) int64.
  virtual std::pair<torch::Tensor, torch::Tensor> frame_log_probs(const Batch& batch, ModelParts& model) = 0;
  virtual const Vocabulary& vocabulary() const = 0;
};

/// A capability some losses have: discrete targets for speech frames, as w2v-BERT's quantizer gives.
/// TLM finds its provider by objective name (ModelParts::objectives) and dynamic_casts to this.
class SpeechCodeProvider {
 public:
  virtual ~SpeechCodeProvider();
  virtual std::int64_t groups() const = 0;           ///< G codebooks
  virtual std::int64_t entries() const = 0;          ///< V entries per codebook
  /// Code ids of subsampled speech features (B, T, Ds) (speech_encoder.embed() output, unmasked):
  /// (B, T, G) int64, detached: targets only, never a path for gradients.
  virtual torch::Tensor code_ids(const torch::Tensor& features) = 0;
};

}  // namespace workbench
