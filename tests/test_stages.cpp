// Training in stages (SLAM section 4: w2v-BERT + SpanBERT first, then TLM + STM added): the [[stages]]
// configuration, model-size presets ([experiment] preset), the Trainer running each objective only in its
// stages, checkpoints saved and loaded into a fresh trainer, and `workbench run --dry-run` counting the
// papers' model sizes (SLAM 600M, mSLAM 600M and 2B).
#include <sys/wait.h>
#include <torch/nn/module.h>
#include <torch/types.h>
#include <torch/utils.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "joint_fixture.h"
#include "trainer_fixture.h"
#include "test_support.h"
#include "workbench/audio.h"
#include "workbench/error.h"
#include "workbench/experiment.h"
#include "workbench/loss.h"
#include "workbench/registry.h"
#include "workbench/run_store.h"
#include "workbench/trainer.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using results::RunStore;

namespace {

// --- helpers -----------------------------------------------------------------------------------------

SchemaLookup lookup() {
  return [](PluginKind kind, const std::string& name, const std::string& where) -> const OptionSchema& {
    return builtin_registry().get(kind, name, where).descriptor.options;
  };
}

ExperimentConfig resolve_text(const std::string& text, const std::string& path = "exp.toml",
                              const std::vector<std::string>& overrides = {}) {
  return ExperimentFile::parse_text(text, path, overrides).resolve(lookup());
}

ExperimentConfig resolve_file(const std::string& path, const std::vector<std::string>& overrides = {}) {
  return ExperimentFile::parse(path, overrides).resolve(lookup());
}

/// The message of the ConfigError that `f` throws.
template <typename F>
std::string config_error(F&& f) {
  return error_message<ConfigError>(std::forward<F>(f));
}

// Two CTC objectives on one dataset: enough to configure stages (resolve() does not load data).
const std::string kStagedBase = R"([experiment]
name = "staged"

[data.train]
plugin = "asterisk"

[model.speech_encoder]
plugin = "conformer"
d_model = 32
heads = 2

[objectives.first]
plugin = "ctc"

[objectives.second]
plugin = "ctc"
weight = 0.5
)";

const std::string kTwoStages = R"(
[[stages]]
name = "unpaired"
steps = 12
objectives = ["first"]

[[stages]]
steps = 18
objectives = ["first", "second"]
)";

StageConfig stage(const std::string& name, std::int64_t steps, std::vector<std::string> objectives) {
  StageConfig s;
  s.name = name;
  s.steps = steps;
  s.objectives = std::move(objectives);
  return s;
}

std::map<std::string, torch::Tensor> named_state(torch::nn::Module& m, const std::string& prefix) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[prefix + p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers()) out[prefix + b.key()] = b.value().detach().clone();
  return out;
}

/// Every parameter and buffer of the model parts and the losses, by checkpoint name.
std::map<std::string, torch::Tensor> trainer_state(ModelParts& m, const std::vector<Objective>& objectives) {
  std::map<std::string, torch::Tensor> out;
  auto add = [&](torch::nn::Module& mod, const std::string& prefix) {
    auto s = named_state(mod, prefix);
    out.insert(s.begin(), s.end());
  };
  if (m.speech_encoder) add(m.speech_encoder->module(), "speech_encoder.");
  if (m.text_embedding) add(m.text_embedding->module(), "text_embedding.");
  if (m.shared_encoder) add(m.shared_encoder->module(), "shared_encoder.");
  if (m.modality) add(*m.modality, "modality_embedding.");
  for (const auto& o : objectives)
    if (auto* mod = o.loss->module()) add(*mod, "objectives." + o.name + ".");
  return out;
}

/// Fills every parameter of `m` with fresh random values (so that a loaded copy cannot match by chance).
void randomise(torch::nn::Module& m, std::uint64_t seed) {
  torch::manual_seed(seed);
  torch::NoGradGuard no_grad;
  for (auto& p : m.parameters()) p.copy_(torch::randn_like(p));
}

// --- e2e helpers (the built `workbench`, as in test_end_to_end.cpp) -----------------------------------

const std::string kExperiments = WORKBENCH_SOURCE_DIR "/experiments";

std::optional<std::string> scalar(const RunStore& store, const std::string& sql) {
  auto q = store.query_rows(sql);
  REQUIRE(q.rows.size() == 1);
  REQUIRE(q.rows[0].size() == 1);
  return q.rows[0][0];
}

/// A numeric param of `run`; fails the test when it is missing.
double param_number(const RunStore& store, std::int64_t run, const std::string& key) {
  auto v = scalar(store, "SELECT value_num FROM params WHERE run_id = " + std::to_string(run) + " AND key = '" + key + "'");
  REQUIRE(v.has_value());
  return std::stod(*v);
}

std::int64_t count_params(const RunStore& store, std::int64_t run, const std::string& like) {
  auto v = scalar(store, "SELECT count(*) FROM params WHERE run_id = " + std::to_string(run) + " AND key LIKE '" +
                             like + "'");
  return std::stoll(v.value());
}

/// Dry-runs `experiment` with `preset` and checks the recorded model size against `expected` (+-10%).
void check_dry_run(const std::string& experiment, const std::string& preset, double expected,
                   std::int64_t shared_layers, std::int64_t d_model) {
  TempDir dir("wbtest_stages_");
  const std::string db = dir.file("runs.db");
  CommandResult r = run_workbench(dir, {"run", "--dry-run", kExperiments + "/" + experiment, "--set",
                                 "experiment.preset=" + preset, "--db", db});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Contains("dry run"));
  RunStore store(db);
  auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  const auto& run = runs[0];
  CHECK(run.status == "finished");
  CHECK(run.error_message.empty());
  const double model = param_number(store, run.id, "derived.parameters.model");
  INFO(preset << ": " << model / 1e9 << "B parameters");
  CHECK(model > 0.9 * expected);
  CHECK(model < 1.1 * expected);
  // The parts add up: the model is everything but the losses; the total adds their heads.
  const double total = param_number(store, run.id, "derived.parameters.total");
  CHECK(total >= model);
  double parts = 0;
  for (const char* part : {"speech_encoder", "text_embedding", "shared_encoder", "modality_embedding"})
    parts += param_number(store, run.id, std::string("derived.parameters.") + part);
  CHECK(parts == model);
  CHECK(param_number(store, run.id, "runtime.dry_run") == 1.0);
  // The preset's sizes are what ran, and no data was loaded.
  CHECK(param_number(store, run.id, "model.shared_encoder.layers") == static_cast<double>(shared_layers));
  CHECK(param_number(store, run.id, "model.speech_encoder.d_model") == static_cast<double>(d_model));
  CHECK(count_params(store, run.id, "derived.data.%") == 0);
  CHECK(scalar(store, "SELECT value_text FROM params WHERE run_id = " + std::to_string(run.id) +
                          " AND key = 'experiment.preset'") == std::optional<std::string>(preset));
  CHECK_THAT(run.config_toml, Contains("preset = \"" + preset + "\""));
}

}  // namespace

// --- [[stages]] configuration ------------------------------------------------------------------------

TEST_CASE("stages: steps add up to trainer.steps, names default to stage<N>", "[stages][config]") {
  auto c = resolve_text(kStagedBase + kTwoStages);
  REQUIRE(c.stages.size() == 2);
  CHECK(c.stages[0].name == "unpaired");
  CHECK(c.stages[0].steps == 12);
  CHECK(c.stages[0].objectives == std::vector<std::string>{"first"});
  CHECK(c.stages[1].name == "stage2");
  CHECK(c.stages[1].steps == 18);
  CHECK(c.stages[1].objectives == std::vector<std::string>{"first", "second"});
  CHECK(c.trainer.steps() == 30);
  CHECK(c.trainer.source.origin("steps") == "sum of [[stages]] steps");
  // The flat params carry each stage.
  bool steps_found = false, objectives_found = false;
  for (const auto& [k, v] : c.flat) {
    if (k == "stages.unpaired.steps") steps_found = std::get<std::int64_t>(v) == 12;
    if (k == "stages.stage2.objectives")
      objectives_found = std::get<std::vector<std::string>>(v) == std::vector<std::string>{"first", "second"};
  }
  CHECK(steps_found);
  CHECK(objectives_found);
  // Without [[stages]]: none, and trainer.steps as given.
  auto plain = resolve_text(kStagedBase + "\n[trainer]\nsteps = 7\n");
  CHECK(plain.stages.empty());
  CHECK(plain.trainer.steps() == 7);
}

TEST_CASE("stages: trainer.steps equal to the sum is fine, a different one is an error", "[stages][config]") {
  auto equal = resolve_text(kStagedBase + "\n[trainer]\nsteps = 30\n" + kTwoStages);
  CHECK(equal.trainer.steps() == 30);

  const std::string msg = config_error([&] { resolve_text(kStagedBase + "\n[trainer]\nsteps = 31\n" + kTwoStages); });
  CHECK_THAT(msg, Contains("[trainer] steps") && Contains("add up to 30"));
  CHECK_THAT(msg, Contains("exp.toml:"));
  // --set trainer.steps conflicts the same way, and the message says it came from --set.
  const std::string set = config_error([&] { resolve_text(kStagedBase + kTwoStages, "exp.toml", {"trainer.steps=5"}); });
  CHECK_THAT(set, Contains("--set trainer.steps") && Contains("add up to 30"));
}

TEST_CASE("stages: an unknown objective is a ConfigError naming it and the defined ones", "[stages][config]") {
  const std::string msg = config_error([&] {
    resolve_text(kStagedBase + "\n[[stages]]\nsteps = 5\nobjectives = [\"first\", \"tlm\"]\n");
  });
  CHECK_THAT(msg, Contains("no [objectives.tlm]") && Contains("first, second"));
  CHECK_THAT(msg, Contains("[stages.0] objectives"));
}

TEST_CASE("stages: an objective in no stage is a ConfigError, not silently untrained", "[stages][config]") {
  const std::string msg = config_error([&] {
    resolve_text(kStagedBase + "\n[[stages]]\nsteps = 5\nobjectives = [\"first\"]\n");
  });
  CHECK_THAT(msg, Contains("[objectives.second] is in no [[stages]]"));
  CHECK_THAT(msg, StartsWith("exp.toml:"));
}

TEST_CASE("stages: other mistakes are ConfigErrors", "[stages][config]") {
  CHECK_THAT(config_error([&] { resolve_text(kStagedBase + "\n[[stages]]\nobjectives = [\"first\"]\n"); }),
             Contains("every stage needs steps"));
  CHECK_THAT(config_error([&] { resolve_text(kStagedBase + "\n[[stages]]\nsteps = 0\nobjectives = [\"first\"]\n"); }),
             Contains("below the minimum"));
  CHECK_THAT(config_error([&] { resolve_text(kStagedBase + "\n[[stages]]\nsteps = 3\n"); }),
             Contains("at least one objective"));
  CHECK_THAT(config_error([&] {
               resolve_text(kStagedBase +
                            "\n[[stages]]\nname = \"a\"\nsteps = 3\nobjectives = [\"first\"]\n"
                            "\n[[stages]]\nname = \"a\"\nsteps = 3\nobjectives = [\"second\"]\n");
             }),
             Contains("two stages are called 'a'"));
  CHECK_THAT(config_error([&] { resolve_text("stages = 3\n" + kStagedBase); }), Contains("array of tables"));
  CHECK_THAT(config_error([&] {
               resolve_text(kStagedBase + "\n[[stages]]\nsteps = 3\nobjectives = [\"first\"]\nepochs = 2\n");
             }),
             Contains("unknown key 'epochs'"));
}

TEST_CASE("stages: the resolved TOML parses back to the same stages", "[stages][config][roundtrip]") {
  auto first = resolve_text(kStagedBase + kTwoStages);
  INFO(first.resolved_toml);
  CHECK_THAT(first.resolved_toml, Contains("[[stages]]\nname = \"unpaired\"\nsteps = 12\nobjectives = [\"first\"]\n"));
  ExperimentConfig second;
  REQUIRE_NOTHROW(second = resolve_text(first.resolved_toml));
  CHECK(second.resolved_toml == first.resolved_toml);
  REQUIRE(second.stages.size() == 2);
  for (std::size_t i = 0; i < 2; ++i) {
    CHECK(second.stages[i].name == first.stages[i].name);
    CHECK(second.stages[i].steps == first.stages[i].steps);
    CHECK(second.stages[i].objectives == first.stages[i].objectives);
  }
  CHECK(second.trainer.steps() == 30);
}

TEST_CASE("data keys use and language_temperature, and [model] modality_embedding", "[stages][config]") {
  auto c = resolve_text(kStagedBase);
  const auto* d = c.find_data("train");
  REQUIRE(d != nullptr);
  CHECK(d->core.get_string("use") == "auto");
  CHECK(d->core.get_float("language_temperature") == 0.0);
  CHECK(c.modality_embedding);

  std::string text = kStagedBase;
  text.replace(text.find("plugin = \"asterisk\""), 19, "plugin = \"asterisk\"\nuse = \"speech\"\nlanguage_temperature = 3");
  text += "\n[model]\nmodality_embedding = false\n";
  auto c2 = resolve_text(text);
  CHECK(c2.find_data("train")->core.get_string("use") == "speech");
  CHECK(c2.find_data("train")->core.get_float("language_temperature") == 3.0);
  CHECK_FALSE(c2.modality_embedding);

  CHECK_THAT(config_error([&] { resolve_text(kStagedBase, "exp.toml", {"data.train.use=audio"}); }),
             Contains("'audio' is not one of: auto, speech, text, paired"));
  CHECK_THAT(config_error([&] { resolve_text(kStagedBase, "exp.toml", {"data.train.language_temperature=-1"}); }),
             Contains("below the minimum"));
  // A bad [model] value is reported where it was written.
  const std::string bad = config_error([&] { resolve_text(kStagedBase + "\n[model]\nmodality_embedding = 3\n"); });
  CHECK_THAT(bad, Contains("[model] modality_embedding: expected bool"));
  CHECK_THAT(bad, Contains("exp.toml:20:"));
}

// --- presets -----------------------------------------------------------------------------------------

namespace {

const std::string kPreset = R"(# preset x
[model]
modality_embedding = false

[model.speech_encoder]
plugin = "conformer"
d_model = 64
heads = 4
layers = 3

[model.shared_encoder]
plugin = "conformer"
frontend = "projection"
d_model = 64
heads = 4
layers = 5

[model.text_embedding]
plugin = "char_embedding"
max_length = 100

[data.train]
plugin = "asterisk"
languages = ["en"]
max_per_language = 2

[trainer]
lr = 0.25
warmup_steps = 9
)";

const std::string kPresetUser = R"([experiment]
name = "with-preset"
preset = "x"

[model.speech_encoder]
d_model = 32

[model.text_embedding]
plugin = "sentencepiece_embedding"

[data.train]
plugin = "manifest"
path = "m.tsv"

[objectives.ctc]
plugin = "ctc"

[trainer]
lr = 0.5
)";

}  // namespace

TEST_CASE("preset: its tables go under the file's, and the file's keys win", "[stages][preset]") {
  TempDir dir("wbtest_stages_");
  write_file(dir.file("presets/x.toml"), kPreset);
  write_file(dir.file("exp.toml"), kPresetUser);
  auto c = resolve_file(dir.file("exp.toml"));
  // Merged key by key: the file's d_model, the preset's plugin, heads and layers.
  CHECK(c.speech_encoder.plugin == "conformer");
  CHECK(c.speech_encoder.options.get_int("d_model") == 32);
  CHECK(c.speech_encoder.options.get_int("heads") == 4);
  CHECK(c.speech_encoder.options.get_int("layers") == 3);
  CHECK_THAT(c.speech_encoder.options.origin("d_model"), Contains("exp.toml:6:"));
  // A table only the preset has comes whole.
  CHECK(c.shared_encoder.plugin == "conformer");
  CHECK(c.shared_encoder.options.get_int("layers") == 5);
  CHECK(c.shared_encoder.options.get_string("frontend") == "projection");
  CHECK_FALSE(c.modality_embedding);
  CHECK(c.trainer.lr() == 0.5);
  CHECK(c.trainer.warmup_steps() == 9);
  // Values that came from the preset say so.
  CHECK_THAT(c.speech_encoder.options.origin("heads"), Contains("presets/x.toml:"));
  CHECK_THAT(c.shared_encoder.options.origin("layers"), Contains("presets/x.toml:"));
  CHECK_THAT(c.trainer.source.origin("warmup_steps"), Contains("presets/x.toml:"));

  // --set wins over both, and can name the preset.
  auto s = resolve_file(dir.file("exp.toml"), {"model.speech_encoder.heads=2", "trainer.warmup_steps=3"});
  CHECK(s.speech_encoder.options.get_int("heads") == 2);
  CHECK(s.trainer.warmup_steps() == 3);
  std::string no_preset = kPresetUser;
  no_preset.replace(no_preset.find("preset = \"x\"\n"), 13, "");
  write_file(dir.file("plain.toml"), no_preset + "\n[model.shared_encoder]\nplugin = \"conformer\"\n");
  // Without the preset the file alone is incomplete ([model.speech_encoder] has no plugin) ...
  CHECK_THAT(config_error([&] { resolve_file(dir.file("plain.toml")); }), Contains("needs plugin ="));
  // ... and --set experiment.preset brings it in.
  auto via_set = resolve_file(dir.file("plain.toml"), {"experiment.preset=x"});
  CHECK(via_set.speech_encoder.options.get_int("layers") == 3);
  CHECK(via_set.shared_encoder.options.get_int("layers") == 5);
}

TEST_CASE("preset: a table naming a different plugin replaces the preset's", "[stages][preset]") {
  TempDir dir("wbtest_stages_");
  write_file(dir.file("presets/x.toml"), kPreset);
  write_file(dir.file("exp.toml"), kPresetUser);
  auto c = resolve_file(dir.file("exp.toml"));
  // [data.train]: manifest, without the asterisk preset's languages (which manifest would refuse).
  const auto* d = c.find_data("train");
  REQUIRE(d != nullptr);
  CHECK(d->plugin == "manifest");
  CHECK(d->options.get_string("path") == "m.tsv");
  CHECK_FALSE(d->options.has("languages"));
  CHECK_FALSE(d->options.has("max_per_language"));
  // [model.text_embedding]: sentencepiece with its own default max_length, not the preset's 100.
  CHECK(c.text_embedding.plugin == "sentencepiece_embedding");
  CHECK(c.text_embedding.options.get_int("max_length") == 512);
  CHECK(c.text_embedding.options.origin("max_length") == "default");
}

TEST_CASE("preset: errors in preset values name the preset file", "[stages][preset][errors]") {
  TempDir dir("wbtest_stages_");
  std::string bad = kPreset;
  bad.replace(bad.find("layers = 3"), 10, "layers = \"three\"");
  write_file(dir.file("presets/x.toml"), bad);
  write_file(dir.file("exp.toml"), kPresetUser);
  const std::string msg = config_error([&] { resolve_file(dir.file("exp.toml")); });
  CHECK_THAT(msg, Contains("[model.speech_encoder] layers: expected integer"));
  CHECK_THAT(msg, Contains(dir.file("presets/x.toml") + ":9:"));

  // An unknown key in a table the preset alone gives.
  std::string unknown = kPreset;
  unknown.replace(unknown.find("layers = 5"), 10, "layerz = 5");
  write_file(dir.file("presets/x.toml"), unknown);
  const std::string msg2 = config_error([&] { resolve_file(dir.file("exp.toml")); });
  CHECK_THAT(msg2, Contains("unknown key 'layerz'"));
  CHECK_THAT(msg2, Contains(dir.file("presets/x.toml") + ":16:"));

  // A bad [model] value of the preset.
  std::string model = kPreset;
  model.replace(model.find("modality_embedding = false"), 26, "modality_embedding = 1");
  write_file(dir.file("presets/x.toml"), model);
  const std::string msg3 = config_error([&] { resolve_file(dir.file("exp.toml")); });
  CHECK_THAT(msg3, Contains("[model] modality_embedding: expected bool"));
  CHECK_THAT(msg3, Contains(dir.file("presets/x.toml") + ":3:"));

  // A syntax error in the preset.
  write_file(dir.file("presets/x.toml"), "[model\n");
  CHECK_THAT(config_error([&] { resolve_file(dir.file("exp.toml")); }),
             Contains(dir.file("presets/x.toml")) && Contains("TOML syntax error"));

  // A preset naming another preset.
  write_file(dir.file("presets/x.toml"), "[experiment]\npreset = \"tiny\"\n" + kPreset);
  CHECK_THAT(config_error([&] { resolve_file(dir.file("exp.toml")); }), Contains("cannot name another preset"));
}

TEST_CASE("preset: a missing preset lists where it looked", "[stages][preset][errors]") {
  TempDir dir("wbtest_stages_");
  write_file(dir.file("exp.toml"), kPresetUser);
  const std::string msg = config_error([&] { resolve_file(dir.file("exp.toml"), {"experiment.preset=nope"}); });
  CHECK_THAT(msg, Contains("--set experiment.preset") && Contains("preset 'nope' not found"));
  CHECK_THAT(msg, Contains(dir.file("presets/nope.toml")));
  CHECK_THAT(msg, Contains(kExperiments + "/presets/nope.toml"));

  // Written in the file: the message gives its line.
  std::string in_file = kPresetUser;
  in_file.replace(in_file.find("preset = \"x\""), 12, "preset = \"nope\"");
  write_file(dir.file("exp2.toml"), in_file);
  CHECK_THAT(config_error([&] { resolve_file(dir.file("exp2.toml")); }),
             Contains(dir.file("exp2.toml") + ":3:") && Contains("preset 'nope' not found"));

  // A path is looked up relative to the experiment file only.
  const std::string path_msg =
      config_error([&] { resolve_file(dir.file("exp.toml"), {"experiment.preset=sizes/big.toml"}); });
  CHECK_THAT(path_msg, Contains(dir.file("sizes/big.toml")));
}

TEST_CASE("preset: the source tree's presets when the file's folder has none, and relative paths", "[stages][preset]") {
  TempDir dir("wbtest_stages_");
  std::string user = kPresetUser;
  user.replace(user.find("preset = \"x\""), 12, "preset = \"tiny\"");
  write_file(dir.file("exp.toml"), user);
  auto c = resolve_file(dir.file("exp.toml"));
  CHECK(c.speech_encoder.options.get_int("d_model") == 32);  // the file's
  CHECK(c.shared_encoder.options.get_int("d_model") == 144);  // experiments/presets/tiny.toml
  CHECK_THAT(c.shared_encoder.options.origin("d_model"), Contains("experiments/presets/tiny.toml:"));

  // A relative .toml path, next to the experiment file.
  write_file(dir.file("sizes/big.toml"), kPreset);
  auto p = resolve_file(dir.file("exp.toml"), {"experiment.preset=sizes/big.toml"});
  CHECK(p.shared_encoder.options.get_int("layers") == 5);
}

TEST_CASE("preset: the resolved TOML parses back to the same configuration", "[stages][preset][roundtrip]") {
  TempDir dir("wbtest_stages_");
  write_file(dir.file("presets/x.toml"), kPreset);
  write_file(dir.file("exp.toml"), kPresetUser);
  auto first = resolve_file(dir.file("exp.toml"));
  // The preset is already merged in, so the resolved TOML only mentions it in a comment: a copy read back
  // elsewhere (a checkpoint, the run store) must not need the preset file.
  CHECK_THAT(first.resolved_toml, Contains("# preset = \"x\" (merged below)"));
  std::filesystem::remove(dir.file("presets/x.toml"));
  auto second = resolve_text(first.resolved_toml, dir.file("exp.toml"));
  // The same configuration, but for the preset's name itself.
  auto without_preset = [](std::vector<std::pair<std::string, OptionValue>> flat) {
    flat.erase(std::remove_if(flat.begin(), flat.end(), [](const auto& kv) { return kv.first == "experiment.preset"; }),
               flat.end());
    return flat;
  };
  const bool same = without_preset(second.flat) == without_preset(first.flat);
  CHECK(same);
  CHECK(second.shared_encoder.options.get_int("layers") == first.shared_encoder.options.get_int("layers"));
}

// --- the trainer's stages ----------------------------------------------------------------------------

TEST_CASE("Trainer: each objective runs only in its stages, and train/stage is recorded", "[stages][trainer]") {
  auto a = std::make_shared<CountingLoss>(BatchKind::Speech, 1.0);
  auto b = std::make_shared<CountingLoss>(BatchKind::Text, -2.0);
  auto speech = std::make_shared<FixedBatcher>(BatchKind::Speech);
  auto text = std::make_shared<FixedBatcher>(BatchKind::Text);
  RecordingSink sink;
  Trainer trainer(trainer_options(10), ModelParts{}, {{"a", a, 1.0, "speech"}, {"b", b, 0.5, "text"}}, {},
                  {{"speech", speech}, {"text", text}}, {}, torch::kCPU, sink,
                  {stage("first", 4, {"a"}), stage("second", 6, {"a", "b"})});
  CHECK(trainer.parameters().size() == 2);
  auto result = trainer.train();
  CHECK(result.steps == 10);

  CHECK(a->steps == std::vector<std::int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(b->steps == std::vector<std::int64_t>{4, 5, 6, 7, 8, 9});
  CHECK(a->total_steps == 10);
  // A batch per step of each active objective, none for idle ones; and one more of each, made ahead
  // (trainer.prefetch, on by default), which starts with an objective's first batch, not before.
  CHECK(speech->served == 10 + 1);
  CHECK(text->served == 6 + 1);
  // b was not trained in the first stage: its parameter is untouched until its first step ...
  REQUIRE(b->w_at_call.size() == 6);
  CHECK(b->w_at_call[0].abs().sum().item<double>() == 0.0);
  // ... and moves towards its target after; a's moved from the first step.
  CHECK((b->w_at_call[5] < 0).all().item<bool>());
  CHECK((a->w_at_call[1] > 0).all().item<bool>());

  // train/stage at every logged step: 0 for steps 1..4, 1 for 5..10.
  REQUIRE(sink.values["train/stage"].size() == 10);
  for (std::int64_t s = 1; s <= 10; ++s) CHECK(sink.values["train/stage"][s] == (s <= 4 ? 0.0 : 1.0));
  // Each objective's metrics only where it ran; train/loss is the weighted sum.
  CHECK(sink.values["a/loss"].size() == 10);
  REQUIRE(sink.values["b/loss"].size() == 6);
  CHECK(sink.values["b/loss"].begin()->first == 5);
  CHECK(sink.values["train/loss"][1] == Approx(3.0));  // a alone: 3 * (0 - 1)^2
  CHECK(sink.values["train/loss"][5] == Approx(sink.values["a/loss"][5] + 0.5 * 12.0));  // b: 3 * (0 + 2)^2
}

TEST_CASE("Trainer: without stages every objective runs every step", "[stages][trainer]") {
  auto a = std::make_shared<CountingLoss>(BatchKind::Speech, 1.0);
  auto b = std::make_shared<CountingLoss>(BatchKind::Speech, 2.0);
  auto speech = std::make_shared<FixedBatcher>(BatchKind::Speech);
  RecordingSink sink;
  Trainer trainer(trainer_options(3), ModelParts{}, {{"a", a, 1.0, "speech"}, {"b", b, 1.0, "speech"}}, {},
                  {{"speech", speech}}, {}, torch::kCPU, sink);
  trainer.train();
  CHECK(a->steps.size() == 3);
  CHECK(b->steps.size() == 3);
  for (std::int64_t s = 1; s <= 3; ++s) CHECK(sink.values["train/stage"][s] == 0.0);
}

TEST_CASE("Trainer: the last stage runs on when trainer.steps is longer than the stages", "[stages][trainer]") {
  auto a = std::make_shared<CountingLoss>(BatchKind::Speech, 1.0);
  auto b = std::make_shared<CountingLoss>(BatchKind::Speech, 2.0);
  auto speech = std::make_shared<FixedBatcher>(BatchKind::Speech);
  RecordingSink sink;
  Trainer trainer(trainer_options(6), ModelParts{}, {{"a", a, 1.0, "speech"}, {"b", b, 1.0, "speech"}}, {},
                  {{"speech", speech}}, {}, torch::kCPU, sink, {stage("one", 2, {"a"}), stage("two", 2, {"b"})});
  trainer.train();
  CHECK(a->steps == std::vector<std::int64_t>{0, 1});
  CHECK(b->steps == std::vector<std::int64_t>{2, 3, 4, 5});
}

TEST_CASE("Trainer: an objective's parameters stay put in the stages that leave it out", "[stages][trainer]") {
  // SLAM's "-> w2v-bert" row: a joint stage, then a stage without the text objective. Adam's moments of
  // the objective that stopped must not keep moving its parameters.
  auto a = std::make_shared<CountingLoss>(BatchKind::Speech, 1.0);
  auto b = std::make_shared<CountingLoss>(BatchKind::Speech, -2.0);
  auto speech = std::make_shared<FixedBatcher>(BatchKind::Speech);
  RecordingSink sink;
  Trainer trainer(trainer_options(8), ModelParts{}, {{"a", a, 1.0, "speech"}, {"b", b, 1.0, "speech"}}, {},
                  {{"speech", speech}}, {}, torch::kCPU, sink,
                  {stage("joint", 3, {"a", "b"}), stage("speech only", 5, {"a"})});
  trainer.train();
  REQUIRE(b->steps == std::vector<std::int64_t>{0, 1, 2});
  REQUIRE(a->steps.size() == 8);
  // a keeps learning ...
  CHECK((a->w_at_call[7] > a->w_at_call[3]).all().item<bool>());
  // ... b was updated in steps 0..2 and not after: its value now is the one after step 2, which is
  // (w before step 2) moved by one Adam step of at most about lr.
  auto w_end = b->w.detach();
  CHECK((w_end < b->w_at_call[2]).all().item<bool>());
  CHECK(((b->w_at_call[2] - w_end).abs() <= 0.05 * 1.01).all().item<bool>());
}

TEST_CASE("Trainer: a stage naming an unknown objective is a ConfigError naming both", "[stages][trainer][errors]") {
  auto a = std::make_shared<CountingLoss>(BatchKind::Speech, 1.0);
  RecordingSink sink;
  const std::string msg = config_error([&] {
    Trainer(trainer_options(4), ModelParts{}, {{"a", a, 1.0, "speech"}}, {},
            {{"speech", std::make_shared<FixedBatcher>(BatchKind::Speech)}}, {}, torch::kCPU, sink,
            {stage("joint", 4, {"a", "tlm"})});
  });
  CHECK_THAT(msg, Contains("'joint'") && Contains("'tlm'"));
  // A batch kind the loss does not accept.
  CHECK_THAT(config_error([&] {
               Trainer(trainer_options(4), ModelParts{}, {{"a", a, 1.0, "text"}}, {},
                       {{"text", std::make_shared<FixedBatcher>(BatchKind::Text)}}, {}, torch::kCPU, sink);
             }),
             Contains("gives text batches") && Contains("accepts: speech"));
}

// --- checkpoints -------------------------------------------------------------------------------------

namespace {

struct TrainerParts {
  ModelParts model;
  std::vector<Objective> objectives;
  std::shared_ptr<FixedBatcher> batcher = std::make_shared<FixedBatcher>(BatchKind::Speech);
  RecordingSink sink;
  std::unique_ptr<Trainer> trainer;

  TrainerParts(std::int64_t D, std::uint64_t seed, bool text = true) {
    torch::manual_seed(seed);
    model = tiny_joint_model(5, 6, D, 9);
    if (!text) model.text_embedding = nullptr;
    randomise(*model.modality, seed + 100);  // it starts at zero: make it tell copies apart
    auto loss = std::make_shared<CountingLoss>(BatchKind::Speech, 1.0);
    randomise(loss->module_, seed + 200);
    objectives = {{"a", loss, 1.0, "speech"}};
    trainer = std::make_unique<Trainer>(trainer_options(2), model, objectives, std::vector<EvaluatorSlot>{},
                                        std::map<std::string, std::shared_ptr<TrainBatcher>>{{"speech", batcher}},
                                        std::map<std::string, std::vector<Batch>>{}, torch::kCPU, sink);
  }
  std::map<std::string, torch::Tensor> state() { return trainer_state(model, objectives); }
};

}  // namespace

TEST_CASE("checkpoints: load_checkpoint restores every parameter into a fresh trainer", "[stages][checkpoint]") {
  TempDir dir("wbtest_stages_");
  TrainerParts saved(4, 1);
  saved.trainer->train();  // trained for real: the optimizer has state
  const std::string path = dir.file("ck/run-1/final.pt");
  saved.trainer->save_checkpoint(path, "# config\n", "vocabulary text");
  REQUIRE(fs::exists(path));
  auto expected = saved.state();
  REQUIRE(expected.size() == 11);  // 4 + 4 + 1 + 1 + 1

  TrainerParts fresh(4, 2);
  auto before = fresh.state();
  for (const auto& [name, t] : expected) CHECK_FALSE(torch::equal(before.at(name), t));
  auto loaded = fresh.trainer->load_checkpoint(path);
  CHECK(std::set<std::string>(loaded.begin(), loaded.end()) ==
        std::set<std::string>{"speech_encoder.frontend.weight", "speech_encoder.frontend.bias",
                              "speech_encoder.context.weight", "speech_encoder.context.bias",
                              "text_embedding.table.weight", "shared_encoder.projection.weight",
                              "shared_encoder.projection.bias", "shared_encoder.layer.weight",
                              "shared_encoder.layer.bias", "modality_embedding.table.weight", "objectives.a.w"});
  auto after = fresh.state();
  for (const auto& [name, t] : expected) {
    INFO(name);
    CHECK(torch::equal(after.at(name), t));
  }
  CHECK(Trainer::checkpoint_vocabulary(path) == "vocabulary text");

  // Parts the checkpoint lacks keep their initialisation.
  TrainerParts no_text(4, 3, /*text=*/false);
  const std::string partial = dir.file("ck/partial.pt");
  no_text.trainer->save_checkpoint(partial, "", "");
  TrainerParts target(4, 4);
  auto text_before = named_state(target.model.text_embedding->module(), "");
  auto partial_loaded = target.trainer->load_checkpoint(partial);
  CHECK(partial_loaded.size() == 10);
  CHECK(torch::equal(target.model.text_embedding->module().named_parameters()["table.weight"],
                     text_before.at("table.weight")));
  CHECK(torch::equal(target.model.speech_encoder->module().named_parameters()["frontend.weight"],
                     no_text.state().at("speech_encoder.frontend.weight")));
}

TEST_CASE("checkpoints: a shape mismatch is a ConfigError naming the tensor", "[stages][checkpoint][errors]") {
  TempDir dir("wbtest_stages_");
  TrainerParts saved(4, 1);
  const std::string path = dir.file("final.pt");
  saved.trainer->save_checkpoint(path, "", "");
  TrainerParts wider(8, 2);  // same speech encoder, wider text embedding and shared encoder
  const std::string msg = config_error([&] { wider.trainer->load_checkpoint(path); });
  CHECK_THAT(msg, Contains(path));
  // The first tensor that differs, in checkpoint order (speech encoder, text embedding, shared encoder).
  CHECK_THAT(msg, Contains("'text_embedding.table.weight' has shape 10x4 in the checkpoint but 10x8 in this model"));
}

TEST_CASE("checkpoints: missing and unreadable files are DataErrors naming them", "[stages][checkpoint][errors]") {
  TempDir dir("wbtest_stages_");
  TrainerParts t(4, 1);
  CHECK_THROWS_AS(t.trainer->load_checkpoint(dir.file("nope.pt")), DataError);
  CHECK_THROWS_WITH(t.trainer->load_checkpoint(dir.file("nope.pt")), Contains(dir.file("nope.pt")));
  write_file(dir.file("junk.pt"), "not a checkpoint");
  CHECK_THROWS_AS(t.trainer->load_checkpoint(dir.file("junk.pt")), DataError);
  // [init] checkpoint reads the vocabulary first: the same errors, without a LibTorch backtrace.
  CHECK_THROWS_AS(Trainer::checkpoint_vocabulary(dir.file("nope.pt")), DataError);
  CHECK_THROWS_WITH(Trainer::checkpoint_vocabulary(dir.file("nope.pt")), Contains(dir.file("nope.pt")));
  CHECK_THROWS_AS(Trainer::checkpoint_vocabulary(dir.file("junk.pt")), DataError);
}

TEST_CASE("checkpoints: save_checkpoint to a bare file name in the working directory", "[stages][checkpoint]") {
  TempDir dir("wbtest_stages_");
  TrainerParts t(4, 1);
  const auto cwd = fs::current_path();
  fs::current_path(dir.path);
  bool saved = false;
  try {
    t.trainer->save_checkpoint("final.pt", "", "v");
    saved = true;
  } catch (const std::exception& e) {
    fs::current_path(cwd);
    FAIL("save_checkpoint(\"final.pt\") threw: " << e.what());
  }
  fs::current_path(cwd);
  CHECK(saved);
  CHECK(fs::exists(dir.file("final.pt")));
}

// --- `workbench run --dry-run` and the data keys, end to end ----------------------------------------

TEST_CASE("dry run: mslam-600m counts about 0.6B parameters", "[stages][e2e][dryrun]") {
  check_dry_run("mslam.toml", "mslam-600m", 0.6e9, 16, 1024);
}

TEST_CASE("dry run: slam-600m counts about 0.6B parameters", "[stages][e2e][dryrun]") {
  check_dry_run("slam.toml", "slam-600m", 0.6e9, 16, 1024);
}

TEST_CASE("dry run: mslam-2b counts about 1.84B parameters", "[stages][e2e][dryrun][slow]") {
  check_dry_run("mslam.toml", "mslam-2b", 1.84e9, 32, 1408);
}

namespace {

constexpr double kPi = 3.14159265358979323846;

/// A manifest of short tones: `per_lang` utterances for each language.
std::string write_manifest(const TempDir& dir, const std::map<std::string, int>& per_lang) {
  fs::create_directories(dir.path / "audio");
  std::string tsv = "id\tpath\ttext\tlang\n";
  int i = 0;
  for (const auto& [lang, n] : per_lang)
    for (int k = 0; k < n; ++k, ++i) {
      Audio a;
      a.sample_rate = 16000;
      const int samples = 6000 + 800 * (i % 5);
      a.samples.resize(static_cast<std::size_t>(samples));
      for (int t = 0; t < samples; ++t)
        a.samples[static_cast<std::size_t>(t)] = static_cast<float>(0.2 * std::sin(2 * kPi * (300 + 40 * i) * t / 16000.0));
      const std::string rel = "audio/u" + std::to_string(i) + ".wav";
      write_audio(dir.file(rel), a);
      tsv += "u" + std::to_string(i) + "\t" + rel + "\t" + (k % 2 ? "ab" : "ba a") + "\t" + lang + "\n";
    }
  const std::string path = dir.file("manifest.tsv");
  write_file(path, tsv);
  return path;
}

std::string manifest_experiment(const TempDir& dir, const std::string& manifest, const std::string& data_extra) {
  return "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest + "\"\nbatch_seconds = 4.0\n" + data_extra +
         R"(
[model.speech_encoder]
plugin = "conformer"
d_model = 32
heads = 2
layers = 1
ffn_dim = 64
kernel_size = 7
subsampling_channels = 8

[objectives.ctc]
plugin = "ctc"
data = "train"

[trainer]
steps = 2
log_every = 1
warmup_steps = 1
threads = 1
progress = "none"
checkpoint_dir = ")" + dir.file("checkpoints") + "\"\n";
}

}  // namespace

TEST_CASE("run: language_temperature records each language's sampling probability", "[stages][e2e][sampler]") {
  TempDir dir("wbtest_stages_");
  const std::string manifest = write_manifest(dir, {{"aa", 6}, {"bb", 2}});
  write_file(dir.file("exp.toml"), manifest_experiment(dir, manifest, "language_temperature = 2.0\n"));
  const std::string db = dir.file("runs.db");
  CommandResult r = run_workbench(dir, {"run", dir.file("exp.toml"), "--db", db});
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  RunStore store(db);
  auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].status == "finished");
  const double za = std::sqrt(0.75), zb = std::sqrt(0.25);
  CHECK(param_number(store, runs[0].id, "derived.data.train.sampling.aa") == Approx(za / (za + zb)));
  CHECK(param_number(store, runs[0].id, "derived.data.train.sampling.bb") == Approx(zb / (za + zb)));
  CHECK(param_number(store, runs[0].id, "derived.data.train.utterances") == 8.0);
  CHECK(param_number(store, runs[0].id, "derived.parameters.model") > 0);
  CHECK(store.metrics(runs[0].id, "ctc/loss").size() == 2);
}

TEST_CASE("run: use = speech or text turns paired data into one half, which a loss that needs the pair refuses",
          "[stages][e2e][use]") {
  TempDir dir("wbtest_stages_");
  const std::string manifest = write_manifest(dir, {{"aa", 3}});
  for (const std::string use : {"speech", "text"}) {
    INFO("use = " << use);
    write_file(dir.file(use + ".toml"), manifest_experiment(dir, manifest, "use = \"" + use + "\"\n"));
    const std::string db = dir.file(use + ".db");
    CommandResult r = run_workbench(dir, {"run", dir.file(use + ".toml"), "--db", db});
    CHECK(r.exit_code == 1);
    RunStore store(db);
    auto runs = store.runs();
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].status == "failed");
    CHECK_THAT(runs[0].error_message, Contains("[data.train] gives " + use + " batches") && Contains("accepts: paired"));
  }
  // use = "paired" on paired data is what it was.
  write_file(dir.file("paired.toml"), manifest_experiment(dir, manifest, "use = \"paired\"\n"));
  CommandResult ok = run_workbench(dir, {"run", dir.file("paired.toml"), "--db", dir.file("paired.db")});
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
}
