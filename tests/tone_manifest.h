#pragma once
// A manifest of synthetic utterances for the tests that run the real executable: tones at 8 kHz (so
// that reading them exercises resampling), each with a short transcript over "a", "b" and " ".
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "test_support.h"
#include "workbench/audio.h"

namespace workbench::testing {

/// A manifest of `n` short synthetic utterances (tones at 8 kHz, to exercise resampling) with transcripts.
inline std::string write_manifest(const TempDir& dir, int n) {
  std::filesystem::create_directories(dir.path / "audio");
  std::string tsv = "id\tpath\ttext\tlang\n";
  const std::vector<std::string> texts = {"ab", "ba", "Aab", "bb a", "a", "ab  ab"};
  for (int i = 0; i < n; ++i) {
    Audio a;
    a.sample_rate = 8000;
    const int samples = 4000 + 1200 * i;  // 0.5 s, then 0.15 s longer each
    a.samples.resize(static_cast<std::size_t>(samples));
    for (int t = 0; t < samples; ++t)
      a.samples[static_cast<std::size_t>(t)] =
          static_cast<float>(0.2 * std::sin(2 * 3.14159265358979323846 * (300 + 50 * i) * t / 8000.0));
    const std::string rel = "audio/utt" + std::to_string(i) + ".wav";
    write_audio(dir.file(rel), a);
    tsv += "utt" + std::to_string(i) + "\t" + rel + "\t" + texts[static_cast<std::size_t>(i) % texts.size()] + "\tzz\n";
  }
  const std::string path = dir.file("manifest.tsv");
  write_file(path, tsv);
  return path;
}

}  // namespace workbench::testing
