#pragma once
// The runner's two outside interfaces, implemented by the executable: plugins from the registry, facts
// into the run store. Only the app knows both sides.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "workbench/registry.h"
#include "workbench/run_store.h"
#include "workbench/runner.h"

namespace workbench::app {

class RegistryFactory final : public ComponentFactory {
 public:
  explicit RegistryFactory(const Registry& registry) : registry_(registry) {}
  const OptionSchema& schema(PluginKind kind, const std::string& name, const std::string& where) override;
  std::shared_ptr<Component> create(PluginKind kind, const std::string& name, const Options& options,
                                    const BuildContext& context) override;

 private:
  const Registry& registry_;
};

class StoreRecorder final : public RunRecorder {
 public:
  StoreRecorder(results::RunStore& store, std::int64_t run) : store_(store), run_(run) {}
  void record(std::int64_t step, const Metrics& metrics) override;
  void record_examples(std::int64_t step, const std::vector<EvalExample>& examples) override;
  void record_params(const std::vector<std::pair<std::string, OptionValue>>& params) override;
  void record_checkpoint(const CheckpointInfo& checkpoint) override;
  void remove_checkpoint(const std::string& path) override;

 private:
  results::RunStore& store_;
  std::int64_t run_;
};

/// `s` as an SQL string literal: in single quotes, each quote doubled ("it's" -> 'it''s').
inline std::string sql_literal(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("''") : std::string(1, c);
  return out + "'";
}

/// A typed param: strings unquoted (WHERE value_text = 'conformer'), numbers and booleans with value_num.
results::Param to_param(const std::string& key, const OptionValue& value);
std::vector<results::Param> to_params(const std::vector<std::pair<std::string, OptionValue>>& values);

/// The start time of process `pid` (/proc/<pid>/stat field 22, clock ticks after boot); "" when there is
/// no such process.
std::string process_start_time(long pid);
/// Whether a run marked running was started by a process on this host that no longer exists (its pid is
/// gone, or belongs to a process started at another time): it crashed. False when that cannot be told
/// (another host, a run recorded before the store kept pids).
bool run_process_gone(const results::RunListing& run);

/// What is known of a run before its config: the path, host, the build's git revision, LibTorch, and
/// this process (pid and start time).
results::RunInfo base_run_info(const std::string& experiment_path);
/// Adds the resolved config's name, TOML, hash and seed.
void describe_config(results::RunInfo& info, const ExperimentConfig& config);
/// Records each plugin the configuration names, with its version, path and sha256.
void record_plugins(results::RunStore& store, std::int64_t run, const Registry& registry, const Runner& runner);

}  // namespace workbench::app
