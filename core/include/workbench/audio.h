#pragma once
// Audio file input and sample-rate conversion.
//
// Reading goes through libsndfile, so every container/codec that the installed libsndfile supports
// works (WAV, FLAC, Ogg/Vorbis, Ogg/Opus, AIFF, ...). Resampling goes through libsoxr.
// Samples are always returned as mono float in [-1, 1): libsndfile normalises integer PCM by
// 2^(bits-1), so 16-bit PCM sample k becomes k / 32768 exactly (multiply by 32768 to get back
// Kaldi-style int16 units, see fbank.h).

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace workbench {

/// Header information of an audio file, without decoding it.
struct AudioInfo {
  std::int64_t sample_rate = 0;  ///< Hz
  std::int64_t frames = 0;       ///< samples per channel, as reported by the file header
  int channels = 0;
};

/// Mono audio.
struct Audio {
  std::vector<float> samples;    ///< mono samples, nominally in [-1, 1)
  std::int64_t sample_rate = 0;  ///< Hz

  /// Duration in seconds (0 when sample_rate is 0).
  double duration_seconds() const {
    return sample_rate > 0 ? static_cast<double>(samples.size()) / static_cast<double>(sample_rate) : 0.0;
  }
};

/// Any failure to open, decode or resample audio. The message always names the file (when there is one)
/// and carries libsndfile's / libsoxr's own error text, e.g.
/// "cannot open '/x/y.wav': System error : No such file or directory".
class AudioError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Reads the header of `path` (sample rate in Hz, frames per channel, channel count).
/// Throws AudioError if the file cannot be opened or is not a format libsndfile understands.
AudioInfo probe_audio(const std::string& path);

/// The longest file read_audio decodes by default (s): one hour, about 230 MB of float samples at 16 kHz.
/// A speech corpus is cut into utterances; a file longer than this is a whole recording that was not.
constexpr double kMaxAudioSeconds = 3600.0;

/// Decodes the whole file at its native sample rate. Multi-channel audio is averaged to mono.
/// Throws AudioError, naming the file, if it cannot be opened or decoded, contains no audio frames, is
/// longer than `max_seconds` (by its header, before anything is decoded, or while decoding when the header
/// understates it), or holds fewer frames than its header promises (a truncated or corrupt file: FLAC and
/// Ogg decoders stop early without an error, and a WAV whose data chunk is shorter than its header says).
/// A WAV data size of 0 or 0xFFFFFFFF is the streaming writers' "unknown" and is accepted. A float file
/// holding a NaN or infinite sample is refused, naming the sample.
Audio read_audio(const std::string& path, double max_seconds = kMaxAudioSeconds);

/// Converts `in` (mono samples at `from_hz`) to `to_hz` with libsoxr's high-quality (SOXR_HQ, linear
/// phase) resampler. The output has round(in.size() * to_hz / from_hz) samples and is time-aligned with
/// the input (the filter delay is compensated). Returns a copy of `in` when the rates are equal.
/// Throws AudioError for non-positive or non-finite rates, or if libsoxr reports an error.
std::vector<float> resample(const std::vector<float>& in, double from_hz, double to_hz);

/// Writes mono `audio` to `path` with libsndfile; the container is chosen by the file extension
/// (case-insensitive): ".wav" (16-bit PCM), ".flac" (16-bit), ".ogg" (Vorbis), ".opus" (Ogg Opus; libsndfile
/// only accepts 8, 12, 16, 24 or 48 kHz for Opus). Samples outside [-1, 1) are clipped. Overwrites `path`.
/// Throws AudioError for an unknown extension, a format/rate combination libsndfile rejects, an empty
/// signal, or any I/O error (with libsndfile's message).
void write_audio(const std::string& path, const Audio& audio);

/// read_audio(path, max_seconds) followed by resample(..., target_rate). `target_rate` in Hz, must be > 0.
/// Throws AudioError (see read_audio and resample; resampling errors also name the path).
Audio load_audio(const std::string& path, std::int64_t target_rate, double max_seconds = kMaxAudioSeconds);

}  // namespace workbench
