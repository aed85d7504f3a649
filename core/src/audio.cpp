#include "workbench/audio.h"

#include <fmt/format.h>
#include <sndfile.h>
#include <soxr.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <system_error>
#include <string>

namespace workbench {
namespace {

struct SndfileCloser {
  void operator()(SNDFILE* f) const noexcept {
    if (f != nullptr) sf_close(f);
  }
};
using SndfilePtr = std::unique_ptr<SNDFILE, SndfileCloser>;

std::string quoted(const std::string& path) { return "'" + path + "'"; }

SndfilePtr open_for_reading(const std::string& path, SF_INFO& info) {
  info = SF_INFO{};
  SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
  if (f == nullptr) {
    // With a null handle sf_strerror reports the error of the last failed sf_open. libsndfile keeps that in a
    // process-wide variable, so with concurrent failing opens the text may come from another thread's open.
    const std::string reason = sf_strerror(nullptr);
    std::error_code ec;
    if (std::filesystem::is_regular_file(path, ec) && std::filesystem::file_size(path, ec) == 0 && !ec) {
      throw AudioError("cannot open " + quoted(path) + ": the file is empty (0 bytes)");
    }
    throw AudioError("cannot open " + quoted(path) + ": " + reason);
  }
  return SndfilePtr(f);
}

// "its data chunk says N bytes, the file holds M" when libsndfile's log of a WAV header reports a data
// size it had to correct ("data : 22468 (should be 7956)"); empty otherwise, and for the sizes streaming
// writers put before they know the length (0, 0xFFFFFFFF).
std::string wav_data_size_mismatch(SNDFILE* f) {
  char log[16384] = {0};
  sf_command(f, SFC_GET_LOG_INFO, log, sizeof log);
  const std::string text(log);
  const auto at = text.find("\ndata : ");
  if (at == std::string::npos) return {};
  const auto end = text.find('\n', at + 1);
  const std::string line = text.substr(at + 1, end == std::string::npos ? std::string::npos : end - at - 1);
  const auto should = line.find("(should be ");
  if (should == std::string::npos) return {};
  unsigned long long stated = 0, actual = 0;
  if (std::sscanf(line.c_str(), "data : %llu", &stated) != 1) return {};
  if (std::sscanf(line.c_str() + should, "(should be %llu", &actual) != 1) return {};
  if (stated == 0 || stated >= 0xFFFFFFF0ull || stated <= actual) return {};
  return fmt::format("its data chunk says {} bytes, the file holds {}", stated, actual);
}

}  // namespace

AudioInfo probe_audio(const std::string& path) {
  SF_INFO info;
  SndfilePtr f = open_for_reading(path, info);
  AudioInfo out;
  out.sample_rate = info.samplerate;
  out.frames = info.frames;
  out.channels = info.channels;
  return out;
}

Audio read_audio(const std::string& path, double max_seconds) {
  SF_INFO info;
  SndfilePtr f = open_for_reading(path, info);
  if (info.channels <= 0 || info.samplerate <= 0) {
    throw AudioError("cannot read " + quoted(path) + ": invalid header (" + std::to_string(info.channels) +
                     " channels, " + std::to_string(info.samplerate) + " Hz)");
  }
  // Integer PCM is normalised to [-1, 1) (divide by 2^(bits-1)); float files are passed through.
  sf_command(f.get(), SFC_SET_NORM_FLOAT, nullptr, SF_TRUE);

  const int channels = info.channels;
  Audio audio;
  audio.sample_rate = info.samplerate;
  const double max_frames = max_seconds * static_cast<double>(info.samplerate);
  auto too_long = [&](const std::string& how_long) {
    return AudioError(fmt::format("cannot read {}: {}, over the limit of {:.0f} s (a whole recording? cut it into "
                                  "utterances)",
                                  quoted(path), how_long, max_seconds));
  };
  const bool header_knows = info.frames > 0 && info.frames != SF_COUNT_MAX;
  if (header_knows && static_cast<double>(info.frames) > max_frames) throw too_long(fmt::format("its header says it is {:.0f} s long", static_cast<double>(info.frames) / info.samplerate));
  // The header's frame count is a hint only (some containers do not know it, or overstate it),
  // so decode in blocks until end of stream.
  if (info.frames > 0 && info.frames < (std::int64_t{1} << 34)) {
    audio.samples.reserve(static_cast<std::size_t>(info.frames));
  }
  constexpr sf_count_t kBlockFrames = 1 << 16;
  std::vector<float> block(static_cast<std::size_t>(kBlockFrames) * static_cast<std::size_t>(channels));
  for (;;) {
    const sf_count_t got = sf_readf_float(f.get(), block.data(), kBlockFrames);
    if (got < 0) break;
    if (got == 0) {
      const int err = sf_error(f.get());
      if (err != SF_ERR_NO_ERROR) {
        throw AudioError("cannot decode " + quoted(path) + ": " + sf_strerror(f.get()));
      }
      break;
    }
    if (static_cast<double>(audio.samples.size() + static_cast<std::size_t>(got)) > max_frames)
      throw too_long(fmt::format("it decodes to more than {:.0f} s", max_seconds));
    if (channels == 1) {
      audio.samples.insert(audio.samples.end(), block.begin(), block.begin() + got);
    } else {
      const float scale = 1.0f / static_cast<float>(channels);
      for (sf_count_t i = 0; i < got; ++i) {
        const float* frame = block.data() + i * channels;
        float sum = 0.0f;
        for (int c = 0; c < channels; ++c) sum += frame[c];
        audio.samples.push_back(sum * scale);
      }
    }
  }
  if (audio.samples.empty()) {
    const int err = sf_error(f.get());
    if (err != SF_ERR_NO_ERROR) {
      throw AudioError("cannot decode " + quoted(path) + ": " + sf_strerror(f.get()));
    }
    throw AudioError("audio file " + quoted(path) + " contains no audio frames");
  }
  if (header_knows && static_cast<std::int64_t>(audio.samples.size()) < info.frames)
    throw AudioError(fmt::format("cannot decode {}: truncated or corrupt: its header promises {} frames ({:.2f} s), "
                                 "only {} could be decoded",
                                 quoted(path), info.frames, static_cast<double>(info.frames) / info.samplerate,
                                 audio.samples.size()));
  // libsndfile shortens a WAV's frame count to the bytes the file holds and says so only in its log.
  if (const std::string lie = wav_data_size_mismatch(f.get()); !lie.empty())
    throw AudioError(fmt::format("cannot decode {}: truncated: {}", quoted(path), lie));
  // Float files are passed through as stored, NaN and infinity included, and one such sample would make
  // every feature of its frames, and the loss, non-finite.
  for (std::size_t i = 0; i < audio.samples.size(); ++i)
    if (!std::isfinite(audio.samples[i]))
      throw AudioError(fmt::format("cannot decode {}: sample {} ({:.3f} s) is {} (a float file with damaged data)",
                                   quoted(path), i, static_cast<double>(i) / audio.sample_rate,
                                   std::isnan(audio.samples[i]) ? "NaN" : "infinite"));
  return audio;
}

std::vector<float> resample(const std::vector<float>& in, double from_hz, double to_hz) {
  if (!(std::isfinite(from_hz) && from_hz > 0.0 && std::isfinite(to_hz) && to_hz > 0.0)) {
    throw AudioError(fmt::format("cannot resample from {} Hz to {} Hz: sample rates must be positive and finite",
                                 from_hz, to_hz));
  }
  if (from_hz == to_hz || in.empty()) return in;

  const double ratio = to_hz / from_hz;
  const auto expected = static_cast<std::size_t>(std::llround(static_cast<double>(in.size()) * ratio));
  // Leave headroom: soxr_oneshot flushes the filter tail and may produce a sample or two more.
  std::vector<float> out(expected + 16);
  std::size_t idone = 0;
  std::size_t odone = 0;
  const soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
  const soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
  const soxr_runtime_spec_t runtime = soxr_runtime_spec(1);
  const soxr_error_t err = soxr_oneshot(from_hz, to_hz, 1, in.data(), in.size(), &idone, out.data(), out.size(),
                                        &odone, &io, &quality, &runtime);
  if (err != nullptr) {
    throw AudioError(fmt::format("cannot resample from {} Hz to {} Hz: soxr: {}", from_hz, to_hz, err));
  }
  // Normalise the length so that it depends only on the input length and the ratio.
  out.resize(odone);
  out.resize(expected, 0.0f);
  return out;
}

void write_audio(const std::string& path, const Audio& audio) {
  if (audio.samples.empty()) throw AudioError("cannot write " + quoted(path) + ": no samples");
  if (audio.sample_rate <= 0 || audio.sample_rate > std::int64_t{1} << 30) {
    throw AudioError("cannot write " + quoted(path) + ": invalid sample rate " + std::to_string(audio.sample_rate));
  }
  std::string ext;
  const std::size_t dot = path.find_last_of('.');
  const std::size_t slash = path.find_last_of('/');
  if (dot != std::string::npos && (slash == std::string::npos || dot > slash)) ext = path.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  int format = 0;
  if (ext == "wav") {
    format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
  } else if (ext == "flac") {
    format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
  } else if (ext == "ogg") {
    format = SF_FORMAT_OGG | SF_FORMAT_VORBIS;
  } else if (ext == "opus") {
    format = SF_FORMAT_OGG | SF_FORMAT_OPUS;
  } else {
    throw AudioError("cannot write " + quoted(path) + ": unknown extension '" + ext +
                     "' (expected .wav, .flac, .ogg or .opus)");
  }
  SF_INFO info{};
  info.samplerate = static_cast<int>(audio.sample_rate);
  info.channels = 1;
  info.format = format;
  if (sf_format_check(&info) == SF_FALSE) {
    throw AudioError("cannot write " + quoted(path) + ": libsndfile does not support ." + ext + " at " +
                     std::to_string(audio.sample_rate) + " Hz");
  }
  SNDFILE* raw = sf_open(path.c_str(), SFM_WRITE, &info);
  if (raw == nullptr) throw AudioError("cannot open " + quoted(path) + " for writing: " + sf_strerror(nullptr));
  SndfilePtr f(raw);
  sf_command(f.get(), SFC_SET_CLIPPING, nullptr, SF_TRUE);
  const auto n = static_cast<sf_count_t>(audio.samples.size());
  if (sf_writef_float(f.get(), audio.samples.data(), n) != n) {
    throw AudioError("cannot write " + quoted(path) + ": " + sf_strerror(f.get()));
  }
  // sf_close flushes (and, for compressed formats, encodes the tail); report its failure too.
  const int err = sf_close(f.release());
  if (err != 0) throw AudioError("cannot write " + quoted(path) + ": " + sf_error_number(err));
}

Audio load_audio(const std::string& path, std::int64_t target_rate, double max_seconds) {
  if (target_rate <= 0) {
    throw AudioError("cannot load " + quoted(path) + ": target sample rate must be positive, got " +
                     std::to_string(target_rate) + " Hz");
  }
  Audio audio = read_audio(path, max_seconds);
  if (audio.sample_rate != target_rate) {
    try {
      audio.samples = resample(audio.samples, static_cast<double>(audio.sample_rate),
                               static_cast<double>(target_rate));
    } catch (const AudioError& e) {
      throw AudioError("cannot load " + quoted(path) + ": " + e.what());
    }
    audio.sample_rate = target_rate;
  }
  return audio;
}

}  // namespace workbench
