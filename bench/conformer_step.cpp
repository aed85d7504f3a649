// Benchmark: one Conformer-CTC training step (forward, backward, Adam), ours against
// torchaudio.models.Conformer with the same dimensions, threads and LibTorch build.
//
// Both run in this one invocation: ours here, the peer as `/usr/bin/python3 bench/conformer_step_peer.py`
// (Debian's python3-torch and python3-torchaudio link the same libtorch 1.13.1 as we do). The input is
// a batch of B utterances of S seconds (80-dim filterbank frames at 100 frames/s) with random
// transcripts. The result line gives ms per step for each and the ratio (peer / ours: above 1 means we
// are faster). Run on demand; never from CI.
#include <ATen/Parallel.h>
#include <torch/types.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "workbench/encoder.h"
#include "workbench/experiment.h"
#include "workbench/loss.h"
#include "workbench/registry.h"
#include "workbench/runtime.h"
#include "workbench/vocabulary.h"

using namespace workbench;

namespace {

struct Args {
  std::int64_t d_model = 144, ffn_dim = 576, heads = 4, layers = 4, kernel = 31, channels = 0, vocab = 100;
  std::int64_t batch = 8, warmup = 3, steps = 10;
  double seconds = 10.0;
  int threads = 0, blas_threads = 1;
  std::string peer = std::string(WORKBENCH_SOURCE_DIR) + "/bench/conformer_step_peer.py";
  std::string python = "/usr/bin/python3";
  bool no_peer = false;
  bool checkpoint_activations = false;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double run_ours(const Args& a) {
  Registry registry;
  registry.load_directory(Registry::builtin_plugin_dir());
  // The options go through the same schema resolution as a run's, so that every key the conformer has
  // grown since gets its default and a key it lost is an error here too.
  const std::string toml = fmt::format(R"([model.speech_encoder]
plugin = "conformer"
d_model = {}
ffn_dim = {}
heads = {}
layers = {}
kernel_size = {}
conv_norm = "batch"
subsampling_channels = {}
dropout = 0.1
checkpoint_activations = {}

[data.train]
plugin = "manifest"

[objectives.ctc]
plugin = "ctc"
dropout = 0.0
)",
                                       a.d_model, a.ffn_dim, a.heads, a.layers, a.kernel, a.channels,
                                       a.checkpoint_activations ? "true" : "false");
  const ExperimentConfig cfg = ExperimentFile::parse_text(toml, "bench_conformer_step.toml")
                                   .resolve([&](PluginKind kind, const std::string& name,
                                                const std::string& where) -> const OptionSchema& {
                                     return registry.get(kind, name, where).descriptor.options;
                                   });
  const Options& enc = cfg.speech_encoder.options;
  BuildContext ctx;
  ctx.input_dim = 80;
  ModelParts model;
  model.speech_encoder = registry.create_as<Encoder>(PluginKind::Encoder, "conformer", enc, ctx);
  std::string chars;
  for (std::int64_t i = 0; i < a.vocab - 2; ++i) chars += static_cast<char>(33 + i % 90);
  ctx.vocabulary = std::make_shared<const Vocabulary>(Vocabulary::from_texts({chars}));
  ctx.model_dim = a.d_model;
  const Options& loss_opts = cfg.objectives.at(0).options;
  auto loss = registry.create_as<Loss>(PluginKind::Loss, "ctc", loss_opts, ctx);

  std::vector<torch::Tensor> params;
  for (auto& p : model.speech_encoder->module().parameters()) params.push_back(p);
  for (auto& p : loss->module()->parameters()) params.push_back(p);
  std::int64_t count = 0;
  for (auto& p : params) count += p.numel();
  torch::optim::Adam adam(params, torch::optim::AdamOptions(1e-4));

  torch::manual_seed(0);
  const auto frames = static_cast<std::int64_t>(a.seconds * 100);
  Batch batch;
  batch.features = torch::randn({a.batch, frames, 80});
  batch.feature_lengths = torch::full({a.batch}, frames, torch::kInt64);
  const std::int64_t label_len = static_cast<std::int64_t>(a.seconds * 12);  // about 12 characters per second
  batch.tokens = torch::randint(2, ctx.vocabulary->size(), {a.batch, label_len}, torch::kInt64);
  batch.token_lengths = torch::full({a.batch}, label_len, torch::kInt64);
  batch.ids.assign(static_cast<std::size_t>(a.batch), "x");

  std::vector<double> times;
  for (std::int64_t s = 0; s < a.warmup + a.steps; ++s) {
    auto t0 = std::chrono::steady_clock::now();
    adam.zero_grad();
    auto out = loss->compute(batch, model, StepInfo{s, a.steps});
    out.loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 5.0);
    adam.step();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= a.warmup) times.push_back(ms);
  }
  std::printf("ours:  %lld parameters, median %.1f ms/step over %lld steps\n", static_cast<long long>(count),
              median(times), static_cast<long long>(a.steps));
  // The process's peak resident memory so far (LibTorch 1.13 keeps no CPU allocator statistics): run once
  // with and once without --checkpoint-activations to see what checkpointing saves.
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("ours:  peak resident memory %.0f MB (checkpoint_activations = %s)\n", usage.ru_maxrss / 1024.0,
              a.checkpoint_activations ? "true" : "false");
  return median(times);
}

double run_peer(const Args& a, int threads) {
  std::string cmd = fmt::format(
      "OPENBLAS_NUM_THREADS={} {} {} --d-model {} --ffn-dim {} --heads {} --layers {} --kernel {} --channels {} "
      "--vocab {} --batch {} --seconds {} --warmup {} --steps {} --threads {}",
      a.blas_threads > 0 ? a.blas_threads : threads, a.python, a.peer, a.d_model, a.ffn_dim, a.heads, a.layers,
      a.kernel, a.channels > 0 ? a.channels : a.d_model, a.vocab, a.batch, a.seconds, a.warmup, a.steps, threads);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run the peer: " + cmd);
  char line[512];
  double ms = -1;
  while (fgets(line, sizeof line, p)) {
    std::fputs(line, stdout);
    std::sscanf(line, "peer: %*lld parameters, median %lf", &ms);
  }
  int rc = pclose(p);
  if (rc != 0 || ms < 0) throw std::runtime_error("the peer failed (exit " + std::to_string(rc) + "): " + cmd);
  return ms;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  CLI::App app{"Conformer-CTC training step: workbench vs torchaudio.models.Conformer"};
  app.add_option("--d-model", a.d_model)->capture_default_str();
  app.add_option("--ffn-dim", a.ffn_dim)->capture_default_str();
  app.add_option("--heads", a.heads)->capture_default_str();
  app.add_option("--layers", a.layers)->capture_default_str();
  app.add_option("--kernel", a.kernel)->capture_default_str();
  app.add_option("--channels", a.channels, "subsampling channels (0 = d_model)")->capture_default_str();
  app.add_option("--vocab", a.vocab)->capture_default_str();
  app.add_option("--batch", a.batch)->capture_default_str();
  app.add_option("--seconds", a.seconds, "audio per utterance (s)")->capture_default_str();
  app.add_option("--warmup", a.warmup)->capture_default_str();
  app.add_option("--steps", a.steps)->capture_default_str();
  app.add_option("--threads", a.threads, "intra-op threads (0 = cores)")->capture_default_str();
  app.add_option("--blas-threads", a.blas_threads, "OpenBLAS threads for both (0 = leave)")->capture_default_str();
  app.add_option("--peer", a.peer)->capture_default_str();
  app.add_flag("--no-peer", a.no_peer);
  app.add_flag("--checkpoint-activations", a.checkpoint_activations,
               "the conformer's checkpoint_activations: each block computed again in the backward pass");
  CLI11_PARSE(app, argc, argv);

  const int threads = a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  if (a.blas_threads > 0) set_blas_threads(a.blas_threads);
  std::printf("threads %d, BLAS %s (%d threads), batch %lld x %.1f s\n", threads, detect_blas().name.c_str(),
              detect_blas().threads, static_cast<long long>(a.batch), a.seconds);
  try {
    double ours = run_ours(a);
    if (a.no_peer) return 0;
    double peer = run_peer(a, threads);
    std::printf("ratio: peer/ours = %.2f (%s)\n", peer / ours, peer >= ours ? "workbench is faster" : "workbench is SLOWER");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
