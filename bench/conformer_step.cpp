// Benchmark: one Conformer-CTC training step (forward, backward, Adam), ours against
// torchaudio.models.Conformer with the same dimensions, threads and LibTorch build.
//
// Both run in this one invocation: ours here, the peer as `/usr/bin/python3 bench/conformer_step_peer.py`
// (Debian's python3-torch and python3-torchaudio link the same libtorch 1.13.1 as we do). The input is
// a batch of B utterances of S seconds (80-dim filterbank frames at 100 frames/s) with random
// transcripts. The result line gives ms per step for each and the ratio (peer / ours: above 1 means we
// are faster), and the model's FLOPs per step, counted analytically, as achieved GFLOP/s and as a share
// of the machine's GEMM peak, measured here. --search-splits runs both sides at every split of the cores
// between LibTorch's threads and OpenBLAS's, each in a fresh process, and compares the best of each.
// Run on demand; never from CI (ctest runs one step of it: bench:conformer_step_smoke).
#include <ATen/Parallel.h>
#include <torch/types.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/utils.h>

#include <unistd.h>

#include <algorithm>
#include <array>
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
  bool search_splits = false;
  std::string linear_backend = "auto";  // the conformer's linear_backend
  bool return_freed_memory = false;  // ours without trainer.keep_freed_memory (the default keeps it)
  bool peer_keeps_freed_memory = false;  // the peer with the same glibc setting, through GLIBC_TUNABLES
  std::string profile;  // a Chrome trace of the timed steps (LibTorch's legacy profiler), when set
};

/// The model FLOPs of one training step (forward + backward = 3 x forward, 2 x for the first convolution,
/// whose input needs no gradient; multiply-add = 2 FLOPs), counted
/// for the layers both sides have: the Conv2D subsampling (two 3x3 stride-2 convolutions and the
/// projection), per block two half-step FFNs, the attention projections, QK^T and AV, the conv module's
/// pointwise and depthwise convolutions, and the CTC head. Norms, activations, softmax, the CTC loss and
/// Adam are left out (they are memory-bound, and a few percent of the total), so this is a lower bound on
/// the work done, as model FLOPs are by convention (Chowdhery et al. 2022, appendix B).
double step_flops(const Args& a) {
  const double B = static_cast<double>(a.batch), D = static_cast<double>(a.d_model);
  const double F = static_cast<double>(a.ffn_dim), K = static_cast<double>(a.kernel);
  const double C = static_cast<double>(a.channels > 0 ? a.channels : a.d_model);
  const auto out = [](double n) { return std::floor((n - 3) / 2) + 1; };  // a 3x3 stride-2 conv, no padding
  const double T = std::floor(a.seconds * 100), T1 = out(T), F1 = out(80), T2 = out(T1), F2 = out(F1);
  // conv1 (1 -> C channels) reads the features, which need no gradient: forward and weight gradient, 2x.
  const double conv1 = 2 * T1 * F1 * C * 9;
  double forward = 2 * T2 * F2 * C * C * 9;         // conv2: C -> C
  forward += 2 * T2 * (C * F2) * D;                 // projection to d_model
  const double block = 2 * (2 * 2 * D * F)          // two FFNs, D -> F -> D
                       + 4 * 2 * D * D              // Q, K, V and output projections
                       + 2 * 2 * T2 * D             // QK^T and AV over T2 keys
                       + 2 * D * 2 * D + 2 * D * D  // pointwise D -> 2D (GLU), 2D/2 -> D
                       + 2 * K * D;                 // depthwise
  forward += static_cast<double>(a.layers) * T2 * block;
  forward += 2 * T2 * D * static_cast<double>(a.vocab);  // CTC head
  return B * (3 * forward + 2 * conv1);
}

/// The best GEMM throughput of this machine in GFLOP/s: a 2048 x 2048 float32 matmul, best of 5, at each
/// OpenBLAS thread count from 1 to `cores` (LibTorch's CPU matmul is OpenBLAS's sgemm), the BLAS pool set
/// back afterwards.
double gemm_peak_gflops(int cores) {
  const std::int64_t n = 2048;
  const auto x = torch::randn({n, n}), y = torch::randn({n, n});
  const int before = detect_blas().threads;
  double best = 0;
  for (int t = 1; t <= cores; ++t) {
    if (!set_blas_threads(t) && t > 1) break;
    torch::mm(x, y);  // warm-up
    for (int rep = 0; rep < 5; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      torch::mm(x, y);
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      best = std::max(best, 2.0 * n * n * n / s / 1e9);
    }
  }
  set_blas_threads(before);
  return best;
}

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
linear_backend = "{}"

[data.train]
plugin = "manifest"

[objectives.ctc]
plugin = "ctc"
dropout = 0.0
)",
                                       a.d_model, a.ffn_dim, a.heads, a.layers, a.kernel, a.channels,
                                       a.checkpoint_activations ? "true" : "false", a.linear_backend);
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
  std::unique_ptr<torch::autograd::profiler::RecordProfile> profile;
  for (std::int64_t s = 0; s < a.warmup + a.steps; ++s) {
    if (s == a.warmup && !a.profile.empty())
      profile = std::make_unique<torch::autograd::profiler::RecordProfile>(a.profile);
    auto t0 = std::chrono::steady_clock::now();
    adam.zero_grad();
    auto out = loss->compute(batch, model, StepInfo{s, a.steps});
    out.loss.backward();
    torch::nn::utils::clip_grad_norm_(params, 5.0);
    adam.step();
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    if (s >= a.warmup) times.push_back(ms);
  }
  profile.reset();  // writes the trace
  std::printf("ours:  %lld parameters, median %.1f ms/step over %lld steps\n", static_cast<long long>(count),
              median(times), static_cast<long long>(a.steps));
  std::printf("ours:  %.1f model GFLOP per step, %.1f GFLOP/s\n", step_flops(a) / 1e9,
              step_flops(a) / 1e9 / (median(times) / 1e3));
  // The process's peak resident memory so far (LibTorch 1.13 keeps no CPU allocator statistics): run once
  // with and once without --checkpoint-activations to see what checkpointing saves.
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  std::printf("ours:  peak resident memory %.0f MB (checkpoint_activations = %s)\n", usage.ru_maxrss / 1024.0,
              a.checkpoint_activations ? "true" : "false");
  return median(times);
}

double run_peer(const Args& a, int threads, int blas_threads) {
  std::string cmd = fmt::format(
      "{}OPENBLAS_NUM_THREADS={} {} {} --d-model {} --ffn-dim {} --heads {} --layers {} --kernel {} --channels {} "
      "--vocab {} --batch {} --seconds {} --warmup {} --steps {} --threads {}",
      a.peer_keeps_freed_memory
          ? "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1073741824:glibc.malloc.trim_threshold=1073741824 "
          : "",
      blas_threads > 0 ? blas_threads : threads, a.python, a.peer, a.d_model, a.ffn_dim, a.heads, a.layers,
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

std::string shape_args(const Args& a) {
  return fmt::format("--d-model {} --ffn-dim {} --heads {} --layers {} --kernel {} --channels {} --vocab {} --batch {} "
                     "--seconds {} --warmup {} --steps {}{}{}{}",
                     a.d_model, a.ffn_dim, a.heads, a.layers, a.kernel, a.channels, a.vocab, a.batch, a.seconds,
                     a.warmup, a.steps, a.checkpoint_activations ? " --checkpoint-activations" : "",
                     a.return_freed_memory ? " --return-freed-memory" : "",
                     a.linear_backend == "auto" ? "" : " --linear-backend " + a.linear_backend);
}

/// Ours at one split, in a fresh process (this executable with --no-peer), so that no thread pool carries
/// over from the split before.
double run_ours_fresh(const Args& a, int threads, int blas_threads) {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) throw std::runtime_error("cannot find this executable (/proc/self/exe)");
  self[n] = 0;
  const std::string cmd = fmt::format("{} {} --threads {} --blas-threads {} --no-peer", self, shape_args(a), threads,
                                      blas_threads);
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("cannot run: " + cmd);
  char line[512];
  double ms = -1;
  while (fgets(line, sizeof line, p)) {
    std::sscanf(line, "ours: %*lld parameters, median %lf", &ms);
  }
  const int rc = pclose(p);
  if (rc != 0 || ms < 0) throw std::runtime_error("ours failed (exit " + std::to_string(rc) + "): " + cmd);
  return ms;
}

/// Both sides at every (LibTorch threads, OpenBLAS threads) split of the cores, then the best of each.
int search_splits(const Args& a, int cores) {
  struct Split {
    int threads, blas;
    double ours, peer;
  };
  std::vector<Split> splits;
  for (int t = 1; t <= cores; ++t)
    for (int b = 1; b <= cores; ++b) splits.push_back({t, b, 0, 0});
  for (auto& s : splits) {
    s.ours = run_ours_fresh(a, s.threads, s.blas);
    s.peer = a.no_peer ? 0 : run_peer(a, s.threads, s.blas);
    std::printf("split threads %d / BLAS %d: ours %.1f ms%s\n", s.threads, s.blas, s.ours,
                a.no_peer ? "" : fmt::format(", peer {:.1f} ms", s.peer).c_str());
    std::fflush(stdout);
  }
  const double flops = step_flops(a), peak = gemm_peak_gflops(cores);
  std::printf("\n| threads / BLAS threads | ours (ms/step) | torchaudio (ms/step) | peer/ours |\n|---|---|---|---|\n");
  for (const auto& s : splits) {
    if (a.no_peer)
      std::printf("| %d / %d | %.0f | - | - |\n", s.threads, s.blas, s.ours);
    else
      std::printf("| %d / %d | %.0f | %.0f | %.2f |\n", s.threads, s.blas, s.ours, s.peer, s.peer / s.ours);
  }
  const auto best_ours = *std::min_element(splits.begin(), splits.end(), [](auto& x, auto& y) { return x.ours < y.ours; });
  const auto best_peer = *std::min_element(splits.begin(), splits.end(), [](auto& x, auto& y) { return x.peer < y.peer; });
  std::printf("\nbest of ours: %.1f ms at %d / %d\n", best_ours.ours, best_ours.threads, best_ours.blas);
  if (!a.no_peer)
    std::printf("best of the peer: %.1f ms at %d / %d\n", best_peer.peer, best_peer.threads, best_peer.blas);
  std::printf("model FLOPs: %.1f GFLOP per step; GEMM peak %.1f GFLOP/s (2048^2 sgemm, best BLAS thread count)\n",
              flops / 1e9, peak);
  const auto share = [&](double ms) { return flops / 1e9 / (ms / 1e3) / peak * 100; };
  std::printf("achieved: ours %.1f GFLOP/s (%.0f%% of peak)\n", flops / 1e9 / (best_ours.ours / 1e3),
              share(best_ours.ours));
  if (a.no_peer) return 0;
  std::printf("achieved: peer %.1f GFLOP/s (%.0f%% of peak)\n", flops / 1e9 / (best_peer.peer / 1e3),
              share(best_peer.peer));
  std::printf("ratio: best peer / best ours = %.2f (%s)\n", best_peer.peer / best_ours.ours,
                best_peer.peer >= best_ours.ours ? "workbench is faster" : "workbench is SLOWER");
  return 0;
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
  app.add_option("--profile", a.profile,
                 "write a Chrome trace of our timed steps to this file (bench/profile_summary.py sums it by op)");
  app.add_option("--linear-backend", a.linear_backend, "the conformer's linear_backend: auto, onednn or blas")
      ->capture_default_str();
  app.add_flag("--return-freed-memory", a.return_freed_memory,
               "ours with trainer.keep_freed_memory = false: glibc's default thresholds");
  app.add_flag("--peer-keeps-freed-memory", a.peer_keeps_freed_memory,
               "run the peer with the same glibc thresholds as ours (GLIBC_TUNABLES), to separate the allocator's "
               "share of the ratio from the model's");
  app.add_flag("--search-splits", a.search_splits,
               "run both sides at every split of the cores between LibTorch and OpenBLAS threads, each in a fresh "
               "process, and compare the best of each");
  CLI11_PARSE(app, argc, argv);

  const int threads = a.threads > 0 ? a.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
  // As `workbench run` does (trainer.keep_freed_memory, on by default).
  if (!a.return_freed_memory) keep_freed_memory();
  if (a.blas_threads > 0) set_blas_threads(a.blas_threads);
  std::printf("threads %d, BLAS %s (%d threads), batch %lld x %.1f s\n", threads, detect_blas().name.c_str(),
              detect_blas().threads, static_cast<long long>(a.batch), a.seconds);
  try {
    if (a.search_splits) return search_splits(a, static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
    double ours = run_ours(a);
    if (a.no_peer) return 0;
    double peer = run_peer(a, threads, a.blas_threads);
    std::printf("ratio: peer/ours = %.2f (%s)\n", peer / ours, peer >= ours ? "workbench is faster" : "workbench is SLOWER");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
