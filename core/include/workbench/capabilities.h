#pragma once
// Typed capabilities: what one component offers another, connected once, after every objective and
// evaluator exists and before the optimizer does.
//
// A loss that offers something implements one of the interfaces below (w2v_bert is a SpeechCodeProvider,
// ctc a FramePredictor). A loss or evaluator that needs something overrides connect() and asks the
// Connections for it by type and by the objective name the user gave (all<T>() lists every objective
// that has it).
// A missing capability is a ConfigError that says what to add, raised when the run is built, not at
// the first step.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <torch/types.h>

#include "workbench/component.h"
#include "workbench/error.h"

namespace workbench {

class Vocabulary;
struct Batch;
struct ModelParts;

/// Per-frame token posteriors for speech, as CTC gives them (the ASR evaluator decodes these).
class FramePredictor {
 public:
  virtual ~FramePredictor();
  /// Log-probabilities (B, T', V) over the vocabulary with blank = 0, and valid lengths (B) int64.
  virtual std::pair<torch::Tensor, torch::Tensor> frame_log_probs(const Batch& batch, ModelParts& model) = 0;
  virtual const Vocabulary& vocabulary() const = 0;
};

/// Transcripts decoded from speech by a sequence head (RNN-T greedy or beam search); the ASR evaluator
/// scores these when the objective it names is not a FramePredictor.
class Transcriber {
 public:
  virtual ~Transcriber();
  /// One transcript per row of `batch` (its features and feature_lengths), UTF-8, in the order of the rows.
  virtual std::vector<std::string> transcribe(const Batch& batch, ModelParts& model) = 0;
};

/// Target-language text decoded by a sequence-to-sequence head (speech translation); the translation
/// evaluator scores these with BLEU and chrF against Batch::targets.
class Translator {
 public:
  /// Where the encoder input comes from.
  enum class Source {
    Speech,  ///< the batch's speech (features, feature_lengths): speech translation
    Text,    ///< the batch's source transcript (tokens) through the text embedding and the shared
             ///< encoder: text translation, zero-shot when the head was trained on speech only
  };
  virtual ~Translator();
  /// Whether translate() can read `source` with this model (Text needs a text embedding and a shared encoder).
  virtual bool supports(Source source, const ModelParts& model) const = 0;
  /// One translation per row of `batch`, UTF-8, in the order of the rows. Throws ConfigError when the
  /// model cannot read `source`.
  virtual std::vector<std::string> translate(const Batch& batch, ModelParts& model, Source source) = 0;
};

/// Utterance-level classes (spoken language ID, intent): what the classification evaluator scores.
class UtteranceClassifier {
 public:
  virtual ~UtteranceClassifier();
  /// The C class names, in logit order.
  virtual const std::vector<std::string>& classes() const = 0;
  /// (B) int64 on the CPU: each row's class from its metadata (language, prompt id); -1 for a row that
  /// belongs to no class, which is left out of the loss and of every metric.
  virtual torch::Tensor labels(const Batch& batch) const = 0;
  /// (B, C) float logits from the batch's speech (features, feature_lengths).
  virtual torch::Tensor logits(const Batch& batch, ModelParts& model) = 0;
};

/// Discrete targets for speech frames, as w2v-BERT's quantizer gives them (TLM predicts these).
class SpeechCodeProvider {
 public:
  virtual ~SpeechCodeProvider();
  virtual std::int64_t groups() const = 0;   ///< G codebooks
  virtual std::int64_t entries() const = 0;  ///< V entries per codebook
  /// Code ids of subsampled speech features (B, T, Ds) (speech_encoder.embed() output, unmasked):
  /// (B, T, G) int64, detached: targets only, never a path for gradients.
  virtual torch::Tensor code_ids(const torch::Tensor& features) = 0;
};

/// The objectives of a run, as a component sees them in the connect phase. Lookups are typed:
/// `find<SpeechCodeProvider>("w2v_bert")` is the objective named w2v_bert if it is one.
class Connections {
 public:
  struct Entry {
    std::string name;    ///< [objectives.<name>]
    std::string plugin;  ///< its loss plugin
    Component* component = nullptr;
  };
  Connections() = default;
  explicit Connections(std::vector<Entry> objectives) : objectives_(std::move(objectives)) {}

  /// The objective `name` as a T; nullptr when there is no such objective. Throws ConfigError from `who`
  /// when the objective exists but does not offer T (`what` names the capability: "speech codes").
  template <typename T>
  T* find(const std::string& name, const std::string& who, const std::string& what) const {
    for (const auto& e : objectives_) {
      if (e.name != name) continue;
      if (auto* t = dynamic_cast<T*>(e.component)) return t;
      throw ConfigError(fmt::format("{}: objective '{}' (plugin {}) gives no {}", who, name, e.plugin, what));
    }
    return nullptr;
  }

  /// Like find, but a missing objective is a ConfigError too: "<who> needs <what>: <hint>" followed by
  /// the objectives the run has.
  template <typename T>
  T& require(const std::string& name, const std::string& who, const std::string& what, const std::string& hint) const {
    if (T* t = find<T>(name, who, what)) return *t;
    throw ConfigError(fmt::format("{} needs {} from an objective named '{}': {} (objectives: {})", who, what, name, hint,
                                  names()));
  }

  /// Every objective that offers T, in experiment order.
  template <typename T>
  std::vector<std::pair<std::string, T*>> all() const {
    std::vector<std::pair<std::string, T*>> out;
    for (const auto& e : objectives_)
      if (auto* t = dynamic_cast<T*>(e.component)) out.emplace_back(e.name, t);
    return out;
  }

  const std::vector<Entry>& objectives() const { return objectives_; }
  /// "a, b" or "none".
  std::string names() const {
    std::string s;
    for (const auto& e : objectives_) s += (s.empty() ? "" : ", ") + e.name;
    return s.empty() ? "none" : s;
  }

 private:
  std::vector<Entry> objectives_;
};

}  // namespace workbench
