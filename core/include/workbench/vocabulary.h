#pragma once
// A character vocabulary with the CTC blank at id 0.
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

namespace workbench {

/// Characters (Unicode code points) seen in the training transcripts, sorted by code point, after
/// two reserved ids: 0 = blank (CTC), 1 = unknown (a character not seen in training).
class Vocabulary {
 public:
  static constexpr std::int64_t kBlank = 0;
  static constexpr std::int64_t kUnknown = 1;

  /// Builds from transcripts; every code point that occurs gets an id.
  static Vocabulary from_texts(const std::vector<std::string>& texts);
  /// Restores from the `serialize()` form (one code point per line after a header); throws
  /// std::invalid_argument on malformed input.
  static Vocabulary deserialize(const std::string& text);
  std::string serialize() const;

  std::int64_t size() const { return static_cast<std::int64_t>(symbols_.size()); }
  /// Ids of the characters of `text`; unseen characters map to kUnknown.
  std::vector<std::int64_t> encode(const std::string& text) const;
  /// Text of ids; blank is skipped and unknown renders as U+FFFD.
  std::string decode(const std::vector<std::int64_t>& ids) const;
  /// The symbol of one id ("<blank>", "<unk>", or the character).
  std::string symbol(std::int64_t id) const;

 private:
  std::vector<char32_t> symbols_;  // index = id; [0] and [1] (blank, unknown) hold no character
  std::unordered_map<char32_t, std::int64_t> ids_;
};

}  // namespace workbench
