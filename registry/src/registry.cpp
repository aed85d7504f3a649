#include "workbench/registry.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>

#include <dlfcn.h>

#include <boost/dll/shared_library.hpp>
#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/sha256.h"

namespace workbench {

namespace fs = std::filesystem;

namespace {

// Every library ever loaded, kept for the life of the process.
std::vector<std::shared_ptr<boost::dll::shared_library>>& keep_alive() {
  static auto* libs = new std::vector<std::shared_ptr<boost::dll::shared_library>>();
  return *libs;
}

std::string major_minor_patch(const char* text, std::size_t max) {
  return std::string(text, strnlen(text, max));
}

}  // namespace

const std::string& LoadedPlugin::sha256() const {
  if (sha256_.empty()) sha256_ = sha256_file(path);
  return sha256_;
}

std::string Registry::builtin_plugin_dir() {
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return {};
  return (exe.parent_path().parent_path() / "lib" / "workbench" / "plugins").lexically_normal().string();
}

std::vector<std::string> Registry::default_search_paths() {
  std::vector<std::string> dirs;
  auto add = [&](const std::string& d) {
    std::error_code ec;
    if (d.empty() || !fs::is_directory(d, ec)) return;
    std::string canon = fs::canonical(d, ec).string();
    if (std::find(dirs.begin(), dirs.end(), canon) == dirs.end()) dirs.push_back(canon);
  };
  add(builtin_plugin_dir());
  if (const char* env = std::getenv("WORKBENCH_PLUGIN_PATH")) {
    std::string s(env);
    std::size_t start = 0;
    while (start <= s.size()) {
      std::size_t colon = s.find(':', start);
      if (colon == std::string::npos) colon = s.size();
      add(s.substr(start, colon - start));
      start = colon + 1;
    }
  }
  return dirs;
}

void Registry::load_directory(const std::string& dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw PluginError(fmt::format("plugin directory '{}' does not exist or is not a directory", dir));
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec))
    if (entry.path().extension() == ".so") files.push_back(entry.path());
  if (ec) throw PluginError(fmt::format("cannot read plugin directory '{}': {}", dir, ec.message()));
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::string canon = fs::canonical(f, ec).string();
    bool already = std::any_of(plugins_.begin(), plugins_.end(), [&](const auto& p) { return p->path == canon; });
    if (!already) load_file(canon);
  }
}

const LoadedPlugin& Registry::load_file(const std::string& path_in) {
  std::error_code ec;
  fs::path p = fs::absolute(path_in, ec);
  std::string path = p.lexically_normal().string();
  if (!fs::is_regular_file(p, ec)) throw PluginError(fmt::format("plugin '{}' does not exist", path));

  auto lib = std::make_shared<boost::dll::shared_library>();
  boost::dll::fs::error_code load_ec;
  // RTLD_NOW: a missing symbol fails here, with dlopen's message, and not in the middle of a run.
  lib->load(path, boost::dll::load_mode::rtld_now | boost::dll::load_mode::rtld_local, load_ec);
  if (load_ec) {
    // Boost.DLL clears dlerror(); ask dlopen once more for its own words (e.g. the missing dependency).
    std::string why = load_ec.message();
    if (void* h = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
      dlclose(h);
    } else if (const char* e = dlerror()) {
      why = e;
    }
    throw PluginError(fmt::format("cannot load plugin '{}': {}", path, why));
  }
  if (!lib->has("workbench_plugin_abi"))
    throw PluginError(fmt::format("'{}' is not a workbench plugin: it does not export workbench_plugin_abi "
                                  "(build it with workbench_add_plugin() and WORKBENCH_PLUGIN(...))",
                                  path));
  const PluginAbi abi = lib->get<const PluginAbi>("workbench_plugin_abi");
  if (abi.magic != kPluginMagic)
    throw PluginError(fmt::format("'{}' exports workbench_plugin_abi but with the wrong magic number ({:#x}, "
                                  "expected {:#x})",
                                  path, abi.magic, kPluginMagic));
  if (abi.api_version != kPluginApiVersion)
    throw PluginError(fmt::format("plugin '{}' was built for workbench plugin API version {}, but this workbench "
                                  "uses plugin API version {}; rebuild the plugin against this workbench",
                                  path, abi.api_version, kPluginApiVersion));
  const std::string torch_plugin = major_minor_patch(abi.torch_version, sizeof abi.torch_version);
  if (torch_plugin != torch_header_version())
    throw PluginError(fmt::format("plugin '{}' was built against LibTorch {}, but this workbench runs LibTorch {}; "
                                  "rebuild the plugin with the same LibTorch (-DTorch_DIR=...)",
                                  path, torch_plugin, torch_header_version()));
  if (abi.cxx11_abi != _GLIBCXX_USE_CXX11_ABI)
    throw PluginError(fmt::format("plugin '{}' was built with _GLIBCXX_USE_CXX11_ABI={}, but this workbench uses "
                                  "_GLIBCXX_USE_CXX11_ABI={}",
                                  path, abi.cxx11_abi, _GLIBCXX_USE_CXX11_ABI));
  if (!lib->has("workbench_describe_plugin"))
    throw PluginError(fmt::format("'{}' has workbench_plugin_abi but no workbench_describe_plugin entry point", path));

  auto plugin = std::make_unique<LoadedPlugin>();
  plugin->library = lib;
  plugin->path = path;
  plugin->abi = abi;
  try {
    auto& describe = lib->get_alias<PluginDescriptor()>("workbench_describe_plugin");
    plugin->descriptor = describe();
  } catch (const std::exception& e) {
    throw PluginError(fmt::format("plugin '{}': its descriptor function threw: {}", path, e.what()));
  }
  const auto& d = plugin->descriptor;
  if (d.name.empty()) throw PluginError(fmt::format("plugin '{}' has an empty name", path));
  if (!d.create) throw PluginError(fmt::format("plugin '{}' ({}) has no factory", path, d.name));
  if (const LoadedPlugin* other = find(d.kind, d.name))
    throw PluginError(fmt::format("duplicate {} plugin '{}': '{}' and '{}' both define it", to_string(d.kind),
                                  d.name, other->path, path));
  keep_alive().push_back(lib);
  plugins_.push_back(std::move(plugin));
  return *plugins_.back();
}

const LoadedPlugin* Registry::find(PluginKind kind, const std::string& name) const {
  for (const auto& p : plugins_)
    if (p->descriptor.kind == kind && p->descriptor.name == name) return p.get();
  return nullptr;
}

const LoadedPlugin& Registry::get(PluginKind kind, const std::string& name, const std::string& where) const {
  if (const auto* p = find(kind, name)) return *p;
  std::string available;
  for (const auto& p : plugins_)
    if (p->descriptor.kind == kind) available += (available.empty() ? "" : ", ") + p->descriptor.name;
  throw ConfigError(fmt::format("{}: unknown {} plugin '{}'. Available: {}", where, to_string(kind), name,
                                available.empty() ? "none (is WORKBENCH_PLUGIN_PATH right?)" : available));
}

std::vector<const LoadedPlugin*> Registry::plugins() const {
  std::vector<const LoadedPlugin*> out;
  for (const auto& p : plugins_) out.push_back(p.get());
  return out;
}

std::shared_ptr<Component> Registry::create(PluginKind kind, const std::string& name, const Options& options,
                                            const BuildContext& context) const {
  const LoadedPlugin& plugin = get(kind, name, options.section().empty() ? "create" : "[" + options.section() + "]");
  std::shared_ptr<Component> made;
  try {
    made = plugin.descriptor.create(options, context);
  } catch (const ConfigError&) {
    throw;
  } catch (const DataError&) {
    throw;
  } catch (const std::exception& e) {
    throw PluginError(fmt::format("{} plugin '{}' ({}) failed to create [{}]: {}", to_string(kind), name, plugin.path,
                                  options.section(), e.what()));
  }
  if (!made)
    throw PluginError(fmt::format("{} plugin '{}' ({}) returned no object", to_string(kind), name, plugin.path));
  // The aliasing pointer owns both: the object goes first, then (never, in practice) the library.
  auto holder = std::make_shared<std::pair<std::shared_ptr<boost::dll::shared_library>, std::shared_ptr<Component>>>(
      plugin.library, made);
  return std::shared_ptr<Component>(holder, made.get());
}

void Registry::throw_wrong_interface(PluginKind kind, const std::string& name) const {
  const auto* p = find(kind, name);
  throw PluginError(fmt::format("{} plugin '{}' ({}) made an object that does not implement the {} interface",
                                to_string(kind), name, p ? p->path : "?", to_string(kind)));
}

}  // namespace workbench
