#pragma once
// The manifest plugin's TSV parser, kept apart from the plugin (and from LibTorch) so that the fuzzer
// (fuzz/fuzz_manifest.cpp) runs exactly the code `workbench run` does.
#include <string>
#include <vector>

namespace workbench::manifest {

/// One row of a manifest, as written (paths not yet resolved, text normalised).
struct ManifestRow {
  std::string id;      ///< the id column, or "<manifest>:<line>" when there is none
  std::string path;    ///< the path column, made absolute against the manifest's folder
  std::string text;    ///< white space normalised, lower-cased when asked
  std::string lang;
  std::string target;  ///< the target column (a translation), normalised as text is; empty when absent
};

struct ManifestParseOptions {
  bool lowercase = true;
  bool allow_empty_text = false;
};

/// Parses a TSV manifest: a header line naming at least the columns path, text and lang (id and target
/// optional, others ignored), then one row per utterance; blank lines and a trailing '\r' are skipped.
/// `name` is the manifest's path: it appears in every message, and relative audio paths resolve against
/// its folder. Throws DataError "<name>:<line>: ..." for a header without a needed column or naming a
/// column twice, a row with a different number of cells, a text or target cell that is not UTF-8, an
/// empty transcript (unless allow_empty_text), and an empty manifest.
std::vector<ManifestRow> parse_manifest(const std::string& tsv, const std::string& name,
                                        const ManifestParseOptions& options = {});

}  // namespace workbench::manifest
