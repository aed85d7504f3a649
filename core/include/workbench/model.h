#pragma once
// The model's building blocks, as losses and evaluators see them.
#include <memory>

#include "workbench/encoder.h"

namespace workbench {

/// The parts of the joint speech-text model (mSLAM Figure 1). Losses run the forward passes they need
/// through these. Parts that an experiment does not configure are null; a loss that needs one must check
/// and throw a ConfigError saying which part is missing.
struct ModelParts {
  std::shared_ptr<Encoder> speech_encoder;  ///< filterbank -> subsampled frames -> context vectors
  std::shared_ptr<Encoder> text_embedding;  ///< (not yet built by the core; reserved for issue 3)
  std::shared_ptr<Encoder> shared_encoder;  ///< (not yet built by the core; reserved for issue 3)
};

}  // namespace workbench
