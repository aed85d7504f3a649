#pragma once
// The decoder's output units: characters of the training targets, or SentencePiece pieces trained on
// them (the "characters, or SentencePiece trained on the English targets"). Either way the ids
// are 0 = padding, 1 = unknown, the units, and the decoder adds its end symbol at size(); serialize()
// is what the checkpoint keeps, so a checkpoint decodes with the units it was trained on.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "workbench/vocabulary.h"

namespace workbench::spm {
class Processor;
}

namespace workbench::transformer_decoder {

class TargetUnits {
 public:
  /// Every character of `targets` (Vocabulary::from_texts).
  static TargetUnits characters(const std::vector<std::string>& targets);
  /// A SentencePiece unigram model of `vocab_size` pieces (unknown included) trained on `targets`, seeded
  /// with `seed`. Throws std::runtime_error with SentencePiece's message (a vocab_size the targets cannot
  /// fill, no libsentencepiece).
  static TargetUnits sentencepiece(const std::vector<std::string>& targets, std::int64_t vocab_size, std::uint64_t seed);
  /// What serialize() wrote; a checkpoint from before SentencePiece targets holds Vocabulary::serialize bytes.
  static TargetUnits deserialize(const std::string& bytes);

  std::string serialize() const;
  /// Ids in use: padding, unknown and the units (the decoder's end symbol is size()).
  std::int64_t size() const;
  std::string kind() const { return pieces_ ? "sentencepiece" : "characters"; }
  std::vector<std::int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<std::int64_t>& ids) const;

 private:
  Vocabulary characters_;
  std::shared_ptr<const spm::Processor> pieces_;
  std::string proto_;
};

}  // namespace workbench::transformer_decoder
