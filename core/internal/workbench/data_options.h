#pragma once
// The core's keys of a [data.<name>] table (batching, filtering, what the batches carry, language
// sampling), as a typed options struct with its schema beside it. The dataset plugin's own keys sit in
// the same table and are validated against the plugin's schema.
#include <cstdint>
#include <string>

#include <torch/arg.h>

#include "workbench/data.h"
#include "workbench/options.h"

namespace workbench {

struct DataOptions {
  /// The core's keys of [data.<name>] (plugin included).
  static const OptionSchema& schema();
  /// The one place that reads them by key; `table` is kept as `source` for error messages.
  static DataOptions from(const Options& table);

  TORCH_ARG(double, batch_seconds) = 160;
  TORCH_ARG(std::int64_t, max_batch) = 64;
  /// Training only: drop utterances longer than this (s); 0 keeps all.
  TORCH_ARG(double, max_seconds) = 0;
  TORCH_ARG(bool, shuffle) = true;
  TORCH_ARG(bool, sortagrad) = false;
  /// "auto", "speech", "text" or "paired".
  TORCH_ARG(std::string, use) = "auto";
  /// > 0: sample languages with probability proportional to share^(1/T).
  TORCH_ARG(double, language_temperature) = 0;
  /// A file that cannot be decoded: "error" (the run fails, naming it) or "skip" (left out, logged, counted
  /// in derived.data.<name>.skipped_audio).
  TORCH_ARG(std::string, on_bad_audio) = "error";

 public:
  /// The batcher's options; `frames_per_second` is 1000 / the frontend's hop (ms).
  BatchingOptions batching(double frames_per_second) const;

  Options source;
};

}  // namespace workbench
