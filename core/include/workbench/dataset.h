#pragma once
// Dataset plugins: where utterances come from. Batching, features and bucketing are the core's.
#include <vector>

#include "workbench/batch.h"
#include "workbench/component.h"

namespace workbench {

class Dataset : public Component {
 public:
  ~Dataset() override;
  /// What this dataset's batches carry.
  virtual BatchKind kind() const = 0;
  /// All utterances of the configured split, audio resampled to `context.sample_rate`.
  /// Throws DataError naming the file (or the apt package to install) when something is missing.
  virtual std::vector<Utterance> load(const BuildContext& context) = 0;
};

}  // namespace workbench
