#pragma once
// Plugin discovery and loading (Boost.DLL).
//
// Search order: the built-in plugin directory (<prefix>/lib/workbench/plugins, found relative to the
// running executable), then each directory of WORKBENCH_PLUGIN_PATH (colon-separated), then directories
// named in the experiment file. Every `*.so` in a searched directory must be a workbench plugin.
//
// Each library is checked before use: the magic number, the plugin API version, the LibTorch version and
// the C++11 ABI flag it was built with (PluginAbi). A mismatch is refused with both sides named. A second
// plugin with the same (kind, name) is an error naming both files. Libraries are never unloaded: every
// object a plugin creates also holds its library, and the registry keeps them for the process's life
// (static destructors after dlclose are a classic crash).
#include <memory>
#include <string>
#include <vector>

#include "workbench/component.h"
#include "workbench/options.h"
#include "workbench/plugin.h"

namespace boost::dll {
class shared_library;
}

namespace workbench {

struct LoadedPlugin {
  std::shared_ptr<boost::dll::shared_library> library;  // declared first: destroyed last
  PluginDescriptor descriptor;
  std::string path;  ///< absolute path of the .so
  PluginAbi abi{};
  /// Hex sha256 of the .so file, computed on first use.
  const std::string& sha256() const;

 private:
  mutable std::string sha256_;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  /// The built-in directory plus WORKBENCH_PLUGIN_PATH, in search order (directories that do not exist
  /// are left out).
  static std::vector<std::string> default_search_paths();
  /// The built-in plugin directory for the running executable.
  static std::string builtin_plugin_dir();

  /// Loads every *.so in `dir` (sorted by name). Throws PluginError for a directory that cannot be read.
  void load_directory(const std::string& dir);
  /// Loads and checks one library. Throws PluginError naming `path` for: a library dlopen refuses
  /// (dlerror's message, e.g. a missing dependency), a library without the plugin symbols, a magic,
  /// API-version, LibTorch-version or ABI mismatch, a descriptor function that throws, or a duplicate
  /// (kind, name).
  const LoadedPlugin& load_file(const std::string& path);

  const LoadedPlugin* find(PluginKind kind, const std::string& name) const;
  /// Like find, but throws ConfigError "<where>: unknown <kind> plugin 'x'. Available: a, b".
  const LoadedPlugin& get(PluginKind kind, const std::string& name, const std::string& where) const;
  std::vector<const LoadedPlugin*> plugins() const;

  /// Builds a component. The returned pointer keeps the plugin's library alive. A ConfigError from the
  /// plugin passes through; other exceptions become PluginError naming the plugin and its path.
  std::shared_ptr<Component> create(PluginKind kind, const std::string& name, const Options& options,
                                    const BuildContext& context) const;

  /// create() and cast to the kind's interface (Encoder, Loss, Dataset, Evaluator).
  template <typename T>
  std::shared_ptr<T> create_as(PluginKind kind, const std::string& name, const Options& options,
                               const BuildContext& context) const {
    auto made = create(kind, name, options, context);
    auto cast = std::dynamic_pointer_cast<T>(made);
    if (!cast) throw_wrong_interface(kind, name);
    return cast;
  }

 private:
  [[noreturn]] void throw_wrong_interface(PluginKind kind, const std::string& name) const;
  std::vector<std::unique_ptr<LoadedPlugin>> plugins_;
};

}  // namespace workbench
