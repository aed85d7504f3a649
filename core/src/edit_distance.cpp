#include "workbench/edit_distance.h"

#include <algorithm>

#include "workbench/text.h"

namespace workbench {

template <typename T>
std::int64_t edit_distance(const std::vector<T>& ref, const std::vector<T>& hyp) {
  // One row of the dynamic programme at a time: O(|ref| * |hyp|) time, O(|hyp|) memory.
  std::vector<std::int64_t> prev(hyp.size() + 1), cur(hyp.size() + 1);
  for (std::size_t j = 0; j <= hyp.size(); ++j) prev[j] = static_cast<std::int64_t>(j);
  for (std::size_t i = 1; i <= ref.size(); ++i) {
    cur[0] = static_cast<std::int64_t>(i);
    for (std::size_t j = 1; j <= hyp.size(); ++j) {
      std::int64_t sub = prev[j - 1] + (ref[i - 1] == hyp[j - 1] ? 0 : 1);
      cur[j] = std::min({sub, prev[j] + 1, cur[j - 1] + 1});
    }
    std::swap(prev, cur);
  }
  return prev[hyp.size()];
}

template std::int64_t edit_distance<char32_t>(const std::vector<char32_t>&, const std::vector<char32_t>&);
template std::int64_t edit_distance<std::string>(const std::vector<std::string>&, const std::vector<std::string>&);
template std::int64_t edit_distance<std::int64_t>(const std::vector<std::int64_t>&, const std::vector<std::int64_t>&);

double ErrorCount::rate() const {
  if (ref_length == 0) return static_cast<double>(errors);
  return static_cast<double>(errors) / static_cast<double>(ref_length);
}

ErrorCount char_errors(const std::string& ref, const std::string& hyp) {
  auto r = utf8_decode(ref), h = utf8_decode(hyp);
  std::vector<char32_t> rv(r.begin(), r.end()), hv(h.begin(), h.end());
  return {edit_distance(rv, hv), static_cast<std::int64_t>(rv.size())};
}

ErrorCount word_errors(const std::string& ref, const std::string& hyp) {
  auto r = split_words(ref), h = split_words(hyp);
  return {edit_distance(r, h), static_cast<std::int64_t>(r.size())};
}

}  // namespace workbench
