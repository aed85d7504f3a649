#include "workbench/vocabulary.h"

#include <algorithm>
#include <set>
#include <sstream>
#include <stdexcept>

#include "workbench/text.h"

namespace workbench {

namespace {
constexpr const char* kHeader = "workbench-char-vocabulary v1";
}

Vocabulary Vocabulary::from_texts(const std::vector<std::string>& texts) {
  std::set<char32_t> seen;
  for (const auto& t : texts)
    for (char32_t cp : utf8_decode(t)) seen.insert(cp);
  Vocabulary v;
  v.symbols_ = {0, 0};
  for (char32_t cp : seen) {
    v.ids_[cp] = static_cast<std::int64_t>(v.symbols_.size());
    v.symbols_.push_back(cp);
  }
  return v;
}

std::string Vocabulary::serialize() const {
  // Code points as decimal numbers: white space and control characters survive any text channel.
  std::ostringstream out;
  out << kHeader << "\n";
  for (std::size_t i = 2; i < symbols_.size(); ++i) out << static_cast<std::uint32_t>(symbols_[i]) << "\n";
  return out.str();
}

Vocabulary Vocabulary::deserialize(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  if (!std::getline(in, line) || line != kHeader)
    throw std::invalid_argument("not a workbench character vocabulary (missing header '" + std::string(kHeader) + "')");
  Vocabulary v;
  v.symbols_ = {0, 0};
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    std::size_t used = 0;
    unsigned long cp = std::stoul(line, &used);
    if (used != line.size() || line[0] == '-' || cp > 0x10FFFF)
      throw std::invalid_argument("bad vocabulary line: '" + line + "' (expected a code point in decimal)");
    v.ids_[static_cast<char32_t>(cp)] = static_cast<std::int64_t>(v.symbols_.size());
    v.symbols_.push_back(static_cast<char32_t>(cp));
  }
  return v;
}

std::vector<std::int64_t> Vocabulary::encode(const std::string& text) const {
  std::vector<std::int64_t> ids;
  for (char32_t cp : utf8_decode(text)) {
    auto it = ids_.find(cp);
    ids.push_back(it == ids_.end() ? kUnknown : it->second);
  }
  return ids;
}

std::string Vocabulary::decode(const std::vector<std::int64_t>& ids) const {
  std::u32string out;
  for (auto id : ids) {
    if (id == kBlank) continue;
    if (id == kUnknown || id < 0 || id >= size()) {
      out.push_back(0xFFFD);
      continue;
    }
    out.push_back(symbols_[static_cast<std::size_t>(id)]);
  }
  return utf8_encode(out);
}

std::string Vocabulary::symbol(std::int64_t id) const {
  if (id == kBlank) return "<blank>";
  if (id == kUnknown) return "<unk>";
  if (id < 0 || id >= size()) throw std::out_of_range("vocabulary id " + std::to_string(id) + " out of range");
  return utf8_encode(symbols_[static_cast<std::size_t>(id)]);
}

}  // namespace workbench
