#include "workbench/data_options.h"

namespace workbench {

const OptionSchema& DataOptions::schema() {
  static const OptionSchema schema =
      OptionSchema()
          .add_string("plugin", "", "dataset plugin")
          .add_float("batch_seconds", 160.0, "audio per batch, counting padding (s)", 0)
          .add_int("max_batch", 64, "most utterances in a batch", 1)
          .add_float("max_seconds", 0.0, "drop longer utterances (0 = keep all)", 0)
          .add_bool("shuffle", true, "shuffle batches every epoch")
          .add_bool("sortagrad", false, "first epoch from the shortest batches to the longest (DeepSpeech 2)")
          .add_choice("use", "auto", {"auto", "speech", "text", "paired"},
                      "what batches carry: auto = what the dataset gives; speech drops the transcripts (unpaired "
                      "speech), text drops the audio (unpaired text)")
          .add_float("language_temperature", 0.0,
                     "> 0: sample languages with probability proportional to share^(1/T) (mSLAM text: 3); "
                     "0: walk the data in length-bucketed epochs", 0)
          .add_choice("on_bad_audio", "error", {"error", "skip"},
                      "a file that cannot be decoded: error = the run fails naming it; skip = it is left out, "
                      "logged and counted (derived.data.<name>.skipped_audio)");
  return schema;
}

DataOptions DataOptions::from(const Options& t) {
  DataOptions o;
  o.batch_seconds(t.get_float("batch_seconds"))
      .max_batch(t.get_int("max_batch"))
      .max_seconds(t.get_float("max_seconds"))
      .shuffle(t.get_bool("shuffle"))
      .sortagrad(t.get_bool("sortagrad"))
      .use(t.get_string("use"))
      .language_temperature(t.get_float("language_temperature"))
      .on_bad_audio(t.get_string("on_bad_audio"));
  o.source = t;
  return o;
}

BatchingOptions DataOptions::batching(double frames_per_second) const {
  BatchingOptions b;
  b.batch_seconds = batch_seconds();
  b.max_batch = max_batch();
  b.shuffle = shuffle();
  b.sortagrad = sortagrad();
  b.frames_per_second = frames_per_second;
  return b;
}

}  // namespace workbench
