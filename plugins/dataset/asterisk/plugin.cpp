// The "asterisk" dataset: the human-recorded Asterisk PBX prompts from Debian's
// asterisk-core-sounds-XX (transcripts) and asterisk-core-sounds-XX-wav (8 kHz audio) packages.
// The same prompt id carries the same message in every language, so the split is made on the id
// (MD5 of the id mod 10: 0 = test, 1 = dev, 2-9 = train) and an id never crosses splits. The
// transcript parsing, normalisation and split live in prompts.cpp, shared with the "text" dataset.
// With `translate_to`, it is X -> that language speech translation data: each utterance's target is the
// other language's transcript of the same prompt id (mSLAM section 5's CoVoST-style X -> En).
#include <algorithm>
#include <filesystem>

#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include <fmt/format.h>

#include "workbench/dataset.h"
#include "workbench/error.h"
#include "workbench/io.h"
#include "workbench/plugin.h"

#include "prompts.h"

namespace workbench::asterisk {
namespace {

namespace fs = std::filesystem;

class AsteriskDataset final : public Dataset {
 public:
  explicit AsteriskDataset(const Options& o)
      : languages_(o.get_strings("languages")),
        split_(o.get_string("split")),
        sounds_dir_(o.get_string("sounds_dir")),
        doc_dir_(o.get_string("transcripts_dir")),
        strip_punctuation_(o.get_bool("strip_punctuation")),
        max_per_language_(o.get_int("max_per_language")),
        prompt_fraction_(o.get_float("prompt_fraction")),
        translate_to_(o.get_string("translate_to")) {
    if (languages_.empty()) o.fail("languages", "needs at least one language");
    if (prompt_fraction_ <= 0.0) o.fail("prompt_fraction", "must be above 0 (1 keeps every prompt)");
    // A subset of dev or test would score runs on different sentences than every other run.
    if (prompt_fraction_ < 1.0 && split_ != "train")
      o.fail("prompt_fraction", fmt::format("subsets the training prompts only; split is '{}'", split_));
    if (!translate_to_.empty() &&
        std::all_of(languages_.begin(), languages_.end(), [&](const auto& l) { return l == translate_to_; }))
      o.fail("translate_to", "is the only language listed: translation needs another source language");
  }

  BatchKind kind() const override { return BatchKind::Paired; }

  std::vector<Utterance> load(const BuildContext& ctx) override {
    std::vector<Utterance> all;
    const auto targets = translate_to_.empty() ? TargetTexts{} : target_texts();
    for (const auto& lang : languages_) {
      if (!translate_to_.empty() && lang == translate_to_) continue;  // X -> X is not translation
      auto part = load_language(lang, translate_to_.empty() ? nullptr : &targets);
      all.insert(all.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
    }
    if (ctx.load_audio) load_utterance_audio(all, ctx);  // use = "text" needs the transcripts only
    return all;
  }

 private:
  struct TargetTexts {
    std::unordered_map<std::string, std::string> by_id;  // prompt id -> normalised target text
    std::unordered_set<std::string> held_out;           // leak keys of the dev and test targets
  };

  fs::path transcripts_of(const std::string& lang) const {
    const fs::path transcripts = transcripts_path(doc_dir_, lang);
    std::error_code ec;
    if (!fs::exists(transcripts, ec))
      throw DataError(fmt::format("Asterisk transcripts for '{}' are missing ({} not found). Install them with: "
                                  "sudo apt-get install {}",
                                  lang, transcripts.string(), transcripts_package(lang)));
    return transcripts;
  }

  // The target language's transcripts (no audio needed). A training utterance whose target is a dev or
  // test prompt's text is left out, as on the source side.
  TargetTexts target_texts() const {
    TargetTexts t;
    const auto prompts = parse_transcripts(read_text_file(transcripts_of(translate_to_).string()));
    if (split_ == "train") t.held_out = held_out_keys(prompts);
    for (const auto& p : prompts) {
      std::string text = normalize_prompt(p.text, strip_punctuation_);
      if (!text.empty()) t.by_id.emplace(p.id, std::move(text));
    }
    return t;
  }

  std::vector<Utterance> load_language(const std::string& lang, const TargetTexts* targets) const {
    const std::string package = transcripts_package(lang);
    const fs::path transcripts = transcripts_path(doc_dir_, lang);
    const fs::path audio_dir = fs::path(sounds_dir_) / lang;
    std::error_code ec;
    if (!fs::exists(transcripts, ec) || !fs::is_directory(audio_dir, ec))
      throw DataError(fmt::format(
          "Asterisk prompts for '{}' are missing ({} or {} not found). Install them with: "
          "sudo apt-get install {} {}-wav",
          lang, transcripts.string(), audio_dir.string(), package, package));
    std::vector<Utterance> out;
    const auto prompts = parse_transcripts(read_text_file(transcripts.string()));
    // Training never sees a dev or test text, even under another prompt id.
    const auto held_out = split_ == "train" ? held_out_keys(prompts) : std::unordered_set<std::string>{};
    std::int64_t left_out = 0;
    for (const auto& p : prompts) {
      std::string text = normalize_prompt(p.text, strip_punctuation_);
      if (text.empty()) continue;
      const fs::path wav = audio_dir / (p.id + ".wav");
      if (!fs::exists(wav, ec)) continue;  // a transcript without audio
      if (!in_split(p.id, split_)) continue;
      if (!in_prompt_subset(p.id, prompt_fraction_)) continue;
      if (held_out.count(leak_key(text))) {
        ++left_out;
        continue;
      }
      std::string target;
      if (targets) {
        auto it = targets->by_id.find(p.id);
        if (it == targets->by_id.end()) continue;  // no counterpart in the target language
        if (targets->held_out.count(leak_key(it->second))) {
          ++left_out;
          continue;
        }
        target = it->second;
      }
      Utterance u;
      u.id = lang + "/" + p.id;
      u.lang = lang;
      u.text = std::move(text);
      u.path = wav.string();
      u.target = std::move(target);
      out.push_back(std::move(u));
      if (max_per_language_ > 0 && static_cast<std::int64_t>(out.size()) >= max_per_language_) break;
    }
    if (out.empty())
      throw DataError(fmt::format("no Asterisk prompts for '{}' in split '{}' under {}", lang, split_, audio_dir.string()));
    if (left_out > 0)
      std::fprintf(stderr, "  asterisk %s: left out %lld train prompts whose transcript (or target) is a dev or test prompt's\n",
                   lang.c_str(), static_cast<long long>(left_out));
    return out;
  }

  std::vector<std::string> languages_;
  std::string split_, sounds_dir_, doc_dir_;
  bool strip_punctuation_;
  std::int64_t max_per_language_;
  double prompt_fraction_;
  std::string translate_to_;
};

PluginDescriptor describe() {
  return describe_plugin<AsteriskDataset>(PluginKind::Dataset, "asterisk", "1.3.0",  // 1.1: translate_to; 1.2: on_bad_audio; 1.3: prompt_fraction
      "Asterisk PBX prompts (human speech, 8 kHz) with transcripts in en, es, fr, it, ru (Debian packages)",
      OptionSchema()
          .add_strings("languages", {"en", "es", "fr", "it", "ru"}, "languages to load (asterisk-core-sounds-XX)")
          .add_choice("split", "train", {"train", "dev", "test", "all"},
                      "by MD5 of the prompt id mod 10: 0 = test, 1 = dev, 2-9 = train")
          .add_string("sounds_dir", "/usr/share/asterisk/sounds", "root of the <lang>/ audio folders")
          .add_string("transcripts_dir", "/usr/share/doc", "root of the asterisk-core-sounds-<lang>/ transcript folders")
          .add_bool("strip_punctuation", false, "replace punctuation by spaces (the text is always lower-cased)")
          .add_int("max_per_language", 0, "keep at most this many prompts per language (0 = all); for quick tests", 0)
          .add_float("prompt_fraction", 1.0,
                     "keep this fraction of the training prompt ids, chosen by a hash of the id, so the same "
                     "prompts in every language and a smaller fraction's prompts within a larger one's: "
                     "low-resource fine-tuning subsets (1 = all)",
                     0.0, 1.0)
          .add_string("translate_to", "",
                      "speech translation: each utterance's target is this language's transcript of the same "
                      "prompt id (prompts without one are left out, and so is this language's own speech); "
                      "\"\" = no targets"));
}

}  // namespace
}  // namespace workbench::asterisk

WORKBENCH_PLUGIN(workbench::asterisk::describe)
