#pragma once
// [init]: where a run's starting weights come from (fine-tuning, continued pre-training, evaluation of a
// finished run), as a typed options struct with its schema beside it.
//
//   [init]
//   from_run   = 12                                   # a run in the store (or: checkpoint = "path.pt")
//   which      = "final"                              # final | best | last: which of its checkpoints
//   components = ["speech_encoder", "shared_encoder"] # what to load; [] = every model part ("all" adds
//                                                     # the objectives' heads too)
//   vocabulary = "auto"                               # auto | checkpoint | data
//
// from_run is resolved to a checkpoint path by whoever owns the run store (the app), before the runner
// starts; the runner only ever sees `checkpoint`.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/arg.h>

#include "workbench/options.h"

namespace workbench {

struct InitOptions {
  static const OptionSchema& schema();
  /// Throws ConfigError (file:line) when both from_run and checkpoint are set, or a component name is
  /// malformed.
  static InitOptions from(const Options& table);

  TORCH_ARG(std::string, checkpoint) = "";
  /// A run id in the store; 0 = none.
  TORCH_ARG(std::int64_t, from_run) = 0;
  TORCH_ARG(std::string, which) = "final";
  /// Component names as trainer.freeze takes them ("speech_encoder", "objectives.ctc"), or "all".
  TORCH_ARG(std::vector<std::string>, components) = {};
  TORCH_ARG(std::string, vocabulary) = "auto";

  // TORCH_ARG leaves the members private.
 public:
  bool active() const { return !checkpoint().empty() || from_run() > 0; }
  bool loads_all() const;
  /// Whether the run uses the checkpoint's vocabulary: "checkpoint"; or "auto" and the run loads weights
  /// whose rows are vocabulary entries (a text embedding or an objective's head). Otherwise the
  /// vocabulary comes from this run's data and new heads are sized from it.
  bool uses_checkpoint_vocabulary(bool has_text_embedding) const;

 public:
  Options source{"init"};
};

}  // namespace workbench
