// The log-mel filterbank (core/src/fbank.cpp) against its peer, torchaudio.compliance.kaldi.fbank, on the
// same waveform with the same options, one thread each by default (the "per thread"): both run
// in this invocation, the peer as `/usr/bin/python3 bench/fbank_peer.py`. Prints the best time of each,
// the ratio (peer / ours: above 1 means we are faster) and the largest difference between the two
// feature matrices, and fails when that exceeds 1e-3. See bench/README.md.
//
// The waveform is real speech: the English Asterisk prompts (8 kHz) in name order, resampled to 16 kHz
// and rounded to 16-bit samples, concatenated up to --seconds.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "workbench/audio.h"
#include "workbench/fbank.h"
#include "workbench/npy.h"

namespace fs = std::filesystem;

namespace {

torch::Tensor speech(double seconds) {
  std::vector<float> all;
  const fs::path dir = "/usr/share/asterisk/sounds/en";
  std::vector<fs::path> files;
  if (fs::exists(dir))
    for (const auto& e : fs::directory_iterator(dir))
      if (e.path().extension() == ".wav") files.push_back(e.path());
  std::sort(files.begin(), files.end());
  const auto wanted = static_cast<std::size_t>(seconds * 16000);
  for (const auto& f : files) {
    if (all.size() >= wanted) break;
    auto a = workbench::load_audio(f.string(), 16000);
    all.insert(all.end(), a.samples.begin(), a.samples.end());
  }
  if (all.empty()) {  // no Asterisk prompts installed: a chirp, so that the smoke test still runs
    for (std::size_t t = 0; t < wanted; ++t) all.push_back(0.3f * static_cast<float>(std::sin(1e-4 * t * t / 16.0)));
  }
  while (all.size() < wanted) all.insert(all.end(), all.begin(), all.begin() + std::min(all.size(), wanted - all.size()));
  all.resize(wanted);
  // Rounded to 16-bit samples, as a 16 kHz recording would hold them: resampled from 8 kHz and kept in
  // float, the band above 4 kHz would hold only rounding noise, whose logarithm no two FFTs agree on.
  return (torch::from_blob(all.data(), {static_cast<std::int64_t>(all.size())}, torch::kFloat32) * 32768.0)
      .round()
      .clamp(-32768, 32767);
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 60;
  int threads = 1, reps = 5;
  bool no_peer = false, keep = false;
  std::string python = "/usr/bin/python3", peer = std::string(WORKBENCH_SOURCE_DIR) + "/bench/fbank_peer.py";
  CLI::App app{"log-mel filterbank: workbench's compute_fbank vs torchaudio.compliance.kaldi.fbank"};
  // At least one 25 ms frame; CLI11 refuses anything else with a message, rather than compute_fbank throwing.
  app.add_option("--seconds", seconds, "seconds of 16 kHz speech (at least one 25 ms frame)")
      ->capture_default_str()
      ->check(CLI::Range(0.025, 36000.0));
  app.add_option("--threads", threads, "intra-op threads, for both")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--reps", reps, "repetitions; the best is reported")->capture_default_str()->check(CLI::PositiveNumber);
  app.add_option("--python", python)->capture_default_str();
  app.add_option("--peer", peer)->capture_default_str();
  app.add_flag("--no-peer", no_peer, "run only ours (the ctest smoke)");
  app.add_flag("--keep", keep, "keep the waveform and both feature matrices (.npy) in the temporary folder");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);

  const torch::Tensor wave = speech(seconds);
  const workbench::FbankOptions options;
  torch::Tensor ours;
  double best = std::numeric_limits<double>::infinity();
  {
    torch::NoGradGuard no_grad;
    for (int r = 0; r < reps; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      ours = workbench::compute_fbank(wave, options);
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  std::printf("fbank of %.1f s of 16 kHz speech, 80 bins, %d thread(s): %lld frames\n", seconds, threads,
              static_cast<long long>(ours.size(0)));
  std::printf("ours: best %.3f ms (%.2f s per hour of audio)\n", best, best / seconds * 3.6);
  if (no_peer) return 0;

  const fs::path tmp = fs::temp_directory_path() / ("wb_bench_fbank_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  workbench::write_npy((tmp / "wave.npy").string(), wave);
  const std::string cmd = fmt::format("OMP_NUM_THREADS={} '{}' '{}' --wave '{}' --out '{}' --threads {} --reps {}",
                                      threads, python, peer, (tmp / "wave.npy").string(),
                                      (tmp / "peer.npy").string(), threads, reps);
  FILE* p = popen(cmd.c_str(), "r");
  double peer_ms = -1;
  char line[512];
  while (p && std::fgets(line, sizeof line, p)) {
    std::fputs(line, stdout);
    std::sscanf(line, "peer: %*lld frames, best %lf", &peer_ms);
  }
  const int rc = p ? pclose(p) : -1;
  if (rc != 0 || peer_ms < 0) {
    std::fprintf(stderr, "the peer failed: %s\n", cmd.c_str());
    return 1;
  }
  const torch::Tensor theirs = workbench::read_npy((tmp / "peer.npy").string());
  if (keep) {
    workbench::write_npy((tmp / "ours.npy").string(), ours);
    std::printf("kept in %s: wave.npy, ours.npy, peer.npy\n", tmp.c_str());
  } else {
    fs::remove_all(tmp);
  }
  if (theirs.sizes() != ours.sizes()) {
    std::fprintf(stderr, "the peer gave %lld frames, we gave %lld\n", static_cast<long long>(theirs.size(0)),
                 static_cast<long long>(ours.size(0)));
    return 1;
  }
  const double diff = (theirs - ours).abs().max().item<double>();
  std::printf("ratio: peer/ours = %.2f (%s); largest difference %.2e\n", peer_ms / best,
              peer_ms >= best ? "workbench is faster" : "workbench is SLOWER", diff);
  return diff <= 1e-3 ? 0 : 1;
}
