#include "prompts.h"

#include <cctype>
#include <sstream>

#include "workbench/io.h"
#include "workbench/text.h"

namespace workbench::asterisk {

std::string transcripts_package(const std::string& lang) { return "asterisk-core-sounds-" + lang; }

std::filesystem::path transcripts_path(const std::string& doc_dir, const std::string& lang) {
  return std::filesystem::path(doc_dir) / transcripts_package(lang) / ("core-sounds-" + lang + ".txt.gz");
}

std::vector<Prompt> parse_transcripts(const std::string& content) {
  std::vector<Prompt> out;
  std::istringstream in(content);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("\xEF\xBB\xBF", 0) == 0) line.erase(0, 3);  // UTF-8 byte order mark
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == ';') continue;
    auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    out.push_back({normalize_space(line.substr(0, colon)), normalize_space(line.substr(colon + 1))});
  }
  return out;
}

std::string strip_punctuation(const std::string& text) {
  std::u32string out;
  for (char32_t c : utf8_decode(text)) {
    bool punct = (c < 0x80 && std::ispunct(static_cast<int>(c)) && c != '\'' && c != '-') || c == 0x2026 /* … */ ||
                 c == 0x2013 || c == 0x2014 || c == 0x00AB || c == 0x00BB || c == 0x201C || c == 0x201D;
    out.push_back(punct ? U' ' : c);
  }
  return normalize_space(utf8_encode(out));
}

std::string normalize_prompt(const std::string& raw, bool strip) {
  if (raw.find_first_of("[]()") != std::string::npos) return "";
  std::string text = to_lower(raw);
  if (strip) text = strip_punctuation(text);
  return text;
}

bool in_split(const std::string& id, const std::string& split) {
  if (split == "all") return true;
  auto bucket = stable_bucket(id, 10);
  if (split == "test") return bucket == 0;
  if (split == "dev") return bucket == 1;
  return bucket >= 2;
}

bool in_prompt_subset(const std::string& id, double fraction) {
  if (fraction >= 1.0) return true;
  return static_cast<double>(stable_bucket("subset:" + id, 1000)) < fraction * 1000.0;
}

std::string leak_key(const std::string& text) { return normalize_space(strip_punctuation(to_lower(text))); }

std::unordered_set<std::string> held_out_keys(const std::vector<Prompt>& prompts) {
  std::unordered_set<std::string> keys;
  for (const auto& p : prompts) {
    if (in_split(p.id, "train")) continue;
    const std::string text = normalize_prompt(p.text, true);
    if (!text.empty()) keys.insert(leak_key(text));
  }
  return keys;
}

}  // namespace workbench::asterisk
