#pragma once
// The Asterisk prompt transcripts, their normalisation and the train/dev/test split, shared by the
// "asterisk" dataset (speech with transcripts) and the "text" dataset (the train-split transcripts as
// unpaired text). Both plugins compile prompts.cpp, so the two can never disagree on which prompt
// belongs to which split. The functions are hidden: each plugin library keeps its own copy.
#include <filesystem>
#include <string>
#include <unordered_set>
#include <vector>

#define WORKBENCH_ASTERISK_LOCAL __attribute__((visibility("hidden")))

namespace workbench::asterisk {

struct Prompt {
  std::string id;    ///< the prompt id, e.g. "vm-intro" or "digits/5" (the audio file without ".wav")
  std::string text;  ///< normalised transcript (see normalize_prompt)
};

/// "asterisk-core-sounds-<lang>": the Debian package with the transcripts (audio: the same name + "-wav").
WORKBENCH_ASTERISK_LOCAL std::string transcripts_package(const std::string& lang);

/// <doc_dir>/asterisk-core-sounds-<lang>/core-sounds-<lang>.txt.gz
WORKBENCH_ASTERISK_LOCAL std::filesystem::path transcripts_path(const std::string& doc_dir, const std::string& lang);

/// Parses "id: text" lines; ';' starts a comment line. Returns the raw prompts in file order (white
/// space collapsed, not yet normalised).
WORKBENCH_ASTERISK_LOCAL std::vector<Prompt> parse_transcripts(const std::string& content);

/// The transcript as both plugins use it: lower-cased, punctuation replaced by spaces when
/// `strip_punctuation`. Returns "" for a prompt to leave out: one with stage notes ("[...]", "(...)"),
/// which describe the recording rather than say what is spoken, or one with nothing left.
WORKBENCH_ASTERISK_LOCAL std::string normalize_prompt(const std::string& raw, bool strip_punctuation);

/// Replaces ASCII punctuation except ' and - (and a few typographic marks) with spaces.
WORKBENCH_ASTERISK_LOCAL std::string strip_punctuation(const std::string& text);

/// Whether prompt `id` is in `split` ("train", "dev", "test" or "all"): MD5 of the id mod 10,
/// 0 = test, 1 = dev, 2-9 = train. The id (not the language) decides, so that the same message in
/// another language never crosses splits.
WORKBENCH_ASTERISK_LOCAL bool in_split(const std::string& id, const std::string& split);

/// Whether prompt `id` is among the first `fraction` (0, 1] of the ids ordered by a second hash, MD5 of
/// "subset:" + id mod 1000, independent of the split's. The id decides, so a subset has the same prompts in
/// every language, and a smaller fraction's prompts are all in a larger one's. 1 keeps every id.
WORKBENCH_ASTERISK_LOCAL bool in_prompt_subset(const std::string& id, double fraction);

/// What two sentences are compared by when looking for a held-out text in training data: lower-cased,
/// punctuation removed, white space collapsed.
WORKBENCH_ASTERISK_LOCAL std::string leak_key(const std::string& text);

/// The leak keys of the dev and test prompts among `prompts` (raw, as parse_transcripts gives them). Some
/// prompts with other ids say the same words (9 of 243 dev and 8 of 213 test prompts have a train twin):
/// a training sentence with one of these keys would put a held-out text into training.
WORKBENCH_ASTERISK_LOCAL std::unordered_set<std::string> held_out_keys(const std::vector<Prompt>& prompts);

}  // namespace workbench::asterisk
