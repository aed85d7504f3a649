#pragma once
// The base of everything a plugin creates, and what the core tells a factory when it builds one.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>

namespace workbench {

class Vocabulary;

/// Base class of encoders, losses, datasets and evaluators. The out-of-line destructor in
/// libworkbench_core anchors the typeinfo, so dynamic_cast works across plugin libraries.
class Component {
 public:
  virtual ~Component();
};

/// What the core knows when it builds a component; fields that do not apply to a kind are 0/null.
struct BuildContext {
  /// Encoders: the input feature dimension F (log-mel bins for a speech encoder).
  std::int64_t input_dim = 0;
  /// Losses and text embeddings: D of the context vectors losses read: the shared encoder's output
  /// when the model has one, otherwise the speech encoder's.
  std::int64_t model_dim = 0;
  /// Losses: D of the speech encoder (its embed() and encode() outputs: the subsampled features a
  /// quantizer reads and the contrastive vectors).
  std::int64_t speech_dim = 0;
  /// Losses: rows of the text embedding (TextEmbedding::vocab_size()); 0 without a text embedding.
  std::int64_t text_vocab_size = 0;
  /// Losses and text embeddings: the character vocabulary built from the training texts (blank = 0).
  std::shared_ptr<const Vocabulary> vocabulary;
  /// Text embeddings: every training text (transcripts and unpaired text), for a tokenizer trained at
  /// start-up; null in a dry run.
  const std::vector<std::string>* training_texts = nullptr;
  /// Losses: the non-empty translation targets of the training data (Utterance::target), for a decoder
  /// head's output vocabulary; null when no training data has targets.
  const std::vector<std::string>* training_targets = nullptr;
  /// Datasets: false when only the transcripts will be used (the audio need not be read).
  bool load_audio = true;
  /// Datasets: the sample rate (Hz) that audio must be delivered at.
  std::int64_t sample_rate = 16000;
  /// Datasets: what a file that cannot be decoded does ([data.<name>] on_bad_audio): "error" (the run fails
  /// naming it) or "skip" (its utterance is left out and reported to skipped_audio).
  std::string on_bad_audio = "error";
  /// Datasets, with on_bad_audio = "skip": each left-out file as (path, reason); the runner logs them and
  /// records their count. May be null (then nothing is reported).
  std::vector<std::pair<std::string, std::string>>* skipped_audio = nullptr;
  /// Where parameters will live; components may create tensors there directly.
  c10::Device device = c10::Device(c10::DeviceType::CPU);
  std::uint64_t seed = 0;
};

}  // namespace workbench
