#pragma once
// UTF-8 text helpers for character-level models and CER/WER.
#include <string>
#include <vector>

namespace workbench {

/// Decodes UTF-8 into code points. Invalid bytes become U+FFFD.
std::u32string utf8_decode(const std::string& text);
/// The byte offset of the first byte that is not part of a well-formed UTF-8 sequence (RFC 3629: no
/// overlong forms, no surrogates, nothing above U+10FFFF), or std::string::npos when the text is valid.
std::size_t invalid_utf8_at(const std::string& text);
std::string utf8_encode(const std::u32string& text);
std::string utf8_encode(char32_t code_point);

/// Unicode-aware lower-casing (Latin, Cyrillic, Greek...), via the C.UTF-8 locale of glibc.
std::string to_lower(const std::string& text);

/// Collapses runs of white space into one space and trims both ends.
std::string normalize_space(const std::string& text);

/// The text as error rates are usually reported on: lower-cased (Unicode-aware), punctuation of any
/// script (glibc's iswpunct in C.UTF-8: Latin, Cyrillic, CJK marks, "«»", "¿¡") replaced by spaces except
/// the apostrophe and the hyphen, which belong to words ("don't", "peut-être"), then white space collapsed.
std::string normalize_for_scoring(const std::string& text);

/// Splits on white space.
std::vector<std::string> split_words(const std::string& text);

}  // namespace workbench
