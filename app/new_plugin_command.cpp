// `workbench new-plugin KIND NAME [--dir D]`: writes a small out-of-tree plugin project that builds
// against the installed SDK (find_package(workbench) + workbench_add_plugin) and an experiment that
// runs it. Each kind starts from a real component (plugin_templates.cpp).
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands.h"
#include "plugin_templates.h"
#include "workbench/error.h"
#include "workbench/registry.h"

namespace workbench::app {

namespace fs = std::filesystem;

namespace {

const char* kCMake = R"(cmake_minimum_required(VERSION 3.22)
project(@NAME@ LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)

# Point CMAKE_PREFIX_PATH at the workbench install prefix (and Torch_DIR at the same LibTorch the
# workbench was built with, if it is not Debian's).
find_package(workbench REQUIRED)
workbench_add_plugin(@NAME@ SOURCES @NAME@.cpp)
)";

std::string fill(std::string text, const std::string& name, const std::string& kind = "") {
  text = std::regex_replace(text, std::regex("@KIND@"), kind);
  return std::regex_replace(text, std::regex("@NAME@"), name);
}

void write(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) throw Error(fmt::format("cannot write '{}'", path.string()));
  out << text;
}

}  // namespace

int new_plugin_command(const std::string& kind, const std::string& name, const std::string& dir_in) {
  const auto& kinds = template_kinds();
  if (std::find(kinds.begin(), kinds.end(), kind) == kinds.end())
    throw ConfigError(fmt::format("new-plugin: no template for '{}' (kinds: {})", kind, fmt::join(kinds, ", ")));
  if (!std::regex_match(name, std::regex("[A-Za-z_][A-Za-z0-9_]*")))
    throw ConfigError(fmt::format("new-plugin: '{}' is not a valid name (letters, digits and '_'; not starting "
                                  "with a digit)", name));
  fs::path dir = dir_in.empty() ? fs::path(name) : fs::path(dir_in);
  if (fs::exists(dir / "CMakeLists.txt"))
    throw Error(fmt::format("new-plugin: '{}' already holds a CMakeLists.txt; not overwriting it", dir.string()));
  fs::create_directories(dir);
  write(dir / "CMakeLists.txt", fill(kCMake, name));
  const PluginTemplate t = plugin_template(kind);
  write(dir / (name + ".cpp"), fill(t.source, name, kind));
  write(dir / "experiment.toml", fill(t.experiment, name, kind));
  fmt::print("wrote {}/{{CMakeLists.txt, {}.cpp, experiment.toml}}\n", dir.string(), name);
  // The prefix this workbench runs from: <prefix>/lib/workbench/plugins holds its built-in plugins. In a
  // build tree that is the build folder, whose CMake package is not installed: say so.
  const fs::path prefix = fs::path(Registry::builtin_plugin_dir()).parent_path().parent_path().parent_path();
  const bool installed = fs::exists(prefix / "lib" / "cmake" / "workbench" / "workbenchConfig.cmake");
  const std::string where = installed ? fs::absolute(prefix).lexically_normal().string() : "<workbench prefix>";
  fmt::print("build:  cmake -S {0} -B {0}/build -DCMAKE_PREFIX_PATH={1} && cmake --build {0}/build\n", dir.string(),
             where);
  if (!installed)
    fmt::print("        (this workbench runs from a build tree; install it first: cmake --install <build> --prefix P)\n");
  fmt::print("run:    cd {} && {} run experiment.toml\n", dir.string(),
             installed ? (fs::absolute(prefix) / "bin" / "workbench").lexically_normal().string() : "workbench");
  return 0;
}

}  // namespace workbench::app
