#include "run_adapters.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include "workbench/runtime.h"
#include "workbench/sha256.h"

namespace workbench::app {

const OptionSchema& RegistryFactory::schema(PluginKind kind, const std::string& name, const std::string& where) {
  return registry_.get(kind, name, where).descriptor.options;
}

std::shared_ptr<Component> RegistryFactory::create(PluginKind kind, const std::string& name, const Options& options,
                                                   const BuildContext& context) {
  return registry_.create(kind, name, options, context);
}

void StoreRecorder::record(std::int64_t step, const Metrics& metrics) { store_.log_metrics(run_, step, metrics); }

void StoreRecorder::record_examples(std::int64_t step, const std::vector<EvalExample>& examples) {
  std::vector<results::ExampleRecord> rows;
  for (const auto& e : examples) rows.push_back({e.task, e.id, e.reference, e.hypothesis});
  store_.add_examples(run_, step, rows);
}

void StoreRecorder::record_params(const std::vector<std::pair<std::string, OptionValue>>& params) {
  if (!params.empty()) store_.add_params(run_, to_params(params));
}

void StoreRecorder::record_checkpoint(const CheckpointInfo& c) {
  results::CheckpointRecord r;
  r.step = c.step;
  r.path = c.path;
  r.sha256 = c.sha256;
  r.kind = c.kind;
  r.metric_key = c.metric_key;
  r.metric_value = c.metric_value;
  store_.add_checkpoint(run_, r);
}

void StoreRecorder::remove_checkpoint(const std::string& path) { store_.remove_checkpoint(run_, path); }

results::Param to_param(const std::string& key, const OptionValue& v) {
  results::Param p;
  p.key = key;
  if (const auto* s = std::get_if<std::string>(&v))
    p.text = *s;
  else
    p.text = to_toml(v);
  if (const auto* b = std::get_if<bool>(&v)) p.number = *b ? 1.0 : 0.0;
  if (const auto* i = std::get_if<std::int64_t>(&v)) p.number = static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&v)) p.number = *d;
  return p;
}

std::vector<results::Param> to_params(const std::vector<std::pair<std::string, OptionValue>>& values) {
  std::vector<results::Param> out;
  out.reserve(values.size());
  for (const auto& [k, v] : values) out.push_back(to_param(k, v));
  return out;
}

std::string process_start_time(long pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return "";
  // Field 2, the command, is in parentheses and may hold spaces: count from after its closing one.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return "";
  std::istringstream rest(line.substr(close + 1));
  std::string field;
  for (int n = 3; n <= 22 && rest >> field; ++n)
    if (n == 22) return field;
  return "";
}

bool run_process_gone(const results::RunListing& run) {
  if (run.status != "running" || !run.pid || run.process_start.empty() || run.host != host_name()) return false;
  return process_start_time(static_cast<long>(*run.pid)) != run.process_start;
}

results::RunInfo base_run_info(const std::string& experiment_path) {
  results::RunInfo info;
  info.experiment_path = experiment_path;
  info.host = host_name();
  info.pid = static_cast<std::int64_t>(::getpid());
  info.process_start = process_start_time(::getpid());
  info.git_revision = workbench_git_revision();
  info.torch_version = torch_header_version();
  return info;
}

void describe_config(results::RunInfo& info, const ExperimentConfig& cfg) {
  info.experiment_name = cfg.name;
  info.config_toml = cfg.resolved_toml;
  info.config_hash = sha256_text(cfg.resolved_toml);
  info.seed = cfg.seed;
}

void record_plugins(results::RunStore& store, std::int64_t run, const Registry& registry, const Runner& runner) {
  for (const auto& [kind, name] : runner.plugins_used()) {
    const auto& p = registry.get(kind, name, "record");
    store.add_plugin(run, {to_string(kind), p.descriptor.name, p.descriptor.version, p.path, p.sha256()});
  }
}

}  // namespace workbench::app
