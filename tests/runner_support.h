#pragma once
// What the runner tests share: the built-in plugins as a ComponentFactory (counting what each creates)
// and a RunRecorder that keeps everything in memory.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "workbench/registry.h"
#include "workbench/runner.h"

namespace workbench::testing {

class BuiltinPlugins final : public ComponentFactory {
 public:
  BuiltinPlugins() { registry_.load_directory(Registry::builtin_plugin_dir()); }
  const OptionSchema& schema(PluginKind kind, const std::string& name, const std::string& where) override {
    return registry_.get(kind, name, where).descriptor.options;
  }
  std::shared_ptr<Component> create(PluginKind kind, const std::string& name, const Options& options,
                                    const BuildContext& context) override {
    ++created[name];
    return registry_.create(kind, name, options, context);
  }
  std::map<std::string, int> created;

 private:
  Registry registry_;
};

class MemoryRecorder final : public RunRecorder {
 public:
  void record(std::int64_t step, const Metrics& metrics) override {
    for (const auto& [k, v] : metrics) values[k][step] = v;
  }
  void record_params(const std::vector<std::pair<std::string, OptionValue>>& p) override {
    for (const auto& [k, v] : p) params[k] = v;
  }
  void record_checkpoint(const CheckpointInfo& c) override { checkpoints.push_back(c); }
  void remove_checkpoint(const std::string& path) override { removed.push_back(path); }
  std::map<std::string, std::map<std::int64_t, double>> values;
  std::map<std::string, OptionValue> params;
  std::vector<CheckpointInfo> checkpoints;
  std::vector<std::string> removed;
};

}  // namespace workbench::testing
