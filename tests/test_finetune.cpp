// Fine-tuning from a pre-trained checkpoint through the runner: [init] loads the components it names
// (the loaded weights equal the parent's), new heads are sized from the new data, evaluate() alone
// reproduces the parent's metrics from its checkpoint, and every mistake is a ConfigError that says what
// to do.
#include <filesystem>
#include <string>
#include <vector>

#include "runner_support.h"
#include "test_support.h"
#include "workbench/error.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;

namespace {

// Pre-training is runner_support.h's kJoint: w2v-BERT, TLM and CTC on English, 2 steps.
// Fine-tuning: the same encoders, no text side, Russian (another alphabet: another vocabulary) and CTC.
const std::string kChild = R"(
[experiment]
name = "child"

[data.train]
plugin = "asterisk"
languages = ["ru"]
max_per_language = 12
batch_seconds = 30.0
)" + kTinyEncoders + R"(
[objectives.ctc]
plugin = "ctc"

[trainer]
steps = 1
warmup_steps = 1
threads = 2
progress = "none"
)";

std::map<std::string, torch::Tensor> parameters_of(torch::nn::Module& m) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : m.named_parameters()) out[p.key()] = p.value().detach().clone();
  return out;
}

bool same(const std::map<std::string, torch::Tensor>& a, const std::map<std::string, torch::Tensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [k, v] : a)
    if (!b.count(k) || !torch::equal(v, b.at(k))) return false;
  return true;
}

struct Parent {
  TempDir dir{"wbtest_finetune_"};
  BuiltinPlugins plugins;
  Runner runner{plugins, RunnerOptions().verbose(false)};
  MemoryRecorder recorder;
  std::string checkpoint;
  Parent() {
    runner.resolve(ExperimentFile::parse_text(kJoint, "parent.toml"));
    runner.configure_runtime();
    runner.prepare_data();
    runner.build_model();
    runner.create_components();
    runner.connect();
    runner.make_trainer(recorder, dir.file("ckpt"));
    runner.train();
    checkpoint = dir.file("ckpt") + "/final.pt";
  }
};

/// The child runner up to make_trainer (its weights loaded, nothing trained).
void build_child(Runner& child, MemoryRecorder& recorder, const std::vector<std::string>& overrides,
                 const std::string& text = kChild) {
  child.resolve(ExperimentFile::parse_text(text, "child.toml", overrides));
  child.configure_runtime();
  child.prepare_data();
  child.build_model();
  child.create_components();
  child.connect();
  child.make_trainer(recorder, "");
}

}  // namespace

TEST_CASE("finetune: [init] loads the encoders as the parent left them - the new head is sized from the new data",
          "[finetune][asterisk]") {
  if (!have_asterisk()) {
    WARN("Asterisk prompts not installed (scripts/install-deps.sh); skipping");
    return;
  }
  Parent parent;
  const auto parent_speech = parameters_of(parent.runner.model().speech_encoder->module());
  const auto parent_shared = parameters_of(parent.runner.model().shared_encoder->module());

  SECTION("default components: every model part the checkpoint has") {
    BuiltinPlugins plugins;
    Runner child(plugins, RunnerOptions().verbose(false));
    MemoryRecorder recorder;
    build_child(child, recorder, {"init.checkpoint=\"" + parent.checkpoint + "\""});
    CHECK(same(parameters_of(child.model().speech_encoder->module()), parent_speech));
    CHECK(same(parameters_of(child.model().shared_encoder->module()), parent_shared));
    // No text embedding is loaded, so the vocabulary is Russian's, and CTC's head is sized from it.
    CHECK(child.vocabulary()->serialize() != parent.runner.vocabulary()->serialize());
    REQUIRE(child.vocabulary()->size() != parent.runner.vocabulary()->size());  // the next section needs it
    auto* head = child.objectives().at(0).loss->module();
    REQUIRE(head != nullptr);
    CHECK(head->parameters().at(0).size(0) == child.vocabulary()->size());
    CHECK(std::get<std::int64_t>(recorder.params.at("derived.init.tensors")) > 0);
    CHECK(std::get<std::string>(recorder.params.at("derived.init.checkpoint")) == parent.checkpoint);
    // And it trains.
    CHECK(child.train().steps == 1);
  }
  SECTION("components = [speech_encoder]: the shared encoder starts new") {
    BuiltinPlugins plugins;
    Runner child(plugins, RunnerOptions().verbose(false));
    MemoryRecorder recorder;
    build_child(child, recorder,
                {"init.checkpoint=\"" + parent.checkpoint + "\"", "init.components=[\"speech_encoder\"]"});
    CHECK(same(parameters_of(child.model().speech_encoder->module()), parent_speech));
    CHECK_FALSE(same(parameters_of(child.model().shared_encoder->module()), parent_shared));
  }
  SECTION("a head of another vocabulary cannot be loaded, and says what to do") {
    BuiltinPlugins plugins;
    Runner child(plugins, RunnerOptions().verbose(false));
    MemoryRecorder recorder;
    CHECK_THROWS_WITH(build_child(child, recorder,
                                  {"init.checkpoint=\"" + parent.checkpoint + "\"",
                                   "init.components=[\"objectives.ctc\"]", "init.vocabulary=\"data\""}),
                      Contains("objectives.ctc") && Contains("leave its component out"));
  }
  SECTION("an unknown component is refused with the ones the run has") {
    BuiltinPlugins plugins;
    Runner child(plugins, RunnerOptions().verbose(false));
    MemoryRecorder recorder;
    CHECK_THROWS_WITH(build_child(child, recorder,
                                  {"init.checkpoint=\"" + parent.checkpoint + "\"", "init.components=[\"decoder\"]"}),
                      Contains("decoder") && Contains("speech_encoder, shared_encoder"));
  }
  SECTION("evaluate() alone on every component reproduces the parent's last evaluation") {
    BuiltinPlugins plugins;
    Runner child(plugins, RunnerOptions().verbose(false));
    MemoryRecorder recorder;
    build_child(child, recorder, {"init.checkpoint=\"" + parent.checkpoint + "\"", "init.components=[\"all\"]"},
                kJoint);
    // Loading a head means keeping the parent's vocabulary.
    CHECK(child.vocabulary()->serialize() == parent.runner.vocabulary()->serialize());
    Metrics m = child.evaluate();
    REQUIRE(recorder.values.count("dev/cer") == 1);
    CHECK(recorder.values["dev/cer"].count(0) == 1);
    CHECK(recorder.values["dev/cer"][0] == Approx(parent.recorder.values["dev/cer"][2]).margin(1e-12));
    CHECK(std::get<std::string>(recorder.params.at("derived.headline_metric")) == "dev/cer");
  }
}

TEST_CASE("finetune: [init] refuses from_run beside checkpoint, and \"all\" beside other names", "[finetune][config]") {
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().verbose(false));
  CHECK_THROWS_WITH(runner.resolve(ExperimentFile::parse_text(kChild + "\n[init]\nfrom_run = 3\ncheckpoint = \"a.pt\"\n",
                                                              "child.toml")),
                    Contains("child.toml") && Contains("either from_run or checkpoint"));
  CHECK_THROWS_WITH(runner.resolve(ExperimentFile::parse_text(
                        kChild + "\n[init]\ncheckpoint = \"a.pt\"\ncomponents = [\"all\", \"speech_encoder\"]\n",
                        "child.toml")),
                    Contains("list it alone"));
  CHECK_THROWS_WITH(runner.resolve(ExperimentFile::parse_text(kChild + "\n[init]\nwhich = \"first\"\n", "child.toml")),
                    Contains("final"));
  CHECK_THROWS_WITH(runner.resolve(ExperimentFile::parse_text(kChild + "\n[init]\ncheckpoint = \"a.pt\"\nwhich = \"best\"\n",
                                                              "child.toml")),
                    Contains("child.toml") && Contains("needs from_run"));
  // Without [init] nothing is loaded and the defaults are recorded in the resolved config.
  const auto& cfg = runner.resolve(ExperimentFile::parse_text(kChild, "child.toml"));
  CHECK_FALSE(cfg.init.active());
  CHECK_THAT(cfg.resolved_toml, Contains("[init]") && Contains("from_run = 0"));
}
