#pragma once
// The model's building blocks, as losses and evaluators see them, and the forward paths through them.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "workbench/encoder.h"
#include "workbench/text_embedding.h"

namespace workbench {

/// A learned vector per modality (0 = speech, 1 = text), added to the shared encoder's input so that
/// it can tell the two halves of a speech ++ text sequence apart. Not published for SLAM/mSLAM (a
/// segment embedding in the style of BERT / XLM); on by default, `[model] modality_embedding = false`
/// turns it off.
struct ModalityEmbeddingImpl : torch::nn::Module {
  explicit ModalityEmbeddingImpl(std::int64_t dim);
  torch::nn::Embedding table{nullptr};  ///< (2, D), initialised to zero so it starts as a no-op
};
TORCH_MODULE(ModalityEmbedding);

/// A speech ++ text sequence through the shared encoder: each row holds its valid speech frames, then its
/// valid text tokens, then padding (packed, so that no padding sits between the halves).
struct JointOutput {
  EncoderOutput joint;          ///< (B, Ts_b + Lt_b padded, D)
  torch::Tensor speech_index;   ///< (B, Ts) int64: joint position of each speech frame (0 at padding)
  torch::Tensor text_index;     ///< (B, Lt) int64: joint position of each text token (0 at padding)
  /// (B, Ts, D): the joint output at the speech frames, in speech order.
  torch::Tensor speech() const;
  /// (B, Lt, D): the joint output at the text tokens, in text order.
  torch::Tensor text() const;
};

/// The parts of the joint speech-text model (mSLAM figure 1):
///   speech: filterbank -> speech_encoder.embed (subsampled features) -> speech_encoder.encode
///           (N Conformer layers: the "contrastive vectors") -> shared_encoder.embed (linear projection)
///   text:   tokens -> text_embedding.embed
///   then:   (+ modality embedding) -> shared_encoder.encode (M Conformer layers: the "context vectors").
/// Parts an experiment does not configure are null; a loss that needs one throws a ConfigError saying
/// which part is missing (require_*).
struct ModelParts {
  std::shared_ptr<Encoder> speech_encoder;
  std::shared_ptr<TextEmbedding> text_embedding;
  std::shared_ptr<Encoder> shared_encoder;
  ModalityEmbedding modality{nullptr};

  /// The configured parts' modules by name ("speech_encoder", "text_embedding", "shared_encoder",
  /// "modality_embedding"): what is trained, checkpointed and counted. Losses' own modules are not included.
  std::vector<std::pair<std::string, torch::nn::Module*>> named_modules() const;

  Encoder& require_speech_encoder(const std::string& who) const;
  TextEmbedding& require_text_embedding(const std::string& who) const;
  Encoder& require_shared_encoder(const std::string& who) const;

  /// Contrastive vectors (B, T, Ds) -> context vectors (B, T, D): projection, speech modality, M layers.
  EncoderOutput shared_from_speech(const EncoderOutput& contrastive);
  /// Embedded text (B, L, D) -> context vectors (B, L, D).
  EncoderOutput shared_from_text(const EncoderOutput& embedded_text);
  /// Speech ++ text through the shared encoder (TLM, STM).
  JointOutput shared_from_pair(const EncoderOutput& contrastive, const EncoderOutput& embedded_text);
  /// The context vectors for speech alone: through the shared encoder when there is one, otherwise the
  /// speech encoder's output (the vertical slice's CTC).
  EncoderOutput speech_context(const torch::Tensor& features, const torch::Tensor& lengths);
};

}  // namespace workbench
