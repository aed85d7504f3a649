#pragma once
// Experiment files: TOML in, a fully resolved and validated configuration out.
//
// Layout of an experiment file (every section but [experiment] may be omitted where it has defaults):
//   [experiment]              name, seed, description
//   [plugins]                 paths = ["dir", ...]   extra plugin directories, relative to the file
//   [frontend]                log-mel filterbank options (core)
//   [trainer]                 optimiser, schedule, threads, device, logging (core)
//   [init]                    starting weights: from_run / checkpoint, components, vocabulary (core)
//   [data.<name>]             plugin = "<dataset>", batching keys (core) + the plugin's options
//   [model]                   modality_embedding = true|false (core)
//   [model.speech_encoder]    plugin = "<encoder>" + the plugin's options (filterbank -> contrastive vectors)
//   [model.text_embedding]    plugin = "<text_embedding plugin>" + options (optional; needs a shared encoder)
//   [model.shared_encoder]    plugin = "<encoder>" + options (optional; speech, text or speech ++ text)
//   [objectives.<name>]       plugin = "<loss>", weight, data + the plugin's options
//   [evaluators.<name>]       plugin = "<evaluator>", data, every + the plugin's options
//   [[stages]]                name, steps, objectives = [...]   (optional, in order; SLAM's two stages)
// Unknown keys, wrong types and unknown plugins are ConfigErrors that give file:line:column and list
// what is allowed (lessons from fairseq/Hydra users: a misspelled key must never be silently ignored).
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "workbench/frontend_options.h"
#include "workbench/init_options.h"
#include "workbench/options.h"
#include "workbench/plugin.h"
#include "workbench/trainer_options.h"

namespace workbench {

/// One plugin-backed component of the experiment.
struct ComponentConfig {
  std::string section;  ///< "objectives.ctc"
  std::string name;     ///< "ctc" (the part after the dot; "speech_encoder" for the model)
  PluginKind kind = PluginKind::Loss;
  std::string plugin;   ///< plugin name
  Options core;         ///< the core's keys of this section (weight, data, every, batch_seconds...)
  Options options;      ///< the plugin's own options, validated against its schema
};

/// One training stage: its steps and the objectives it trains (SLAM section 4: SpanBERT + w2v-BERT first,
/// then TLM + STM added).
struct StageConfig {
  std::string name;
  std::int64_t steps = 0;
  std::vector<std::string> objectives;  ///< names of [objectives.<name>] tables
};

struct ExperimentConfig {
  std::string path;  ///< the experiment file as given
  std::string name;
  std::string description;
  std::int64_t seed = 1;
  std::vector<std::string> plugin_paths;  ///< absolute
  FrontendOptions frontend;
  TrainerOptions trainer;
  InitOptions init;
  std::vector<ComponentConfig> data;
  ComponentConfig speech_encoder;
  ComponentConfig text_embedding;  ///< plugin empty when the experiment has none
  ComponentConfig shared_encoder;  ///< plugin empty when the experiment has none
  bool modality_embedding = true;
  std::vector<ComponentConfig> objectives;
  std::vector<ComponentConfig> evaluators;
  /// Empty: one stage of trainer.steps with every objective.
  std::vector<StageConfig> stages;

  /// The whole resolved configuration (defaults filled in) as TOML; parses back to the same config.
  std::string resolved_toml;
  /// Every resolved value by dotted key ("trainer.lr"), for the run store's params table.
  std::vector<std::pair<std::string, OptionValue>> flat;

  const ComponentConfig* find_data(const std::string& name) const;
};

/// Finds a plugin's schema by kind and name; throws ConfigError (with `where`) for an unknown plugin.
using SchemaLookup =
    std::function<const OptionSchema&(PluginKind kind, const std::string& name, const std::string& where)>;

/// A parsed, not yet validated experiment file with its `--set` overrides applied.
class ExperimentFile {
 public:
  /// Parses `path`. Overrides are "dotted.key=value"; the value is read as TOML and, when that fails, as
  /// a bare string. Throws ConfigError with file:line:column for syntax errors, and naming the override
  /// for a bad one.
  static ExperimentFile parse(const std::string& path, const std::vector<std::string>& overrides = {});
  /// Same, from text (for tests); `path` is used in messages and to resolve relative plugin paths.
  static ExperimentFile parse_text(const std::string& text, const std::string& path,
                                   const std::vector<std::string>& overrides = {});

  /// [plugins].paths, made absolute relative to the file's directory. Needed before resolve(),
  /// because the schemas come from plugins that may live there.
  std::vector<std::string> plugin_paths() const;

  /// Validates every section and key, fills in defaults, and renders the resolved configuration.
  ExperimentConfig resolve(const SchemaLookup& lookup) const;

  ~ExperimentFile();
  ExperimentFile(ExperimentFile&&) noexcept;
  ExperimentFile& operator=(ExperimentFile&&) noexcept;

 private:
  struct Impl;
  explicit ExperimentFile(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace workbench
