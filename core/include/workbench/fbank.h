#pragma once
// Kaldi-compatible log-mel filterbank features.
//
// Re-implements Kaldi's compute-fbank-feats (src/feat/feature-fbank.cc, feature-window.cc, mel-computations.cc)
// as exposed by torchaudio.compliance.kaldi.fbank, and matches the latter within 1e-3 absolute on the
// log-mel values (see tests/test_fbank.cpp and tests/golden/make_fbank_golden.py). Per frame:
//   1. framing: window = int(sample_rate * frame_length_ms * 0.001) samples every
//      shift = int(sample_rate * frame_shift_ms * 0.001) samples;
//   2. remove the frame's mean (remove_dc_offset);
//   3. pre-emphasis y[j] = x[j] - preemphasis * x[max(j - 1, 0)];
//   4. multiply by the window: "povey" = hann^0.85 (symmetric Hann raised to 0.85, zero at both ends),
//      "hanning" (symmetric), "hamming" (0.54 - 0.46 cos), "rectangular";
//   5. zero-pad to the next power of two (round_to_power_of_two) and take |rfft|^2 (or |rfft| when !use_power);
//   6. triangular filters equally spaced on the mel scale mel(f) = 1127 ln(1 + f / 700) between low_freq
//      and high_freq (Hz); the Nyquist FFT bin is never used, as in Kaldi;
//   7. log(max(energy, FLT_EPSILON)) when use_log_fbank.
// Not supported (rejected with std::invalid_argument): dither != 0, use_energy = true. VTLN warping,
// the Blackman window, htk_compat and subtract_mean are not offered; use utterance_cmvn for the latter.

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <string>

namespace workbench {

/// Options of compute_fbank. Defaults are Kaldi's, except num_mel_bins = 80 (Kaldi: 23).
/// Chained setters in the LibTorch frontend style: FbankOptions().num_mel_bins(40).window("hamming").
struct FbankOptions {
  /// Number of triangular mel filters (output feature dimension); must be > 3.
  TORCH_ARG(std::int64_t, num_mel_bins) = 80;
  /// Sample rate of the waveform in Hz.
  TORCH_ARG(double, sample_rate) = 16000.0;
  /// Frame length in milliseconds.
  TORCH_ARG(double, frame_length_ms) = 25.0;
  /// Frame shift in milliseconds.
  TORCH_ARG(double, frame_shift_ms) = 10.0;
  /// Pre-emphasis coefficient in [0, 1]; 0 disables pre-emphasis.
  TORCH_ARG(double, preemphasis) = 0.97;
  /// Lower edge of the first mel filter, Hz.
  TORCH_ARG(double, low_freq) = 20.0;
  /// Upper edge of the last mel filter, Hz; a value <= 0 means Nyquist + high_freq, as in Kaldi.
  TORCH_ARG(double, high_freq) = 0.0;
  /// Subtract each frame's mean before pre-emphasis.
  TORCH_ARG(bool, remove_dc_offset) = true;
  /// true: only frames that fit entirely in the signal, T = 1 + (N - window) / shift.
  /// false: T = (N + shift / 2) / shift frames over the signal reflected at both ends (Kaldi semantics).
  TORCH_ARG(bool, snip_edges) = true;
  /// Window function: "povey" | "hamming" | "hanning" | "rectangular".
  TORCH_ARG(std::string, window) = "povey";
  /// Must stay false: there is no log-energy column (unsupported; set it and compute_fbank throws).
  TORCH_ARG(bool, use_energy) = false;
  /// Must stay 0: no dithering, so features are deterministic (any other value throws).
  TORCH_ARG(double, dither) = 0.0;
  /// Zero-pad each frame to the next power of two before the FFT (otherwise the frame length must be even).
  TORCH_ARG(bool, round_to_power_of_two) = true;
  /// Return log(max(mel energy, FLT_EPSILON)) instead of the linear mel energies.
  TORCH_ARG(bool, use_log_fbank) = true;
  /// Use the power spectrum |X|^2 (true) or the magnitude spectrum |X| (false).
  TORCH_ARG(bool, use_power) = true;
};

/// Frame geometry implied by a set of options (all counts in samples).
struct FbankGeometry {
  std::int64_t window_size = 0;  ///< samples per frame
  std::int64_t window_shift = 0; ///< samples between frame starts
  std::int64_t fft_size = 0;     ///< padded frame length fed to the FFT
};

/// Validates `options` and returns the frame geometry. Throws std::invalid_argument on bad options.
FbankGeometry fbank_geometry(const FbankOptions& options);

/// Number of frames compute_fbank returns for `num_samples` input samples (0 if the input is too short
/// for snip_edges). Throws std::invalid_argument on bad options.
std::int64_t fbank_num_frames(std::int64_t num_samples, const FbankOptions& options = {});

/// Log-mel filterbank of a mono waveform.
///
/// waveform: 1-D (N) floating-point tensor in int16 units (Kaldi convention: samples in [-1, 1) scaled by
///           32768), at options.sample_rate() Hz. Any floating dtype and device; computed in float32.
/// Returns:  (T, num_mel_bins) float32 on the waveform's device, T = 1 + (N - window) / shift with snip_edges
///           (T = (N + shift / 2) / shift without). Natural-log energies when use_log_fbank.
/// Throws std::invalid_argument for bad options (see FbankOptions), a tensor that is not 1-D floating point,
/// or N < window size (as torchaudio does).
///
/// The window and the mel filter matrix are computed once per option set and cached; safe to call from
/// several threads at once. CPU cost is 1 to 1.5 s per hour of 16 kHz audio on one thread (bench_fbank), about 70% of it in
/// ATen's (single-threaded) rfft. Blocks of 256 frames are spread over ATen's intra-op pool with
/// at::parallel_for, which only runs in parallel when this file is compiled with -fopenmp; from inside
/// another parallel region (e.g. one utterance per thread) it always runs inline.
torch::Tensor compute_fbank(const torch::Tensor& waveform, const FbankOptions& options = {});

/// The (num_mel_bins, fft_size / 2 + 1) float32 mel filter matrix used by compute_fbank (the last column,
/// the Nyquist bin, is zero), as torchaudio.compliance.kaldi.get_mel_banks padded by one column.
torch::Tensor mel_filterbank(const FbankOptions& options = {});

/// Utterance-level mean and variance normalisation over time: for a (T, F) feature matrix returns
/// (x - mean_t(x)) / sqrt(var_t(x) + eps) per feature column (population variance), same dtype.
/// T = 1 gives zeros. Throws std::invalid_argument if `features` is not 2-D floating point or T == 0.
torch::Tensor utterance_cmvn(const torch::Tensor& features, double eps = 1e-5);

}  // namespace workbench
