#pragma once
// Evaluator plugins: metrics computed on held-out data during and after training.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>

#include "workbench/batch.h"
#include "workbench/capabilities.h"
#include "workbench/component.h"
#include "workbench/loss.h"
#include "workbench/model.h"

namespace workbench {

/// One decoded example kept for inspection (the run store's `examples` table).
struct EvalExample {
  std::string task;        ///< what was decoded, e.g. "st/fr-en" (the trainer prefixes the data name)
  std::string id;          ///< the utterance id
  std::string reference;
  std::string hypothesis;
};

struct EvalContext {
  const std::vector<Batch>& batches;  ///< on the CPU; move with Batch::to(device)
  ModelParts& model;                  ///< already in eval mode, under NoGradGuard
  c10::Device device;
  /// Where an evaluator may append decoded examples; null when nobody keeps them.
  std::vector<EvalExample>* examples = nullptr;
};

class Evaluator : public Component {
 public:
  ~Evaluator() override;
  /// Called once before training: take what this evaluator reads from the objectives (the ASR evaluator
  /// takes a FramePredictor). Throws ConfigError when it is missing, saying what to add.
  virtual void connect(const Connections& connections) { (void)connections; }
  /// Named metrics, e.g. {"cer", 0.41}, {"cer/en", 0.38}. The trainer prefixes them with the
  /// evaluator's data name ("dev/cer") when it records them.
  virtual std::vector<std::pair<std::string, double>> evaluate(const EvalContext& context) = 0;
};

}  // namespace workbench
