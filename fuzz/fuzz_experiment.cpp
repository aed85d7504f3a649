// libFuzzer target: the experiment loader, as `workbench run EXP.toml --set KEY=VALUE...` runs it.
//
// Input: TOML text, optionally followed by a line "--set" and then one override per line. Every input
// must end in a resolved configuration or a workbench::Error (ConfigError names file:line, or the
// override); anything else (another exception, a crash, a sanitizer report) is a bug. A resolved
// configuration must also parse back to itself: its resolved TOML, read again, resolves to the same text.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "workbench/error.h"
#include "workbench/experiment.h"
#include "workbench/options.h"

namespace {

using workbench::OptionSchema;
using workbench::PluginKind;

// Stands in for the registry (which needs the plugins, and so LibTorch): one schema of every option type
// for each plugin name but "missing", which is unknown, as a misspelled plugin is.
const OptionSchema& lookup(PluginKind, const std::string& name, const std::string& where) {
  static const OptionSchema schema = OptionSchema()
                                         .add_bool("flag", false, "a bool")
                                         .add_int("size", 4, "an int", 1, 4096)
                                         .add_float("rate", 0.5, "a float", 0.0, 1.0)
                                         .add_string("path", "", "a string")
                                         .add_choice("norm", "batch", {"batch", "layer"}, "a choice")
                                         .add_strings("languages", {"en"}, "a list")
                                         .add_float_table("weights", {}, "a table", 0.0, 10.0);
  if (name == "missing") throw workbench::ConfigError(where + ": unknown plugin 'missing'");
  return schema;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::string text = input;
  std::vector<std::string> overrides;
  if (auto sep = input.find("\n--set\n"); sep != std::string::npos) {
    text = input.substr(0, sep);
    std::size_t start = sep + 7;
    while (start <= input.size()) {
      auto end = input.find('\n', start);
      if (end == std::string::npos) end = input.size();
      if (end > start) overrides.push_back(input.substr(start, end - start));
      start = end + 1;
    }
  }
  std::string resolved;
  try {
    auto file = workbench::ExperimentFile::parse_text(text, "/fuzz/experiment.toml", overrides);
    (void)file.plugin_paths();
    resolved = file.resolve(lookup).resolved_toml;
  } catch (const workbench::Error&) {
    return 0;
  }
  auto again = workbench::ExperimentFile::parse_text(resolved, "/fuzz/resolved.toml").resolve(lookup);
  if (again.resolved_toml != resolved) std::abort();
  return 0;
}
