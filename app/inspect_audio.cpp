#include <cstdio>
#include <stdexcept>

#include <fmt/format.h>

#include "commands.h"
#include "workbench/audio.h"
#include "workbench/fbank.h"
#include "workbench/npy.h"

namespace workbench::app {

int inspect_audio_command(const InspectArgs& args) {
  AudioInfo info = probe_audio(args.file);
  Audio audio = load_audio(args.file, args.sample_rate);
  auto wave = torch::from_blob(audio.samples.data(), {static_cast<std::int64_t>(audio.samples.size())}, torch::kFloat32)
                  .mul(32768.0f);
  torch::Tensor feats;
  try {
    feats = compute_fbank(wave, FbankOptions().num_mel_bins(args.num_mel_bins).sample_rate(args.sample_rate));
  } catch (const std::invalid_argument& e) {
    throw AudioError(fmt::format("'{}': {}", args.file, e.what()));  // too short for one frame, most likely
  }
  fmt::print("file:         {}\n", args.file);
  fmt::print("sample rate:  {} Hz (channels {}, {} frames)\n", info.sample_rate, info.channels, info.frames);
  fmt::print("duration:     {:.3f} s\n", static_cast<double>(info.frames) / static_cast<double>(info.sample_rate));
  fmt::print("resampled to: {} Hz, {} samples\n", args.sample_rate, audio.samples.size());
  fmt::print("filterbank:   ({}, {}) = (frames at 10 ms hop, mel bins), log-mel, Kaldi-compatible\n", feats.size(0),
             feats.size(1));
  if (!args.npy.empty()) {
    write_npy(args.npy, feats);
    fmt::print("wrote:        {}\n", args.npy);
  }
  return 0;
}

}  // namespace workbench::app
