// The "text" dataset plugin, loaded through the registry: "lang:path" files (fortune separators, blank
// lines, .gz, invalid UTF-8, the max_chars cut on character boundaries), the languages filter, the
// seeded max_per_language subset, Debian's fortunes, and the Asterisk transcripts of the train split
// only (checked against the asterisk plugin's own dev and test splits).
#include <torch/types.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "workbench/dataset.h"
#include "workbench/error.h"
#include "workbench/registry.h"
#include "workbench/text.h"

#include <catch2/catch.hpp>

using namespace workbench;
using Catch::Matchers::StartsWith;

namespace fs = std::filesystem;

namespace {

/// Matches an exception whose what() contains `part`.
class MessageContains : public Catch::MatcherBase<std::exception> {
 public:
  explicit MessageContains(std::string part) : part_(std::move(part)) {}
  bool match(const std::exception& e) const override { return std::string(e.what()).find(part_) != std::string::npos; }
  std::string describe() const override { return "has a message containing \"" + part_ + "\""; }

 private:
  std::string part_;
};

const Registry& registry() {
  static const Registry* r = [] {
    auto* reg = new Registry();
    reg->load_directory(Registry::builtin_plugin_dir());
    return reg;
  }();
  return *r;
}

Options defaults(const std::string& name, const std::string& section) {
  const auto& plugin = registry().get(PluginKind::Dataset, name, "test");
  Options o(section);
  for (const auto& spec : plugin.descriptor.options.specs()) o.set(spec.name, spec.default_value, "default");
  return o;
}

/// The text dataset with only the sources a test names.
Options text_options(std::vector<std::string> files, std::vector<std::string> languages) {
  auto o = defaults("text", "data.text");
  o.set("files", std::move(files), "test");
  o.set("languages", std::move(languages), "test");
  o.set("fortunes", false, "test");
  o.set("asterisk_transcripts", false, "test");
  return o;
}

std::vector<Utterance> load(const Options& o, std::uint64_t seed = 0) {
  auto dataset = registry().create_as<Dataset>(PluginKind::Dataset, "text", o, BuildContext{});
  REQUIRE(dataset->kind() == BatchKind::Text);
  BuildContext ctx;
  ctx.seed = seed;
  return dataset->load(ctx);
}

/// A scratch folder, removed at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("workbench_text_" + std::to_string(std::rand()) + "_" +
                                        std::to_string(reinterpret_cast<std::uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string write(const std::string& name, const std::string& content) const {
    std::ofstream(path / name, std::ios::binary) << content;
    return (path / name).string();
  }
};

bool valid_utf8(const std::string& s) {
  // utf8_decode turns invalid bytes into U+FFFD, so valid text round-trips byte for byte.
  return utf8_encode(utf8_decode(s)) == s;
}

std::size_t chars(const std::string& s) { return utf8_decode(s).size(); }

const char* kFortuneFile =
    "Hello World, this is line ONE\n"
    "%\n"
    "\n"
    "   \t \n"
    "short\n"
    "  Second   fortune line here  \n"
    "%\n"
    "bad bytes \xff\xfe in this line\n"
    "whole ____\b\b\b\bBODY of text\r\n"
    "%";

}  // namespace

TEST_CASE("text dataset: lines of a lang:path file, separators and blank lines skipped", "[text_dataset]") {
  TempDir dir;
  const auto path = dir.write("en.txt", kFortuneFile);
  auto utterances = load(text_options({"en:" + path}, {"en"}));
  REQUIRE(utterances.size() == 3);
  CHECK(utterances[0].id == "files/en/" + path + ":1");
  CHECK(utterances[0].text == "hello world, this is line one");  // lower-cased, as the asterisk transcripts
  CHECK(utterances[1].id == "files/en/" + path + ":6");
  CHECK(utterances[1].text == "second fortune line here");  // white space collapsed
  // The invalid line (8) is dropped, "short" is under min_chars; the backspaces are rendered away.
  CHECK(utterances[2].id == "files/en/" + path + ":9");
  CHECK(utterances[2].text == "whole body of text");
  for (const auto& u : utterances) {
    CHECK(u.lang == "en");
    CHECK(u.path.empty());
    CHECK(u.samples.empty());
    CHECK(valid_utf8(u.text));
  }

  auto o = text_options({"en:" + path}, {"en"});
  o.set("min_chars", std::int64_t{0}, "test");
  o.set("strip_punctuation", true, "test");
  auto all = load(o);
  REQUIRE(all.size() == 4);
  CHECK(all[0].text == "hello world this is line one");
  CHECK(all[1].text == "short");
}

TEST_CASE("text dataset: .gz input", "[text_dataset]") {
  TempDir dir;
  const auto plain = dir.write("de.txt", kFortuneFile);
  REQUIRE(std::system(("gzip -k -f '" + plain + "'").c_str()) == 0);
  auto from_gz = load(text_options({"de:" + plain + ".gz"}, {"de"}));
  auto from_plain = load(text_options({"de:" + plain}, {"de"}));
  REQUIRE(from_gz.size() == 3);
  for (std::size_t i = 0; i < from_gz.size(); ++i) CHECK(from_gz[i].text == from_plain[i].text);
  CHECK_THAT(from_gz[0].id, StartsWith("files/de/" + plain + ".gz:"));
}

TEST_CASE("text dataset: max_chars cuts long lines at a character boundary", "[text_dataset]") {
  TempDir dir;
  // 2-byte (é, ж) and 3-byte (€) characters: a byte cut would split one.
  const auto path = dir.write("mixed.txt", "ééééééééééééééééééééé\nжжж жжж жжж жжж\n€€€€€€€€€€\nabcdefg\n");
  auto o = text_options({"fr:" + path}, {"fr"});
  o.set("max_chars", std::int64_t{7}, "test");
  o.set("min_chars", std::int64_t{1}, "test");
  auto utterances = load(o);
  REQUIRE(utterances.size() == 4);
  CHECK(utterances[0].text == "ééééééé");
  CHECK(utterances[1].text == "жжж жжж");
  CHECK(utterances[2].text == "€€€€€€€");
  CHECK(utterances[3].text == "abcdefg");
  for (const auto& u : utterances) {
    CHECK(valid_utf8(u.text));
    CHECK(chars(u.text) <= 7);
  }
  // A cut that ends in a space drops it rather than leaving it trailing.
  o.set("max_chars", std::int64_t{4}, "test");
  CHECK(load(o)[1].text == "жжж");
}

TEST_CASE("text dataset: only the listed languages", "[text_dataset]") {
  TempDir dir;
  const auto en = dir.write("en.txt", "an english sentence here\n");
  const auto ru = dir.write("ru.txt", "Русское предложение здесь\nещё одно предложение\n");
  auto utterances = load(text_options({"en:" + en, "ru:" + ru}, {"ru"}));
  REQUIRE(utterances.size() == 2);
  for (const auto& u : utterances) CHECK(u.lang == "ru");
  CHECK(utterances[0].text == "русское предложение здесь");
  CHECK(load(text_options({"en:" + en, "ru:" + ru}, {"en", "ru"})).size() == 3);
}

TEST_CASE("text dataset: bad options and missing files", "[text_dataset]") {
  CHECK_THROWS_MATCHES(registry().create(PluginKind::Dataset, "text", text_options({"no-colon.txt"}, {"en"}),
                                         BuildContext{}),
                       ConfigError, MessageContains("lang:path"));
  CHECK_THROWS_MATCHES(load(text_options({"en:/no/such/file.txt"}, {"en"})), DataError,
                       MessageContains("/no/such/file.txt"));
  TempDir empty;
  auto o = text_options({}, {"es"});
  o.set("fortunes", true, "test");
  o.set("fortunes_dir", empty.path.string(), "test");
  CHECK_THROWS_MATCHES(load(o), DataError, MessageContains("apt-get install fortunes-es"));
  o.set("languages", std::vector<std::string>{"en"}, "test");
  CHECK_THROWS_MATCHES(load(o), DataError, MessageContains("apt-get install fortunes"));
  auto a = text_options({}, {"it"});
  a.set("asterisk_transcripts", true, "test");
  a.set("transcripts_dir", empty.path.string(), "test");
  CHECK_THROWS_MATCHES(load(a), DataError, MessageContains("apt-get install asterisk-core-sounds-it"));
}

TEST_CASE("text dataset: max_per_language is a seeded subset", "[text_dataset]") {
  TempDir dir;
  std::string content;
  for (int i = 0; i < 200; ++i) content += "sentence number " + std::to_string(i) + "\n";
  const auto path = dir.write("en.txt", content);
  auto o = text_options({"en:" + path}, {"en"});
  o.set("max_per_language", std::int64_t{20}, "test");
  auto a = load(o, 1), b = load(o, 1), c = load(o, 2);
  REQUIRE(a.size() == 20);
  REQUIRE(c.size() == 20);
  std::vector<std::string> ia, ib, ic;
  for (auto& u : a) ia.push_back(u.id);
  for (auto& u : b) ib.push_back(u.id);
  for (auto& u : c) ic.push_back(u.id);
  CHECK(ia == ib);
  CHECK(ia != ic);
  CHECK(std::is_sorted(a.begin(), a.end(), [](const Utterance& x, const Utterance& y) {
    return std::stoi(x.text.substr(16)) < std::stoi(y.text.substr(16));
  }));
  // A larger limit keeps the smaller subset (nested subsets, not a fresh draw).
  o.set("max_per_language", std::int64_t{50}, "test");
  std::set<std::string> bigger;
  for (auto& u : load(o, 1)) bigger.insert(u.id);
  for (auto& id : ia) CHECK(bigger.count(id) == 1);
}

TEST_CASE("text dataset: Debian's fortunes in en/es/it/ru/de", "[text_dataset]") {
  if (!fs::is_directory("/usr/share/games/fortunes/it")) {
    WARN("fortunes packages not installed; skipped");
    return;
  }
  auto o = text_options({}, {"en", "es", "it", "ru", "de"});
  o.set("fortunes", true, "test");
  auto utterances = load(o, 3);
  std::map<std::string, std::size_t> per_language;
  std::set<std::string> ids;
  for (const auto& u : utterances) {
    ++per_language[u.lang];
    CHECK_THAT(u.id, StartsWith("fortunes/" + u.lang + "/"));
    CHECK(ids.insert(u.id).second);  // unique
    CHECK(valid_utf8(u.text));
    CHECK(chars(u.text) >= 8);
    CHECK(chars(u.text) <= 512);
    CHECK(u.text == to_lower(u.text));
    CHECK(u.text.find_first_of("\b\t\r\n") == std::string::npos);
  }
  for (const char* lang : {"en", "es", "it", "ru", "de"}) CHECK(per_language[lang] > 500);
  // fortunes-it links its files into the top folder: they are Italian, not English.
  CHECK(std::none_of(utterances.begin(), utterances.end(),
                     [](const Utterance& u) { return u.id.rfind("fortunes/en/adams:", 0) == 0; }));
  CHECK(std::any_of(utterances.begin(), utterances.end(),
                    [](const Utterance& u) { return u.id.rfind("fortunes/it/adams:", 0) == 0; }));
  CHECK(std::any_of(utterances.begin(), utterances.end(),
                    [](const Utterance& u) { return u.id.rfind("fortunes/en/fortunes:", 0) == 0; }));
  // No index files, and each database once (not also through its ".u8" name).
  CHECK(std::none_of(utterances.begin(), utterances.end(), [](const Utterance& u) {
    return u.id.find(".dat:") != std::string::npos || u.id.find(".u8:") != std::string::npos;
  }));
}

TEST_CASE("text dataset: Asterisk transcripts come from the train split only", "[text_dataset]") {
  const std::vector<std::string> languages = {"en", "es", "fr", "it", "ru"};
  for (const auto& lang : languages)
    if (!fs::exists("/usr/share/doc/asterisk-core-sounds-" + lang + "/core-sounds-" + lang + ".txt.gz") ||
        !fs::is_directory("/usr/share/asterisk/sounds/" + lang)) {
      WARN("asterisk-core-sounds-" << lang << " not installed; skipped");
      return;
    }
  auto o = text_options({}, languages);
  o.set("asterisk_transcripts", true, "test");
  o.set("min_chars", std::int64_t{0}, "test");
  o.set("deduplicate", false, "test");
  std::map<std::string, std::string> text_of;
  for (const auto& u : load(o)) {
    CHECK_THAT(u.id, StartsWith("asterisk/" + u.lang + "/"));
    text_of[u.id.substr(std::string("asterisk/").size())] = u.text;  // the asterisk plugin's id
  }
  REQUIRE(text_of.size() > 500);

  auto asterisk = [&](const std::string& split, const std::vector<std::string>& langs) {
    auto a = defaults("asterisk", "data.asterisk");
    a.set("split", split, "test");
    a.set("languages", langs, "test");
    BuildContext ctx;
    ctx.sample_rate = 8000;  // the recordings' own rate: no resampling
    return registry().create_as<Dataset>(PluginKind::Dataset, "asterisk", a, ctx)->load(ctx);
  };
  std::size_t held_out = 0;
  for (const char* split : {"dev", "test"})
    for (const auto& u : asterisk(split, languages)) {
      ++held_out;
      CHECK(text_of.count(u.id) == 0);
    }
  CHECK(held_out > 100);
  // The train prompts with audio are there, normalised exactly as the asterisk dataset does.
  std::size_t shared = 0;
  for (const auto& u : asterisk("train", {"it"})) {
    auto it = text_of.find(u.id);
    REQUIRE(it != text_of.end());
    CHECK(it->second == u.text);
    ++shared;
  }
  CHECK(shared > 50);
}

TEST_CASE("no dev or test transcript reaches training, under any prompt id", "[text_dataset][leaks]") {
  const std::vector<std::string> languages = {"en", "es", "fr", "it", "ru"};
  for (const auto& lang : languages)
    if (!fs::exists("/usr/share/doc/asterisk-core-sounds-" + lang + "/core-sounds-" + lang + ".txt.gz") ||
        !fs::is_directory("/usr/share/asterisk/sounds/" + lang)) {
      WARN("asterisk-core-sounds-" << lang << " not installed; skipped");
      return;
    }
  // Compared as the papers' scorers would: lower case, no punctuation, white space collapsed.
  auto key = [](std::string t) {
    std::string out;
    for (char c : t) {
      if (std::ispunct(static_cast<unsigned char>(c)) && c != '\'' && c != '-') c = ' ';
      if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
      out += c;
    }
    while (!out.empty() && out.back() == ' ') out.pop_back();
    return out;
  };
  auto asterisk = [&](const std::string& split, bool strip) {
    auto a = defaults("asterisk", "data.asterisk");
    a.set("split", split, "test");
    a.set("languages", languages, "test");
    a.set("strip_punctuation", strip, "test");
    BuildContext ctx;
    ctx.load_audio = false;  // transcripts only
    return registry().create_as<Dataset>(PluginKind::Dataset, "asterisk", a, ctx)->load(ctx);
  };
  std::set<std::pair<std::string, std::string>> held_out;  // (lang, text)
  for (const char* split : {"dev", "test"})
    for (const auto& u : asterisk(split, true)) held_out.insert({u.lang, key(u.text)});
  REQUIRE(held_out.size() > 300);
  // Paired training data, with punctuation kept or not.
  for (bool strip : {false, true}) {
    const auto train = asterisk("train", strip);
    CHECK(train.size() > 1500);
    for (const auto& u : train) {
      INFO(u.id << ": " << u.text);
      CHECK(held_out.count({u.lang, key(u.text)}) == 0);
    }
  }
  // Unpaired text: transcripts, fortunes and files alike.
  TempDir dir;
  std::string lines = "activated.\nsome other line of text\n";
  // A held-out English transcript smuggled into a user's file must be dropped too.
  std::string smuggled;
  for (const auto& [lang, text] : held_out)
    if (lang == "en") {
      smuggled = text;
      break;
    }
  REQUIRE_FALSE(smuggled.empty());
  const auto path = dir.write("en.txt", lines + smuggled + "\n");
  auto o = text_options({"en:" + path}, languages);
  o.set("asterisk_transcripts", true, "test");
  o.set("min_chars", std::int64_t{0}, "test");
  const auto text = load(o);
  CHECK(text.size() > 1000);
  bool other_line = false;
  for (const auto& u : text) {
    INFO(u.id << ": " << u.text);
    CHECK(held_out.count({u.lang, key(u.text)}) == 0);
    other_line = other_line || u.text == "some other line of text";
  }
  CHECK(other_line);  // the rest of the file is still there
}

TEST_CASE("asterisk dataset: prompt_fraction keeps the same nested subset of training prompts in every language",
          "[text_dataset][asterisk]") {
  for (const char* lang : {"es", "fr"})
    if (!fs::is_directory(std::string("/usr/share/asterisk/sounds/") + lang)) {
      WARN("asterisk-core-sounds-" << lang << " not installed; skipped");
      return;
    }
  auto ids = [&](const std::string& split, double fraction, const std::string& lang) {
    auto a = defaults("asterisk", "data.asterisk");
    a.set("split", split, "test");
    a.set("languages", std::vector<std::string>{lang}, "test");
    a.set("prompt_fraction", fraction, "test");
    BuildContext ctx;
    ctx.sample_rate = 8000;
    ctx.load_audio = false;  // the prompts are chosen from the transcripts alone
    std::set<std::string> out;
    for (const auto& u : registry().create_as<Dataset>(PluginKind::Dataset, "asterisk", a, ctx)->load(ctx))
      out.insert(u.id.substr(u.id.find('/') + 1));  // "es/vm-intro" -> "vm-intro"
    return out;
  };
  const auto all_es = ids("train", 1.0, "es");
  const auto quarter_es = ids("train", 0.25, "es");
  const auto tenth_es = ids("train", 0.1, "es");
  const auto quarter_fr = ids("train", 0.25, "fr");
  REQUIRE(all_es.size() > 300);
  // About the fraction asked for, of the ids a hash spreads evenly.
  CHECK(quarter_es.size() > 0.18 * all_es.size());
  CHECK(quarter_es.size() < 0.32 * all_es.size());
  CHECK(tenth_es.size() > 0.05 * all_es.size());
  CHECK(tenth_es.size() < 0.15 * all_es.size());
  // Nested: every prompt of a smaller subset is in the larger one, and all are training prompts.
  CHECK(std::includes(all_es.begin(), all_es.end(), quarter_es.begin(), quarter_es.end()));
  CHECK(std::includes(quarter_es.begin(), quarter_es.end(), tenth_es.begin(), tenth_es.end()));
  // The id decides, not the language: a French prompt id in the quarter is in the Spanish quarter
  // whenever Spanish has that prompt in training at all.
  std::size_t shared = 0;
  for (const auto& id : quarter_fr)
    if (all_es.count(id)) {
      CHECK(quarter_es.count(id) == 1);
      ++shared;
    }
  CHECK(shared > 50);
  CHECK(ids("train", 0.25, "es") == quarter_es);  // deterministic
  // Dev and test are never subset: every run is scored on the same sentences.
  auto a = defaults("asterisk", "data.asterisk");
  a.set("split", std::string("dev"), "test");
  a.set("prompt_fraction", 0.5, "test");
  BuildContext ctx;
  CHECK_THROWS_MATCHES(registry().create_as<Dataset>(PluginKind::Dataset, "asterisk", a, ctx), std::exception,
                       MessageContains("subsets the training prompts only"));
  a.set("split", std::string("train"), "test");
  a.set("prompt_fraction", 0.0, "test");
  CHECK_THROWS_MATCHES(registry().create_as<Dataset>(PluginKind::Dataset, "asterisk", a, ctx), std::exception,
                       MessageContains("must be above 0"));
}
