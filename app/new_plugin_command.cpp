// `workbench new-plugin loss NAME [--dir D]`: writes a small out-of-tree plugin project that builds
// against the installed SDK (find_package(workbench) + workbench_add_plugin) and an experiment that
// runs it. The loss it starts from is real: spoken language identification from the pooled speech
// encoder output, cross-entropy over the languages of the batch.
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include <fmt/format.h>

#include "commands.h"
#include "workbench/error.h"
#include "workbench/registry.h"

namespace workbench::app {

namespace fs = std::filesystem;

namespace {

const char* kCMake = R"(cmake_minimum_required(VERSION 3.22)
project(@NAME@ LANGUAGES CXX)
set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)

# Point CMAKE_PREFIX_PATH at the workbench install prefix (and Torch_DIR at the same LibTorch the
# workbench was built with, if it is not Debian's).
find_package(workbench REQUIRED)
workbench_add_plugin(@NAME@ SOURCES @NAME@.cpp)
)";

const char* kSource = R"(// @NAME@: a workbench loss plugin. Spoken language identification: mean-pool the speech encoder's
// context vectors over valid frames, a linear layer, cross-entropy against the utterance's language.
// Build: cmake -S . -B build -DCMAKE_PREFIX_PATH=<workbench prefix> && cmake --build build
#include <algorithm>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>

#include <workbench/error.h>
#include <workbench/loss.h>
#include <workbench/plugin.h>

namespace {

struct HeadImpl : torch::nn::Module {
  HeadImpl(std::int64_t dim, std::int64_t classes) { linear = register_module("linear", torch::nn::Linear(dim, classes)); }
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(Head);

class LanguageIdLoss final : public workbench::Loss {
 public:
  LanguageIdLoss(const workbench::Options& options, const workbench::BuildContext& context)
      : languages_(options.get_strings("languages")) {
    if (languages_.empty()) options.fail("languages", "needs at least one language");
    // It reads the speech encoder's output, whose width is speech_dim; model_dim is the shared
    // encoder's, which differs from it whenever the experiment has one.
    head_ = Head(context.speech_dim, static_cast<std::int64_t>(languages_.size()));
    head_->to(context.device);
  }

  std::vector<workbench::BatchKind> accepts() const override {
    return {workbench::BatchKind::Paired, workbench::BatchKind::Speech};
  }
  torch::nn::Module* module() override { return head_.get(); }

  workbench::LossOutput compute(const workbench::Batch& batch, workbench::ModelParts& model,
                                const workbench::StepInfo&) override {
    if (!model.speech_encoder) throw workbench::ConfigError("@NAME@ needs [model.speech_encoder]");
    auto encoded = model.speech_encoder->forward(batch.features, batch.feature_lengths);
    auto pooled = workbench::masked_mean(encoded.x, encoded.lengths);  // (B, T, D) -> (B, D)
    auto logits = head_->linear(pooled);
    std::vector<std::int64_t> ids;
    for (const auto& lang : batch.langs) {
      auto it = std::find(languages_.begin(), languages_.end(), lang);
      if (it == languages_.end()) throw workbench::DataError("@NAME@: language '" + lang + "' is not in its languages option");
      ids.push_back(it - languages_.begin());
    }
    auto targets = torch::tensor(ids, torch::kInt64).to(logits.device());
    auto loss = torch::nn::functional::cross_entropy(logits, targets);
    workbench::LossOutput out;
    out.loss = loss;
    out.metrics.emplace_back("loss", loss.detach());
    out.metrics.emplace_back("accuracy", (logits.detach().argmax(-1) == targets).to(torch::kFloat32).mean());
    return out;
  }

 private:
  std::vector<std::string> languages_;
  Head head_{nullptr};
};

workbench::PluginDescriptor describe() {
  return workbench::describe_plugin<LanguageIdLoss>(
      workbench::PluginKind::Loss, "@NAME@", "0.1.0", "spoken language identification from the pooled speech encoder output",
      workbench::OptionSchema().add_strings("languages", {"en", "es", "fr", "it", "ru"}, "the languages to tell apart"));
}

}  // namespace

WORKBENCH_PLUGIN(describe)
)";

const char* kExperiment = R"(# A few steps of the @NAME@ loss next to CTC on a small slice of the Asterisk prompts.
#   workbench run experiment.toml
[experiment]
name = "@NAME@-smoke"

[plugins]
paths = ["build"]

[data.train]
plugin = "asterisk"
split = "train"
max_per_language = 16

[model.speech_encoder]
plugin = "conformer"
d_model = 64
ffn_dim = 128
heads = 2
layers = 1
kernel_size = 7
subsampling_channels = 8

# A shared encoder narrower than the speech encoder: @NAME@ reads the speech encoder (64 wide), CTC the
# shared encoder (48 wide).
[model.shared_encoder]
plugin = "conformer"
frontend = "projection"
d_model = 48
ffn_dim = 96
heads = 2
layers = 1
kernel_size = 7

[objectives.ctc]
plugin = "ctc"

[objectives.@NAME@]
plugin = "@NAME@"
weight = 0.5

[trainer]
steps = 5
warmup_steps = 2
log_every = 1
)";

std::string fill(std::string text, const std::string& name) {
  return std::regex_replace(text, std::regex("@NAME@"), name);
}

void write(const fs::path& path, const std::string& text) {
  std::ofstream out(path);
  if (!out) throw Error(fmt::format("cannot write '{}'", path.string()));
  out << text;
}

}  // namespace

int new_plugin_command(const std::string& kind, const std::string& name, const std::string& dir_in) {
  if (kind != "loss")
    throw ConfigError(fmt::format("new-plugin: only 'loss' templates exist so far (got '{}')", kind));
  if (!std::regex_match(name, std::regex("[A-Za-z_][A-Za-z0-9_]*")))
    throw ConfigError(fmt::format("new-plugin: '{}' is not a valid name (letters, digits and '_'; not starting "
                                  "with a digit)", name));
  fs::path dir = dir_in.empty() ? fs::path(name) : fs::path(dir_in);
  if (fs::exists(dir / "CMakeLists.txt"))
    throw Error(fmt::format("new-plugin: '{}' already holds a CMakeLists.txt; not overwriting it", dir.string()));
  fs::create_directories(dir);
  write(dir / "CMakeLists.txt", fill(kCMake, name));
  write(dir / (name + ".cpp"), fill(kSource, name));
  write(dir / "experiment.toml", fill(kExperiment, name));
  fmt::print("wrote {}/{{CMakeLists.txt, {}.cpp, experiment.toml}}\n", dir.string(), name);
  // The prefix this workbench runs from: <prefix>/lib/workbench/plugins holds its built-in plugins. In a
  // build tree that is the build folder, whose CMake package is not installed: say so.
  const fs::path prefix = fs::path(Registry::builtin_plugin_dir()).parent_path().parent_path().parent_path();
  const bool installed = fs::exists(prefix / "lib" / "cmake" / "workbench" / "workbenchConfig.cmake");
  const std::string where = installed ? fs::absolute(prefix).lexically_normal().string() : "<workbench prefix>";
  fmt::print("build:  cmake -S {0} -B {0}/build -DCMAKE_PREFIX_PATH={1} && cmake --build {0}/build\n", dir.string(),
             where);
  if (!installed)
    fmt::print("        (this workbench runs from a build tree; install it first: cmake --install <build> --prefix P)\n");
  fmt::print("run:    cd {} && {} run experiment.toml\n", dir.string(),
             installed ? (fs::absolute(prefix) / "bin" / "workbench").lexically_normal().string() : "workbench");
  return 0;
}

}  // namespace workbench::app
