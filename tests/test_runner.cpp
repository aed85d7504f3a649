// The runner's phases, each on its own: resolve, runtime, data (features computed once), model,
// components, capability connection (and its errors, raised before any optimizer exists), trainer and
// training, with every fact going to a RunRecorder. The plugins are the real built-in ones.
#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <ATen/Parallel.h>
#include <c10/core/CPUAllocator.h>
#include <torch/cuda.h>

#include "runner_support.h"
#include "test_support.h"
#include "workbench/error.h"
#include "workbench/registry.h"
#include "workbench/runner.h"
#include "workbench/runtime.h"
#include "workbench/tensor_memory.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;

namespace {

ExperimentFile joint(const std::vector<std::string>& overrides = {}) {
  return ExperimentFile::parse_text(kJoint, "runner.toml", overrides);
}

/// Resolves and builds up to the created components (a dry run: no data).
void build_dry(Runner& runner, const ExperimentFile& file) {
  runner.resolve(file);
  runner.configure_runtime();
  runner.prepare_data();
  runner.build_model();
  runner.create_components();
}

}  // namespace

TEST_CASE("runner: resolve alone gives the config, with the plugins it names", "[runner]") {
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
  const auto& cfg = runner.resolve(joint({"trainer.lr=0.002"}));
  CHECK(cfg.name == "runner-joint");
  CHECK(cfg.trainer.lr() == 0.002);
  CHECK(cfg.text_embedding.kind == PluginKind::TextEmbedding);
  const auto used = runner.plugins_used();
  CHECK(used.size() == 7);  // asterisk, conformer (once), char_embedding, w2v_bert, tlm, ctc, asr
  CHECK(plugins.created.empty());  // resolving builds nothing
  // A text embedding named as an encoder is refused when the config is resolved, not later.
  Runner other(plugins, RunnerOptions().dry_run(true).verbose(false));
  CHECK_THROWS_WITH(other.resolve(joint({"model.text_embedding.plugin=conformer"})),
                    Contains("unknown text_embedding plugin 'conformer'"));
}

TEST_CASE("runner: configure_runtime sets the threads and the device, and refuses a missing GPU", "[runner]") {
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
  runner.resolve(joint({"trainer.threads=1", "trainer.device=\"cpu\""}));
  const auto& rt = runner.configure_runtime();
  CHECK(rt.threads == 1);
  CHECK(at::get_num_threads() == 1);
  CHECK(rt.device.is_cpu());
  CHECK_FALSE(rt.blas.empty());
  if (!torch::cuda::is_available()) {
    Runner gpu(plugins, RunnerOptions().dry_run(true).verbose(false));
    gpu.resolve(joint({"trainer.device=\"cuda\""}));
    CHECK_THROWS_WITH(gpu.configure_runtime(), Contains("CUDA is not available"));
  }
  at::set_num_threads(2);
}

TEST_CASE("runtime: keep_freed_memory (trainer.keep_freed_memory) serves a large buffer from the heap and keeps "
          "it when freed", "[runner][runtime]") {
  // What a step's largest activations need: glibc would mmap a 96 MB block (its threshold is at most
  // 32 MiB), fault its pages in, and unmap it on free, at every step.
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
  runner.resolve(joint({"trainer.threads=1", "trainer.device=\"cpu\""}));  // keep_freed_memory = true by default
  runner.configure_runtime();
  REQUIRE(keep_freed_memory());  // glibc accepts it (the runner's call returns the same)
  const std::size_t bytes = std::size_t{96} << 20;
  const auto before = mallinfo2();
  void* block = std::malloc(bytes);
  REQUIRE(block != nullptr);
  std::memset(block, 1, bytes);
  const auto during = mallinfo2();
  CHECK(during.hblkhd == before.hblkhd);  // no mmap of its own
  CHECK(during.uordblks >= before.uordblks + bytes);
  std::free(block);
  CHECK(mallinfo2().fordblks >= bytes);  // kept in the heap for the next step, not given back
  at::set_num_threads(2);
}

TEST_CASE("runtime: the tensor memory meter counts CPU tensors' bytes, live and at their peak", "[runner][runtime]") {
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
  runner.resolve(joint({"trainer.threads=1", "trainer.device=\"cpu\""}));
  runner.configure_runtime();
  REQUIRE(tensor_memory_meter_installed());
  const std::int64_t base = live_tensor_bytes();
  auto kept = torch::empty({1 << 20}, torch::kFloat32);  // 4 MiB
  CHECK(live_tensor_bytes() == base + (std::int64_t{4} << 20));
  reset_tensor_peak();
  CHECK(peak_tensor_bytes() == live_tensor_bytes());
  {
    auto brief = torch::empty({1 << 21}, torch::kFloat32);  // 8 MiB, freed at once
    CHECK(live_tensor_bytes() == base + (std::int64_t{12} << 20));
  }
  CHECK(live_tensor_bytes() == base + (std::int64_t{4} << 20));
  CHECK(peak_tensor_bytes() == base + (std::int64_t{12} << 20));
  // raw_allocate, which some LibTorch code uses, gives memory the raw deleter frees and uncounts.
  auto* allocator = c10::GetCPUAllocator();
  void* raw = allocator->raw_allocate(1000);
  CHECK(live_tensor_bytes() == base + (std::int64_t{4} << 20) + 1000);
  allocator->raw_deleter()(raw);
  kept = torch::Tensor();
  CHECK(live_tensor_bytes() == base);
  install_tensor_memory_meter();  // a second call changes nothing
  CHECK(live_tensor_bytes() == base);
  at::set_num_threads(2);
}

TEST_CASE("runner: phases refuse to run out of order", "[runner]") {
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
  CHECK_THROWS_AS(runner.configure_runtime(), std::logic_error);
  runner.resolve(joint());
  CHECK_THROWS_AS(runner.prepare_data(), std::logic_error);
  runner.configure_runtime();
  CHECK_THROWS_AS(runner.build_model(), std::logic_error);
  runner.prepare_data();
  CHECK_THROWS_AS(runner.create_components(), std::logic_error);
  runner.build_model();
  CHECK_THROWS_AS(runner.connect(), std::logic_error);
}

TEST_CASE("runner: build_model makes the parts with the dimensions between them", "[runner]") {
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
  runner.resolve(joint());
  runner.configure_runtime();
  runner.prepare_data();
  CHECK(runner.data().empty());  // a dry run loads nothing
  runner.build_model();
  auto& m = runner.model();
  REQUIRE(m.speech_encoder);
  REQUIRE(m.shared_encoder);
  REQUIRE(m.text_embedding);
  CHECK(m.speech_encoder->output_dim() == 32);
  CHECK(m.shared_encoder->output_dim() == 24);
  CHECK(m.text_embedding->output_dim() == 24);
  CHECK(plugins.created["conformer"] == 2);
}

TEST_CASE("runner: connect gives TLM w2v-BERT's codes and sizes its speech head from them", "[runner][capabilities]") {
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
  build_dry(runner, joint());
  auto& tlm = runner.objectives().at(1);
  REQUIRE(tlm.name == "tlm");
  auto head_rows = [&]() -> std::int64_t {
    for (const auto& p : tlm.loss->module()->named_parameters())
      if (p.key() == "speech_head.weight") return p.value().size(0);
    return 0;
  };
  CHECK(head_rows() == 0);  // not before connect: its size comes from the provider
  runner.connect();
  CHECK(head_rows() == 2 * 8);  // G x V of [objectives.w2v_bert]
  // The counts include it.
  bool counted = false;
  for (const auto& [name, n] : runner.parameter_counts())
    if (name == "objectives.tlm") counted = n > 0;
  CHECK(counted);
}

TEST_CASE("runner: a missing capability is a ConfigError at connect, saying what to add", "[runner][capabilities]") {
  BuiltinPlugins plugins;
  {
    Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
    // No w2v_bert objective: its table is renamed, so that tlm's default provider is missing.
    auto file = ExperimentFile::parse_text(
        std::string(kJoint).replace(kJoint.find("[objectives.w2v_bert]"), 21, "[objectives.quantizer]"), "r.toml");
    build_dry(runner, file);
    const std::string msg = error_message<ConfigError>([&] { runner.connect(); });
    CHECK_THAT(msg, Contains("tlm") && Contains("speech codes") && Contains("'w2v_bert'") &&
                        Contains("add a w2v_bert objective") && Contains("code_provider = \"\""));
  }
  {
    Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
    build_dry(runner, joint({"objectives.tlm.code_provider=ctc"}));
    CHECK_THROWS_WITH(runner.connect(), Contains("objective 'ctc' (plugin ctc) gives no speech codes"));
  }
  {
    Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
    build_dry(runner, joint({"evaluators.asr.predictor=w2v_bert"}));
    CHECK_THROWS_WITH(runner.connect(), Contains("asr") && Contains("gives no frame posteriors"));
  }
  {
    Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
    build_dry(runner, joint({"evaluators.asr.predictor=nope"}));
    CHECK_THROWS_WITH(runner.connect(), Contains("frame posteriors") && Contains("add a ctc objective") &&
                                            Contains("objectives: ctc, tlm, w2v_bert"));
  }
  {
    // A text-only TLM needs no provider.
    Runner runner(plugins, RunnerOptions().dry_run(true).verbose(false));
    build_dry(runner, joint({"objectives.tlm.code_provider=\"\""}));
    CHECK_NOTHROW(runner.connect());
  }
}

TEST_CASE("runner: the phases on real data, features prepared once, facts to the recorder", "[runner][asterisk]") {
  if (!have_asterisk()) {
    WARN("Asterisk prompts not installed (scripts/install-deps.sh); skipping");
    return;
  }
  TempDir dir("wbtest_runner_");
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().verbose(false));
  runner.resolve(joint());
  runner.configure_runtime();
  runner.prepare_data();
  // Three objectives train on [data.train]: it is loaded and featurised once.
  CHECK(plugins.created["asterisk"] == 2);  // train and dev, once each
  REQUIRE(runner.data().size() == 2);
  const auto& train = runner.data().at("train");
  CHECK(train.size() > 0);
  CHECK(train.features.size() == train.size());
  CHECK(runner.vocabulary()->size() > 10);
  runner.build_model();
  runner.create_components();
  runner.connect();
  MemoryRecorder recorder;
  Trainer& trainer = runner.make_trainer(recorder, dir.file("ckpt"));
  CHECK(trainer.parameters().size() > 0);
  const TrainResult result = runner.train();
  CHECK(result.steps == 2);
  CHECK(recorder.values.count("train/loss") == 1);
  CHECK(recorder.values.count("tlm/speech_loss") == 1);  // connected: TLM predicts the codes too
  CHECK(recorder.values.count("dev/cer") == 1);
  CHECK(recorder.values["dev/cer"].count(0) == 1);
  CHECK(recorder.values["dev/cer"].count(2) == 1);
  // The trainer's own time per step, outside the plugins' work: recorded, and a part of the step's.
  REQUIRE(recorder.values.count("train/dispatch_ms") == 1);
  REQUIRE(recorder.values.count("train/step_ms") == 1);
  CHECK(recorder.values["train/dispatch_ms"].begin()->second > 0.0);  // clamped at 0: a double count shows as 0
  CHECK(recorder.values["train/dispatch_ms"].begin()->second < recorder.values["train/step_ms"].begin()->second);
  // The step's peak memory: at least the parameters, which are counted from the model's build on.
  REQUIRE(recorder.values.count("train/peak_memory_mb") == 1);
  double parameter_bytes = 0;
  for (const auto& p : trainer.parameters()) parameter_bytes += static_cast<double>(p.numel() * p.element_size());
  CHECK(recorder.values["train/peak_memory_mb"].begin()->second * 1024.0 * 1024.0 > 2 * parameter_bytes);
  REQUIRE(recorder.checkpoints.size() == 1);
  CHECK(recorder.checkpoints[0].kind == "final");
  CHECK(recorder.checkpoints[0].path == dir.file("ckpt") + "/final.pt");
  CHECK(fs::exists(recorder.checkpoints[0].path));
  CHECK(std::get<std::string>(recorder.params.at("derived.headline_metric")) == "dev/cer");
  CHECK(std::get<std::int64_t>(recorder.params.at("derived.steps_done")) == 2);
  CHECK(recorder.params.count("derived.data.train.hours") == 1);
  CHECK(recorder.params.count("derived.parameters.model") == 1);
  CHECK(recorder.params.count("runtime.threads") == 1);
}
