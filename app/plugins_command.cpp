#include <fmt/format.h>

#include "commands.h"
#include "workbench/error.h"
#include "workbench/registry.h"

namespace workbench::app {

int plugins_command(const std::string& describe, const std::vector<std::string>& extra_dirs) {
  Registry registry;
  for (const auto& d : Registry::default_search_paths()) registry.load_directory(d);
  for (const auto& d : extra_dirs) registry.load_directory(d);
  if (!describe.empty()) {
    bool found = false;
    for (const auto* p : registry.plugins()) {
      if (p->descriptor.name != describe) continue;
      found = true;
      const auto& d = p->descriptor;
      fmt::print("{} plugin '{}' {}\n  {}\n  path:   {}\n  sha256: {}\n  options:\n", to_string(d.kind), d.name,
                 d.version, d.description, p->path, p->sha256());
      for (const auto& o : d.options.specs()) {
        std::string extra;
        if (!o.choices.empty()) {
          for (const auto& c : o.choices) extra += (extra.empty() ? " (one of: " : ", ") + c;
          extra += ")";
        }
        fmt::print("    {:<22} {:<16} default {:<12} {}{}\n", o.name, to_string(o.type), to_toml(o.default_value),
                   o.doc, extra);
      }
    }
    if (!found) throw ConfigError(fmt::format("no plugin named '{}' (see `workbench plugins`)", describe));
    return 0;
  }
  fmt::print("{:<14} {:<22} {:<8} {:<60} {}\n", "KIND", "NAME", "VERSION", "PATH", "DESCRIPTION");
  for (const auto* p : registry.plugins()) {
    const auto& d = p->descriptor;
    fmt::print("{:<14} {:<22} {:<8} {:<60} {}\n", to_string(d.kind), d.name, d.version, p->path, d.description);
  }
  return 0;
}

}  // namespace workbench::app
