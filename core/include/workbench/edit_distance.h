#pragma once
// Levenshtein distance and the error rates built on it.
#include <cstdint>
#include <string>
#include <vector>

namespace workbench {

/// Minimum number of substitutions, insertions and deletions turning `hyp` into `ref`.
template <typename T>
std::int64_t edit_distance(const std::vector<T>& ref, const std::vector<T>& hyp);

/// Errors and reference length for an error rate; rates are summed over a corpus as
/// sum(errors) / sum(ref_length), the way sclite scores, not averaged per utterance.
struct ErrorCount {
  std::int64_t errors = 0;
  std::int64_t ref_length = 0;
  ErrorCount& operator+=(const ErrorCount& o) {
    errors += o.errors;
    ref_length += o.ref_length;
    return *this;
  }
  /// errors / ref_length (0 when both are 0; errors alone when the reference is empty).
  double rate() const;
};

/// Character errors over Unicode code points (spaces count as characters).
ErrorCount char_errors(const std::string& ref, const std::string& hyp);
/// Word errors over white-space separated words.
ErrorCount word_errors(const std::string& ref, const std::string& hyp);

}  // namespace workbench
