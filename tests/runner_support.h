#pragma once
// What the runner tests share: the built-in plugins as a ComponentFactory (counting what each creates)
// and a RunRecorder that keeps everything in memory.
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "workbench/registry.h"
#include "workbench/runner.h"

namespace workbench::testing {

/// Whether Debian's Asterisk prompts are installed (scripts/install-deps.sh); tests that need them skip
/// with a warning otherwise.
inline bool have_asterisk() { return std::filesystem::exists("/usr/share/asterisk/sounds/en"); }

/// The [model.speech_encoder] (32 wide) and [model.shared_encoder] (24) of a joint model small enough to
/// train in seconds.
inline const std::string kTinyEncoders = R"(
[model.speech_encoder]
plugin = "conformer"
d_model = 32
ffn_dim = 64
heads = 2
layers = 1
kernel_size = 7
subsampling_channels = 8

[model.shared_encoder]
plugin = "conformer"
frontend = "projection"
d_model = 24
ffn_dim = 48
heads = 2
layers = 1
kernel_size = 7
)";

/// A joint model small enough for a dry run in a second: speech encoder 32 wide, shared encoder 24.
inline const std::string kJoint = R"(
[experiment]
name = "runner-joint"

[data.train]
plugin = "asterisk"
languages = ["en"]
max_per_language = 6
batch_seconds = 30.0

[data.dev]
plugin = "asterisk"
split = "dev"
languages = ["en"]
max_per_language = 3
)" + kTinyEncoders + R"(
[model.text_embedding]
plugin = "char_embedding"

[objectives.w2v_bert]
plugin = "w2v_bert"
codebooks = 2
codebook_entries = 8
distractors = 4

[objectives.tlm]
plugin = "tlm"

[objectives.ctc]
plugin = "ctc"

[evaluators.asr]
plugin = "asr"

[trainer]
steps = 2
warmup_steps = 1
log_every = 1
threads = 2
progress = "none"
)";

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
  void record_examples(std::int64_t step, const std::vector<EvalExample>& e) override {
    for (const auto& x : e) examples[step].push_back(x);
  }
  void record_checkpoint(const CheckpointInfo& c) override { checkpoints.push_back(c); }
  void remove_checkpoint(const std::string& path) override { removed.push_back(path); }
  std::map<std::string, std::map<std::int64_t, double>> values;
  std::map<std::string, OptionValue> params;
  std::vector<CheckpointInfo> checkpoints;
  std::vector<std::string> removed;
  std::map<std::int64_t, std::vector<EvalExample>> examples;
};

}  // namespace workbench::testing
