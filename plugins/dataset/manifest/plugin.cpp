// The "manifest" dataset: a TSV file with a header naming at least the columns path, text and lang
// (extra columns are allowed; `id` is used when present, and `target` is a speech translation's target
// text). Audio may be in any format libsndfile reads (WAV, FLAC, Ogg/Vorbis, Ogg/Opus...) at any sample
// rate; relative paths are relative to the manifest.
#include <filesystem>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "workbench/dataset.h"
#include "workbench/error.h"
#include "workbench/io.h"
#include "workbench/plugin.h"
#include "workbench/text.h"

namespace workbench::manifest {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> split_tabs(const std::string& line) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    auto tab = line.find('\t', start);
    out.push_back(line.substr(start, tab == std::string::npos ? std::string::npos : tab - start));
    if (tab == std::string::npos) break;
    start = tab + 1;
  }
  return out;
}

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
    std::istringstream in(read_text_file(path_));
    std::string line;
    std::int64_t line_no = 0;
    std::map<std::string, std::size_t> column;
    std::vector<Utterance> out;
    const fs::path base = fs::absolute(path_).parent_path();
    while (std::getline(in, line)) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      auto cells = split_tabs(line);
      if (column.empty()) {
        for (std::size_t i = 0; i < cells.size(); ++i) column[cells[i]] = i;
        for (const char* need : {"path", "text", "lang"})
          if (!column.count(need))
            throw DataError(fmt::format("{}:{}: the header has no '{}' column (need path, text, lang; got: {})", path_,
                                        line_no, need, line));
        continue;
      }
      if (cells.size() != column.size())
        throw DataError(fmt::format("{}:{}: expected {} tab-separated columns, found {}", path_, line_no, column.size(),
                                    cells.size()));
      // A transcript that is not UTF-8 would become U+FFFD characters in the vocabulary and the scores.
      for (const char* text_column : {"text", "target"}) {
        if (!column.count(text_column)) continue;
        const std::string& cell = cells[column[text_column]];
        if (auto bad = invalid_utf8_at(cell); bad != std::string::npos)
          throw DataError(fmt::format("{}:{}: the {} column is not valid UTF-8 (byte 0x{:02x} at byte {} of the cell); "
                                      "convert the manifest to UTF-8 (iconv)",
                                      path_, line_no, text_column, static_cast<unsigned char>(cell[bad]), bad + 1));
      }
      if (!allow_empty_text_ && normalize_space(cells[column["text"]]).empty())
        throw DataError(fmt::format("{}:{}: the transcript is empty{}; leave the row out, or set allow_empty_text = "
                                    "true for rows with speech only",
                                    path_, line_no, cells[column["text"]].empty() ? "" : " (only white space)"));
      Utterance u;
      fs::path audio = cells[column["path"]];
      u.path = (audio.is_absolute() ? audio : base / audio).lexically_normal().string();
      u.text = normalize_space(lowercase_ ? to_lower(cells[column["text"]]) : cells[column["text"]]);
      u.lang = cells[column["lang"]];
      // A speech translation manifest's target, normalised as the transcript is.
      if (column.count("target"))
        u.target = normalize_space(lowercase_ ? to_lower(cells[column["target"]]) : cells[column["target"]]);
      u.id = column.count("id") ? cells[column["id"]] : fmt::format("{}:{}", path_, line_no);
      out.push_back(std::move(u));
    }
    if (column.empty()) throw DataError(fmt::format("{}: the manifest is empty (no header line)", path_));
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
  return describe_plugin<ManifestDataset>(PluginKind::Dataset, "manifest", "1.3.0",  // 1.1: the target column; 1.2: on_bad_audio; 1.3: UTF-8 and empty transcripts refused
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
