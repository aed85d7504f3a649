// libFuzzer target: read_audio, the one decoder every dataset goes through.
//
// Each input is written to a file (read_audio takes a path, and reading the path is what a dataset does)
// and decoded. It must end in non-empty audio of finite samples within the length limit, or in an
// AudioError; anything else is a bug. The limit is 10 s so that a header claiming hours
// is refused by the check under test, not by the fuzzer's memory limit.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "workbench/audio.h"

namespace {

const std::string& scratch_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    std::atexit([] { std::remove(scratch_path().c_str()); });
    return std::string(dir && *dir ? dir : "/tmp") + "/wb_fuzz_audio_" + std::to_string(::getpid());
  }();
  return path;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string& path = scratch_path();
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  try {
    workbench::Audio audio = workbench::read_audio(path, 10.0);
    if (audio.samples.empty() || audio.sample_rate <= 0) std::abort();
    if (audio.duration_seconds() > 10.0 + 1e-9) std::abort();
    for (float x : audio.samples)
      if (!std::isfinite(x)) std::abort();
  } catch (const workbench::AudioError&) {
  }
  return 0;
}
