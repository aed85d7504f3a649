// The "text" dataset: unpaired text, one sentence per line (BatchKind::Text), for the text-only losses
// (SpanBERT in SLAM and mSLAM). Three sources, per language:
//   * `files`: "lang:path" text files (".gz" allowed), one sentence per line;
//   * Debian's fortune cookies (packages fortunes, fortunes-es, fortunes-it, fortunes-ru, fortunes-de);
//   * the transcripts of the TRAIN split of the Asterisk prompts, split and normalised by the same code
//     as the "asterisk" dataset (plugins/dataset/asterisk/prompts.cpp), so that no dev or test prompt
//     is ever seen as text during pre-training.
// Every line is lower-cased (and optionally stripped of punctuation) exactly as the asterisk transcripts
// are, so that the character vocabulary built from the two matches.
#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_set>
#include <vector>

#include <cstdio>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "workbench/dataset.h"
#include "workbench/error.h"
#include "workbench/io.h"
#include "workbench/plugin.h"
#include "workbench/text.h"

#include "../asterisk/prompts.h"

namespace workbench::text_dataset {
namespace {

namespace fs = std::filesystem;

constexpr const char* kDpkgInfo = "/var/lib/dpkg/info";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

/// Whether `s` is well-formed UTF-8: no stray continuation bytes, overlong forms, surrogates or code
/// points past U+10FFFF (RFC 3629).
bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t n;
    char32_t cp, min;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3, cp = c & 0x07, min = 0x10000;
    } else {
      return false;
    }
    for (std::size_t k = 1; k <= n; ++k) {
      if (i + k >= s.size()) return false;
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += n + 1;
  }
  return true;
}

/// Renders terminal formatting away: fortune files underline and embolden with backspaces
/// ("____\b\b\b\bBODY"), so a backspace deletes the character before it; tabs become spaces and the
/// other control characters (BEL, ESC, C1) go.
std::u32string strip_controls(const std::u32string& text) {
  std::u32string out;
  out.reserve(text.size());
  for (char32_t c : text) {
    if (c == U'\b') {
      if (!out.empty()) out.pop_back();
    } else if (c == U'\t') {
      out.push_back(U' ');
    } else if (c >= 0x20 && !(c >= 0x7F && c <= 0x9F)) {
      out.push_back(c);
    }
  }
  return out;
}

/// splitmix64 (Steele et al. 2014): a well-mixed 64-bit key from a seed and an id, the same on every
/// machine, so that a subset depends only on the seed and the ids it chooses from.
std::uint64_t mix(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001B3ull;
  return h;
}

/// One fortune database to read: `name` (for ids) and the file with its text.
struct FortuneFile {
  std::string name;
  fs::path path;
  bool utf8_variant = false;
};

/// One file per fortune database among `candidates`: the ".u8" variant (fortune-mod's UTF-8 copy) when
/// there is one, never the ".dat" index; a database reached twice (fortunes-it links each of its files
/// into the top folder) counts once. Sorted by name, for stable ids and order.
std::vector<FortuneFile> pick_databases(std::vector<fs::path> candidates) {
  std::sort(candidates.begin(), candidates.end());
  std::map<std::string, FortuneFile> by_target;  // canonical path of the database's plain file
  for (const auto& p : candidates) {
    const std::string name = p.filename().string();
    std::error_code ec;
    if (ends_with(name, ".dat") || !fs::is_regular_file(p, ec)) continue;  // follows links; drops dangling ones
    const bool u8 = ends_with(name, ".u8");
    const fs::path plain = u8 ? p.parent_path() / name.substr(0, name.size() - 3) : p;
    fs::path target = fs::canonical(fs::exists(plain, ec) ? plain : p, ec);
    if (ec) continue;
    auto [it, added] = by_target.try_emplace(target.string(), FortuneFile{plain.filename().string(), p, u8});
    if (!added && u8 && !it->second.utf8_variant) it->second = FortuneFile{plain.filename().string(), p, true};
  }
  std::vector<FortuneFile> out;
  for (auto& [target, file] : by_target) out.push_back(std::move(file));
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return std::tie(a.name, a.path) < std::tie(b.name, b.path);
  });
  return out;
}

/// The files dpkg installed for `package` (its /var/lib/dpkg/info/<package>.list), or nothing when
/// dpkg has no record of it.
std::optional<std::vector<fs::path>> dpkg_files(const std::string& package) {
  const fs::path list = fs::path(kDpkgInfo) / (package + ".list");
  std::error_code ec;
  if (!fs::is_regular_file(list, ec)) return std::nullopt;
  std::vector<fs::path> out;
  std::istringstream in(read_text_file(list.string()));
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) out.emplace_back(line);
  return out;
}

/// The entries directly inside `dir` (not recursing: the "off" subfolders hold the offensive fortunes).
std::vector<fs::path> list_dir(const fs::path& dir) {
  std::vector<fs::path> out;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) out.push_back(it->path());
  return out;
}

bool directly_in(const fs::path& p, const fs::path& dir) {
  return p.lexically_normal().parent_path() == dir.lexically_normal();
}

class TextDataset final : public Dataset {
 public:
  explicit TextDataset(const Options& o)
      : languages_(o.get_strings("languages")),
        fortunes_(o.get_bool("fortunes")),
        fortunes_dir_(o.get_string("fortunes_dir")),
        asterisk_(o.get_bool("asterisk_transcripts")),
        transcripts_dir_(o.get_string("transcripts_dir")),
        strip_punctuation_(o.get_bool("strip_punctuation")),
        deduplicate_(o.get_bool("deduplicate")),
        max_chars_(o.get_int("max_chars")),
        min_chars_(o.get_int("min_chars")),
        max_per_language_(o.get_int("max_per_language")) {
    if (languages_.empty()) o.fail("languages", "needs at least one language");
    if (min_chars_ > max_chars_)
      o.fail("min_chars", fmt::format("{} is more than max_chars = {}: every line would be dropped", min_chars_, max_chars_));
    for (const auto& entry : o.get_strings("files")) {
      const auto colon = entry.find(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == entry.size())
        o.fail("files", fmt::format("'{}' is not \"lang:path\" (e.g. \"en:data/en.txt.gz\")", entry));
      files_.emplace_back(entry.substr(0, colon), entry.substr(colon + 1));
    }
  }

  BatchKind kind() const override { return BatchKind::Text; }

  std::vector<Utterance> load(const BuildContext& ctx) override {
    std::vector<Utterance> all;
    for (const auto& lang : languages_) {
      std::vector<Utterance> part;
      for (const auto& [file_lang, path] : files_)
        if (file_lang == lang) add_lines(part, lang, read_text_file(path), "files/" + lang + "/" + path);
      if (fortunes_)
        for (const auto& f : fortune_files(lang))
          add_lines(part, lang, read_text_file(f.path.string()), "fortunes/" + lang + "/" + f.name);
      if (asterisk_) add_asterisk(part, lang);
      drop_held_out(part, lang);
      if (deduplicate_) deduplicate(part);
      subset(part, ctx.seed);
      all.insert(all.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
    }
    if (all.empty())
      throw DataError(fmt::format("the text dataset found no sentences for languages {} (files, fortunes = {}, "
                                  "asterisk_transcripts = {}; min_chars = {})",
                                  fmt::join(languages_, ", "), fortunes_, asterisk_, min_chars_));
    return all;
  }

 private:
  /// The line as the model will see it, or "" to drop it: invalid UTF-8 is dropped (never guessed at),
  /// formatting controls are rendered away, white space collapsed, lower-cased, punctuation optionally
  /// stripped, cut after max_chars characters, and dropped under min_chars.
  std::string normalize(const std::string& raw) const {
    if (!valid_utf8(raw)) return "";
    std::string text = normalize_space(utf8_encode(strip_controls(utf8_decode(raw))));
    if (text.empty() || text == "%") return "";  // "%" separates fortunes
    text = to_lower(text);
    if (strip_punctuation_) text = asterisk::strip_punctuation(text);
    std::u32string chars = utf8_decode(text);
    if (static_cast<std::int64_t>(chars.size()) > max_chars_) {
      // Cut on code points, so the result stays valid UTF-8; a trailing space is trimmed.
      chars.resize(static_cast<std::size_t>(max_chars_));
      while (!chars.empty() && chars.back() == U' ') chars.pop_back();
    }
    if (static_cast<std::int64_t>(chars.size()) < min_chars_) return "";
    return utf8_encode(chars);
  }

  /// Appends the kept lines of `content`, with ids "<prefix>:<line number from 1>".
  void add_lines(std::vector<Utterance>& out, const std::string& lang, const std::string& content,
                 const std::string& prefix) const {
    std::istringstream in(content);
    std::string line;
    for (std::int64_t number = 1; std::getline(in, line); ++number) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      std::string text = normalize(line);
      if (text.empty()) continue;
      Utterance u;
      u.id = fmt::format("{}:{}", prefix, number);
      u.lang = lang;
      u.text = std::move(text);
      out.push_back(std::move(u));
    }
  }

  /// The fortune databases of `lang`. English is what the packages fortunes-min and fortunes install
  /// at the top of fortunes_dir; Italian is fortunes-it's files (in it/, linked into the top folder,
  /// so they must not be taken for English); the others are the files directly in fortunes_dir/<lang>/.
  /// dpkg's file lists name the packages' files exactly; without them (another fortunes_dir, or a
  /// system without dpkg) the folders decide. Throws DataError naming the package for a language
  /// Debian has fortunes for when they are missing; other languages (fr) have none and get none.
  std::vector<FortuneFile> fortune_files(const std::string& lang) const {
    static const std::map<std::string, std::string> packages = {
        {"en", "fortunes"}, {"es", "fortunes-es"}, {"it", "fortunes-it"}, {"ru", "fortunes-ru"}, {"de", "fortunes-de"}};
    const fs::path dir(fortunes_dir_);
    std::vector<fs::path> candidates;
    std::error_code ec;
    if (lang == "en") {
      for (const char* package : {"fortunes-min", "fortunes"})
        if (auto listed = dpkg_files(package))
          for (auto& p : *listed)
            if (directly_in(p, dir)) candidates.push_back(p);
      if (candidates.empty()) {
        // The top folder's own files: links into a subfolder (fortunes-it's) and names that the it/
        // folder also has are Italian.
        const auto top = fs::canonical(dir, ec);
        for (auto& p : list_dir(dir)) {
          auto target = fs::canonical(p, ec);
          if (ec || target.parent_path() != top) continue;
          std::string name = p.filename().string();
          if (ends_with(name, ".u8")) name.resize(name.size() - 3);
          if (fs::exists(dir / "it" / name, ec)) continue;
          candidates.push_back(p);
        }
      }
    } else if (lang == "it") {
      if (auto listed = dpkg_files("fortunes-it"))
        for (auto& p : *listed) {
          auto rel = p.lexically_normal().lexically_relative(dir.lexically_normal());
          if (!rel.empty() && *rel.begin() != "..") candidates.push_back(p);
        }
      if (candidates.empty()) candidates = list_dir(dir / "it");
    } else {
      candidates = list_dir(dir / lang);
    }
    auto files = pick_databases(std::move(candidates));
    auto package = packages.find(lang);
    if (files.empty() && package != packages.end())
      throw DataError(fmt::format("no {} fortunes under {}. Install them with: sudo apt-get install {} "
                                  "(or set fortunes = false)",
                                  lang, fortunes_dir_, package->second));
    return files;
  }

  /// The TRAIN-split Asterisk transcripts of `lang`, with ids "asterisk/<lang>/<prompt id>" (the
  /// asterisk dataset's ids with "asterisk/" in front). Prompts without audio are kept: the split
  /// depends on the id alone, so they cannot be dev or test prompts.
  void add_asterisk(std::vector<Utterance>& out, const std::string& lang) const {
    static const std::set<std::string> packaged = {"en", "es", "fr", "it", "ru"};
    const fs::path path = asterisk::transcripts_path(transcripts_dir_, lang);
    std::error_code ec;
    if (!fs::exists(path, ec)) {
      if (!packaged.count(lang)) return;  // Debian has no Asterisk prompts in this language
      throw DataError(fmt::format("Asterisk transcripts for '{}' are missing ({} not found). Install them with: "
                                  "sudo apt-get install {} (or set asterisk_transcripts = false)",
                                  lang, path.string(), asterisk::transcripts_package(lang)));
    }
    for (const auto& p : asterisk::parse_transcripts(read_text_file(path.string()))) {
      if (!asterisk::in_split(p.id, "train")) continue;
      std::string text = asterisk::normalize_prompt(p.text, strip_punctuation_);
      if (text.empty()) continue;
      text = normalize(text);  // the length limits; the rest is already done and idempotent
      if (text.empty()) continue;
      Utterance u;
      u.id = "asterisk/" + lang + "/" + p.id;
      u.lang = lang;
      u.text = std::move(text);
      out.push_back(std::move(u));
    }
  }

  /// Drops every sentence (from files, fortunes or transcripts) whose text is that of a dev or test
  /// Asterisk prompt of `lang`, so that unpaired text never carries a held-out transcript.
  void drop_held_out(std::vector<Utterance>& part, const std::string& lang) const {
    const fs::path path = asterisk::transcripts_path(transcripts_dir_, lang);
    std::error_code ec;
    if (!fs::exists(path, ec)) return;
    const auto held_out = asterisk::held_out_keys(asterisk::parse_transcripts(read_text_file(path.string())));
    const auto before = part.size();
    part.erase(std::remove_if(part.begin(), part.end(),
                              [&](const Utterance& u) { return held_out.count(asterisk::leak_key(u.text)) > 0; }),
               part.end());
    if (part.size() < before)
      std::fprintf(stderr, "  text %s: left out %zu sentences that are dev or test transcripts\n", lang.c_str(),
                   before - part.size());
  }

  /// Keeps the first of identical lines (fortune attributions such as "-- mark twain" repeat a lot).
  static void deduplicate(std::vector<Utterance>& part) {
    std::unordered_set<std::string> seen;
    part.erase(std::remove_if(part.begin(), part.end(), [&](const Utterance& u) { return !seen.insert(u.text).second; }),
               part.end());
  }

  /// At most max_per_language lines, chosen by a seeded hash of each id (so the same seed gives the same
  /// subset, and a larger limit a superset), kept in their original order.
  void subset(std::vector<Utterance>& part, std::uint64_t seed) const {
    if (max_per_language_ <= 0 || static_cast<std::int64_t>(part.size()) <= max_per_language_) return;
    std::vector<std::pair<std::uint64_t, std::size_t>> keys;
    keys.reserve(part.size());
    for (std::size_t i = 0; i < part.size(); ++i) keys.emplace_back(mix(seed ^ fnv1a(part[i].id)), i);
    const auto keep = static_cast<std::size_t>(max_per_language_);
    std::nth_element(keys.begin(), keys.begin() + static_cast<std::ptrdiff_t>(keep), keys.end());
    std::vector<std::size_t> chosen;
    for (std::size_t k = 0; k < keep; ++k) chosen.push_back(keys[k].second);
    std::sort(chosen.begin(), chosen.end());
    std::vector<Utterance> out;
    out.reserve(keep);
    for (auto i : chosen) out.push_back(std::move(part[i]));
    part = std::move(out);
  }

  std::vector<std::string> languages_;
  std::vector<std::pair<std::string, std::string>> files_;  // (lang, path)
  bool fortunes_;
  std::string fortunes_dir_;
  bool asterisk_;
  std::string transcripts_dir_;
  bool strip_punctuation_, deduplicate_;
  std::int64_t max_chars_, min_chars_, max_per_language_;
};

PluginDescriptor describe() {
  return describe_plugin<TextDataset>(PluginKind::Dataset, "text", "1.0.0",
      "unpaired text, one sentence per line: your files, Debian's fortunes, Asterisk train transcripts",
      OptionSchema()
          .add_strings("files", {}, "\"lang:path\" text files, one sentence per line (.gz allowed); languages not in "
                                    "`languages` are skipped")
          .add_bool("fortunes", true, "add Debian's fortune cookies for each language (en, es, it, ru, de; fr has none)")
          .add_string("fortunes_dir", "/usr/share/games/fortunes", "where the fortunes packages install their files")
          .add_bool("asterisk_transcripts", true, "add the TRAIN-split Asterisk prompt transcripts (asterisk-core-sounds-XX)")
          .add_string("transcripts_dir", "/usr/share/doc", "root of the asterisk-core-sounds-<lang>/ transcript folders")
          .add_strings("languages", {"en", "es", "fr", "it", "ru"}, "languages to load (ISO 639-1)")
          .add_int("max_chars", 512, "longer lines are cut after this many characters (mSLAM: 512)", 1)
          .add_int("min_chars", 8, "shorter lines (after normalisation) are dropped", 0)
          .add_int("max_per_language", 0, "keep at most this many lines per language (0 = all), a subset chosen by the seed", 0)
          .add_bool("strip_punctuation", false, "replace punctuation by spaces, as the asterisk dataset's option does "
                                                "(the text is always lower-cased)")
          .add_bool("deduplicate", true, "keep one copy of identical lines within a language"));
}

}  // namespace
}  // namespace workbench::text_dataset

WORKBENCH_PLUGIN(workbench::text_dataset::describe)
