// libFuzzer target: the manifest dataset's TSV parser (plugins/dataset/manifest/manifest_rows.cpp).
//
// Every input must end in rows or a DataError naming the manifest; anything else is a bug. Each row that
// comes back has UTF-8 text and target, an absolute path, and (unless empty text is allowed) a non-empty
// transcript.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "manifest_rows.h"
#include "workbench/error.h"
#include "workbench/text.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the options, so both settings are explored.
  workbench::manifest::ManifestParseOptions options;
  options.lowercase = data[0] & 1;
  options.allow_empty_text = data[0] & 2;
  const std::string tsv(reinterpret_cast<const char*>(data) + 1, size - 1);
  try {
    for (const auto& row : workbench::manifest::parse_manifest(tsv, "/fuzz/manifest.tsv", options)) {
      if (workbench::invalid_utf8_at(row.text) != std::string::npos) std::abort();
      if (workbench::invalid_utf8_at(row.target) != std::string::npos) std::abort();
      if (row.path.empty() || row.path.front() != '/') std::abort();
      if (!options.allow_empty_text && row.text.empty()) std::abort();
    }
  } catch (const workbench::DataError& e) {
    if (std::string(e.what()).rfind("/fuzz/manifest.tsv", 0) != 0) std::abort();
  }
  return 0;
}
