#pragma once
// [frontend]: the log-mel filterbank every speech input goes through, as a typed options struct with its
// schema beside it.
#include <cstdint>
#include <string>

#include <torch/arg.h>

#include "workbench/data.h"
#include "workbench/options.h"

namespace workbench {

struct FrontendOptions {
  static const OptionSchema& schema();
  /// The one place that reads [frontend] by key; `table` is kept as `source` for error messages.
  static FrontendOptions from(const Options& table);
  static FrontendOptions defaults();

  TORCH_ARG(std::int64_t, sample_rate) = 16000;  ///< Hz
  TORCH_ARG(std::int64_t, num_mel_bins) = 80;
  TORCH_ARG(double, frame_length_ms) = 25;
  TORCH_ARG(double, frame_shift_ms) = 10;
  TORCH_ARG(double, preemphasis) = 0.97;
  TORCH_ARG(double, low_freq) = 20;   ///< Hz
  TORCH_ARG(double, high_freq) = 0;   ///< Hz; <= 0 is relative to Nyquist, as in Kaldi
  TORCH_ARG(std::string, window) = "povey";
  TORCH_ARG(std::string, cmvn) = "utterance";

 public:
  /// The filterbank and normalisation these options describe.
  FeatureSettings features() const;
  /// Frames per second of audio: 1000 / frame_shift_ms.
  double frames_per_second() const { return 1000.0 / frame_shift_ms(); }

  Options source{"frontend"};
};

}  // namespace workbench
