#pragma once
// What datasets deliver and what losses and evaluators consume.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/types.h>

namespace workbench {

/// The data a batch carries, which is also what a loss declares it accepts.
enum class BatchKind {
  Speech,  ///< audio only (unpaired speech; transcripts, if any, are ignored)
  Text,    ///< text only (unpaired text)
  Paired,  ///< audio with its transcript (ASR corpora)
};
const char* to_string(BatchKind kind);

/// One example as a dataset plugin delivers it.
struct Utterance {
  std::string id;    ///< unique within the dataset, e.g. "en/digits/5"
  std::string lang;  ///< ISO 639-1 code, e.g. "en"
  std::string text;  ///< normalised transcript (UTF-8); empty for unpaired speech
  /// Translation target (UTF-8), e.g. the English text of the same Asterisk prompt; empty when the
  /// dataset gives none (every dataset except a translation one).
  std::string target;
  std::string path;  ///< the audio file, for error messages and provenance
  std::vector<float> samples;  ///< mono audio in [-1, 1) at the requested sample rate; empty for text
};

/// A padded mini-batch. Speech fields are undefined tensors for text batches and vice versa.
struct Batch {
  BatchKind kind = BatchKind::Paired;
  /// (B, T, F) float32: log-mel filterbank frames (10 ms hop), zero-padded after each length.
  torch::Tensor features;
  /// (B) int64: valid frames per row.
  torch::Tensor feature_lengths;
  /// (B, L) int64: vocabulary ids of the transcript, padded with 0 (the blank id, never a target).
  torch::Tensor tokens;
  /// (B) int64: valid tokens per row.
  torch::Tensor token_lengths;
  std::vector<std::string> ids, langs, texts;
  /// Each row's translation target (Utterance::target); empty strings when the data has none.
  std::vector<std::string> targets;

  std::int64_t size() const { return static_cast<std::int64_t>(ids.size()); }
  /// A copy with every tensor on `device` (non-blocking where possible).
  Batch to(const torch::Device& device) const;
};

}  // namespace workbench
