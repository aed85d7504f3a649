#include "manifest_rows.h"

#include <filesystem>
#include <map>
#include <sstream>

#include <fmt/format.h>

#include "workbench/error.h"
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

}  // namespace

std::vector<ManifestRow> parse_manifest(const std::string& tsv, const std::string& name,
                                        const ManifestParseOptions& options) {
  std::istringstream in(tsv);
  std::string line;
  std::int64_t line_no = 0;
  std::map<std::string, std::size_t> column;
  std::vector<ManifestRow> out;
  const fs::path base = fs::absolute(name).parent_path();
  auto normalised = [&](const std::string& cell) {
    return normalize_space(options.lowercase ? to_lower(cell) : cell);
  };
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    auto cells = split_tabs(line);
    if (column.empty()) {
      for (std::size_t i = 0; i < cells.size(); ++i)
        if (!column.emplace(cells[i], i).second)
          throw DataError(fmt::format("{}:{}: the header names the column '{}' twice", name, line_no, cells[i]));
      for (const char* need : {"path", "text", "lang"})
        if (!column.count(need))
          throw DataError(fmt::format("{}:{}: the header has no '{}' column (need path, text, lang; got: {})", name,
                                      line_no, need, line));
      continue;
    }
    if (cells.size() != column.size())
      throw DataError(fmt::format("{}:{}: expected {} tab-separated columns, found {}", name, line_no, column.size(),
                                  cells.size()));
    // A transcript that is not UTF-8 would become U+FFFD characters in the vocabulary and the scores.
    for (const char* text_column : {"text", "target"}) {
      if (!column.count(text_column)) continue;
      const std::string& cell = cells[column[text_column]];
      if (auto bad = invalid_utf8_at(cell); bad != std::string::npos)
        throw DataError(fmt::format("{}:{}: the {} column is not valid UTF-8 (byte 0x{:02x} at byte {} of the cell); "
                                    "convert the manifest to UTF-8 (iconv)",
                                    name, line_no, text_column, static_cast<unsigned char>(cell[bad]), bad + 1));
    }
    if (!options.allow_empty_text && normalize_space(cells[column["text"]]).empty())
      throw DataError(fmt::format("{}:{}: the transcript is empty{}; leave the row out, or set allow_empty_text = "
                                  "true for rows with speech only",
                                  name, line_no, cells[column["text"]].empty() ? "" : " (only white space)"));
    ManifestRow row;
    fs::path audio = cells[column["path"]];
    row.path = (audio.is_absolute() ? audio : base / audio).lexically_normal().string();
    row.text = normalised(cells[column["text"]]);
    row.lang = cells[column["lang"]];
    if (column.count("target")) row.target = normalised(cells[column["target"]]);
    row.id = column.count("id") ? cells[column["id"]] : fmt::format("{}:{}", name, line_no);
    out.push_back(std::move(row));
  }
  if (column.empty()) throw DataError(fmt::format("{}: the manifest is empty (no header line)", name));
  return out;
}

}  // namespace workbench::manifest
