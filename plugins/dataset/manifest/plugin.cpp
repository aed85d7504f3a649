// The "manifest" dataset: a TSV file with a header naming at least the columns path, text and lang
// (extra columns are allowed; `id` is used when present, and `target` is a speech translation's target
// text). Audio may be in any format libsndfile reads (WAV, FLAC, Ogg/Vorbis, Ogg/Opus...) at any sample
// rate; relative paths are relative to the manifest.
#include <fmt/format.h>

#include "workbench/dataset.h"
#include "workbench/error.h"
#include "workbench/io.h"
#include "workbench/plugin.h"

#include "manifest_rows.h"

namespace workbench::manifest {
namespace {

class ManifestDataset final : public Dataset {
 public:
  explicit ManifestDataset(const Options& o) : options_(o) {
    path_ = o.get_string("path");
    if (path_.empty()) o.fail("path", "the manifest dataset needs path = \"<file.tsv>\"");
    lowercase_ = o.get_bool("lowercase");
    allow_empty_text_ = o.get_bool("allow_empty_text");
  }

  BatchKind kind() const override { return BatchKind::Paired; }

  std::vector<Utterance> load(const BuildContext& ctx) override {
    ManifestParseOptions parse;
    parse.lowercase = lowercase_;
    parse.allow_empty_text = allow_empty_text_;
    std::vector<Utterance> out;
    for (ManifestRow& row : parse_manifest(read_text_file(path_), path_, parse)) {
      Utterance u;
      u.id = std::move(row.id);
      u.path = std::move(row.path);
      u.text = std::move(row.text);
      u.lang = std::move(row.lang);
      u.target = std::move(row.target);  // a speech translation manifest's translation
      out.push_back(std::move(u));
    }
    load_utterance_audio(out, ctx, fmt::format("(listed in {})", path_));
    return out;
  }

 private:
  Options options_;
  std::string path_;
  bool lowercase_ = true;
  bool allow_empty_text_ = false;
};

PluginDescriptor describe() {
  return describe_plugin<ManifestDataset>(PluginKind::Dataset, "manifest", "1.4.0",  // 1.1: the target column; 1.2: on_bad_audio; 1.3: UTF-8 and empty transcripts refused; 1.4: a header naming a column twice refused
      "TSV manifest (columns path, text, lang; optional id and target, the translation; extra allowed) of audio in any format libsndfile reads",
      OptionSchema()
          .add_string("path", "", "the .tsv manifest (relative to the working directory)")
          .add_bool("lowercase", true, "lower-case the transcripts")
          .add_bool("allow_empty_text", false,
                    "keep rows whose transcript is empty (speech-only rows; paired training leaves them out)"));
}

}  // namespace
}  // namespace workbench::manifest

WORKBENCH_PLUGIN(workbench::manifest::describe)
