#pragma once
// Dataset plugins: where utterances come from. Batching, features and bucketing are the core's.
#include <cstdint>
#include <string>
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

/// Reads and resamples the audio of every utterance (`path` -> `samples` at `sample_rate` Hz), in
/// parallel over LibTorch's intra-op threads. Throws DataError with the first file that failed, with
/// `context` appended (e.g. "(listed in train.tsv)").
void load_utterance_audio(std::vector<Utterance>& utterances, std::int64_t sample_rate,
                          const std::string& context = "");
/// The same at `ctx.sample_rate`, following `ctx.on_bad_audio`: with "skip", the utterances whose file
/// cannot be read or decoded are removed (the others keep their order) and each is reported to
/// `ctx.skipped_audio` as (path, reason); with "error", the first failure throws DataError as above.
void load_utterance_audio(std::vector<Utterance>& utterances, const BuildContext& ctx, const std::string& context = "");

}  // namespace workbench
