#include "workbench/frontend_options.h"

namespace workbench {

const OptionSchema& FrontendOptions::schema() {
  static const OptionSchema schema =
      OptionSchema()
          .add_int("sample_rate", 16000, "sample rate (Hz) all audio is resampled to", 1000, 192000)
          .add_int("num_mel_bins", 80, "log-mel filterbank channels", 1, 512)
          .add_float("frame_length_ms", 25.0, "analysis window (ms)", 1, 1000)
          .add_float("frame_shift_ms", 10.0, "hop between frames (ms)", 1, 1000)
          .add_float("preemphasis", 0.97, "pre-emphasis coefficient", 0, 1)
          .add_float("low_freq", 20.0, "lowest mel-bin edge (Hz)", 0)
          .add_float("high_freq", 0.0, "highest mel-bin edge (Hz); <= 0 is relative to Nyquist, as in Kaldi")
          .add_choice("window", "povey", {"povey", "hamming", "hanning", "rectangular"}, "analysis window")
          .add_choice("cmvn", "utterance", {"utterance", "none"}, "mean/variance normalisation of each utterance");
  return schema;
}

FrontendOptions FrontendOptions::from(const Options& t) {
  FrontendOptions o;
  o.sample_rate(t.get_int("sample_rate"))
      .num_mel_bins(t.get_int("num_mel_bins"))
      .frame_length_ms(t.get_float("frame_length_ms"))
      .frame_shift_ms(t.get_float("frame_shift_ms"))
      .preemphasis(t.get_float("preemphasis"))
      .low_freq(t.get_float("low_freq"))
      .high_freq(t.get_float("high_freq"))
      .window(t.get_string("window"))
      .cmvn(t.get_string("cmvn"));
  o.source = t;
  return o;
}

FrontendOptions FrontendOptions::defaults() {
  Options t("frontend");
  for (const auto& spec : schema().specs()) t.set(spec.name, spec.default_value, "default");
  return from(t);
}

FeatureSettings FrontendOptions::features() const {
  FeatureSettings s;
  s.fbank.sample_rate(static_cast<double>(sample_rate()))
      .num_mel_bins(num_mel_bins())
      .frame_length_ms(frame_length_ms())
      .frame_shift_ms(frame_shift_ms())
      .preemphasis(preemphasis())
      .low_freq(low_freq())
      .high_freq(high_freq())
      .window(window());
  s.utterance_cmvn = cmvn() == "utterance";
  return s;
}

}  // namespace workbench
