#include "workbench/fbank.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/fft.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <tuple>
#include <utility>
#include <vector>

namespace workbench {
namespace {

// Frames per block on the CPU path (the unit of parallel work): keeps the per-block buffers (frames x fft_size
// floats and the complex spectrum, ~0.5 MB each at 512 points) in cache and bounds memory for long inputs.
constexpr std::int64_t kBlockFrames = 256;

[[noreturn]] void bad(const std::string& msg) { throw std::invalid_argument("compute_fbank: " + msg); }

std::string fmt_double(double v) {
  std::string s = std::to_string(v);
  // Trim trailing zeros of std::to_string's fixed notation: "25.000000" -> "25".
  if (s.find('.') != std::string::npos) {
    while (!s.empty() && s.back() == '0') s.pop_back();
    if (!s.empty() && s.back() == '.') s.pop_back();
  }
  return s;
}

double mel_scale(double hz) { return 1127.0 * std::log(1.0 + hz / 700.0); }

std::int64_t next_power_of_two(std::int64_t x) {
  std::int64_t p = 1;
  while (p < x) p <<= 1;
  return p;
}

enum class WindowType { kPovey, kHamming, kHanning, kRectangular };

WindowType parse_window(const std::string& name) {
  if (name == "povey") return WindowType::kPovey;
  if (name == "hamming") return WindowType::kHamming;
  if (name == "hanning") return WindowType::kHanning;
  if (name == "rectangular") return WindowType::kRectangular;
  bad("unknown window '" + name + "' (expected povey, hamming, hanning or rectangular)");
}

// Effective upper mel edge in Hz after Kaldi's "<= 0 means offset from Nyquist" rule.
double effective_high_freq(const FbankOptions& o) {
  const double nyquist = 0.5 * o.sample_rate();
  return o.high_freq() <= 0.0 ? o.high_freq() + nyquist : o.high_freq();
}

// ---------------------------------------------------------------------------------------------------------
// Cached constants (window and mel matrix), keyed by the options they depend on.

using WindowKey = std::tuple<int, std::int64_t>;
using MelKey = std::tuple<std::int64_t, std::int64_t, double, double, double>;

// The mel filters, densely (for the tensor-op path) and as one contiguous run of non-zero weights per filter
// (for the CPU path: each FFT bin feeds at most two filters, so this is ~40x fewer multiply-adds than a GEMM).
struct MelBank {
  torch::Tensor mel_t;               // (fft_size / 2, num_mel_bins) float32, Nyquist bin dropped
  std::vector<std::int64_t> first;   // per filter: first FFT bin of its run
  std::vector<std::int64_t> offset;  // per filter: start of its run in `weights`; offset.back() = weights.size()
  std::vector<float> weights;
};
using MelBankPtr = std::shared_ptr<const MelBank>;

struct ConstantCache {
  std::mutex mutex;
  std::map<WindowKey, torch::Tensor> windows;
  std::map<MelKey, MelBankPtr> mel_banks;
};

ConstantCache& cache() {
  static ConstantCache c;
  return c;
}

// (window_size) float32 window. Built with the same ATen calls (and float32 rounding) as torchaudio's
// _feature_window_function, so that the FFT input is bit-identical to torchaudio's on the same ATen build.
torch::Tensor make_window(WindowType type, std::int64_t n) {
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32);
  switch (type) {
    case WindowType::kHanning: return at::hann_window(n, /*periodic=*/false, opts);
    case WindowType::kPovey: return at::hann_window(n, /*periodic=*/false, opts).pow(0.85);
    case WindowType::kHamming: return at::hamming_window(n, /*periodic=*/false, 0.54, 0.46, opts);
    case WindowType::kRectangular: break;
  }
  return at::ones({n}, opts);
}

// (fft_size / 2, num_bins) float32: transposed Kaldi mel banks without the (always zero) Nyquist bin.
// Mirrors torchaudio.compliance.kaldi.get_mel_banks (no VTLN) op for op, including its float32 tensor
// arithmetic: computing the triangles in double instead moves individual weights by up to ~1.4e-5 and the
// log-mel outputs of low-energy bins by ~1.5e-4, a visible share of the 1e-3 tolerance against torchaudio.
torch::Tensor make_mel_t(std::int64_t num_bins, std::int64_t fft_size, double sample_rate, double low_freq,
                         double high_freq) {
  const std::int64_t num_fft_bins = fft_size / 2;
  const double fft_bin_width = sample_rate / static_cast<double>(fft_size);
  const double mel_low = mel_scale(low_freq);
  const double mel_high = mel_scale(high_freq);
  const double delta = (mel_high - mel_low) / static_cast<double>(num_bins + 1);
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat32);

  const torch::Tensor bin = at::arange(num_bins, torch::TensorOptions().dtype(torch::kLong)).unsqueeze(1);
  const torch::Tensor left = bin * delta + mel_low;                  // (num_bins, 1) float32
  const torch::Tensor center = (bin + 1.0) * delta + mel_low;
  const torch::Tensor right = (bin + 2.0) * delta + mel_low;
  const torch::Tensor freq = at::arange(static_cast<double>(num_fft_bins), f32) * fft_bin_width;
  const torch::Tensor mel = ((freq / 700.0 + 1.0).log() * 1127.0).unsqueeze(0);  // (1, num_fft_bins)
  const torch::Tensor up = (mel - left) / (center - left);
  const torch::Tensor down = (right - mel) / (right - center);
  const torch::Tensor bins = at::max(at::zeros({1}, f32), at::min(up, down));  // (num_bins, num_fft_bins)
  return bins.t().contiguous();
}

torch::Tensor cached_window(WindowType type, std::int64_t n) {
  ConstantCache& c = cache();
  const WindowKey key{static_cast<int>(type), n};
  std::lock_guard<std::mutex> lock(c.mutex);
  auto it = c.windows.find(key);
  if (it == c.windows.end()) it = c.windows.emplace(key, make_window(type, n)).first;
  return it->second;
}

MelBankPtr make_mel_bank(std::int64_t num_bins, std::int64_t fft_size, double sample_rate, double low_freq,
                          double high_freq) {
  auto bank = std::make_shared<MelBank>();
  bank->mel_t = make_mel_t(num_bins, fft_size, sample_rate, low_freq, high_freq);
  const std::int64_t K = bank->mel_t.size(0);
  const auto acc = bank->mel_t.accessor<float, 2>();
  bank->offset.push_back(0);
  for (std::int64_t b = 0; b < num_bins; ++b) {
    std::int64_t lo = 0;
    while (lo < K && acc[lo][b] == 0.0f) ++lo;
    std::int64_t hi = K;
    while (hi > lo && acc[hi - 1][b] == 0.0f) --hi;
    bank->first.push_back(lo);
    for (std::int64_t k = lo; k < hi; ++k) bank->weights.push_back(acc[k][b]);
    bank->offset.push_back(static_cast<std::int64_t>(bank->weights.size()));
  }
  return bank;
}

MelBankPtr cached_mel_bank(const FbankOptions& o, std::int64_t fft_size) {
  ConstantCache& c = cache();
  const double high = effective_high_freq(o);
  const MelKey key{o.num_mel_bins(), fft_size, o.sample_rate(), o.low_freq(), high};
  std::lock_guard<std::mutex> lock(c.mutex);
  auto it = c.mel_banks.find(key);
  if (it == c.mel_banks.end()) {
    it = c.mel_banks.emplace(key, make_mel_bank(o.num_mel_bins(), fft_size, o.sample_rate(), o.low_freq(), high))
             .first;
  }
  return it->second;
}

// ---------------------------------------------------------------------------------------------------------
// Framing.

// Returns the signal that frames are cut from, such that frame i is samples [i * shift, i * shift + window).
// For snip_edges = false the input is reflected at both ends exactly as torchaudio's _get_strided does
// (Kaldi's convention: index -1 maps to 0, N maps to N - 1).
torch::Tensor frame_source(const torch::Tensor& x, std::int64_t num_frames, const FbankGeometry& g, bool snip_edges) {
  if (snip_edges) return x;
  const std::int64_t n = x.size(0);
  const torch::Tensor reversed = x.flip({0});
  const std::int64_t pad = g.window_size / 2 - g.window_shift / 2;
  torch::Tensor src;
  if (pad > 0) {
    src = at::cat({reversed.narrow(0, n - pad, pad), x, reversed}, 0);
  } else {
    src = at::cat({x.narrow(0, -pad, n + pad), reversed}, 0);
  }
  // Guard against (pathological) geometries where the reflected signal is still too short.
  const std::int64_t needed = (num_frames - 1) * g.window_shift + g.window_size;
  if (src.size(0) < needed) bad("input too short for snip_edges=false with this frame geometry");
  return src.contiguous();
}

// Generic tensor-op implementation (any device). Mirrors torchaudio's fbank step by step.
torch::Tensor fbank_tensor_ops(const torch::Tensor& src, std::int64_t num_frames, const FbankGeometry& g,
                               const FbankOptions& o, const torch::Tensor& window, const torch::Tensor& mel_t) {
  torch::Tensor frames = src.as_strided({num_frames, g.window_size}, {g.window_shift, 1});
  if (o.remove_dc_offset()) frames = frames - frames.mean(1, /*keepdim=*/true);
  if (o.preemphasis() != 0.0) {
    const torch::Tensor prev = at::cat({frames.narrow(1, 0, 1), frames.narrow(1, 0, g.window_size - 1)}, 1);
    frames = frames - o.preemphasis() * prev;
  }
  frames = frames * window.to(frames.device());
  const torch::Tensor spectrum = torch::fft::rfft(frames, g.fft_size, -1);  // (T, fft_size / 2 + 1)
  torch::Tensor energy = at::view_as_real(spectrum).pow(2).sum(-1).narrow(1, 0, g.fft_size / 2);
  if (!o.use_power()) energy = energy.sqrt();
  torch::Tensor mel = at::mm(energy, mel_t.to(energy.device()));
  if (o.use_log_fbank()) mel = mel.clamp_min(FLT_EPSILON).log();
  return mel;
}

// CPU float32 implementation. Frames are processed in blocks of kBlockFrames, blocks in parallel on ATen's
// intra-op pool when this file is built with -fopenmp (at::parallel_for is header-only and runs serially
// otherwise; always inline inside another parallel region, e.g. one utterance per thread). Per block:
// a fused framing / DC removal / pre-emphasis / window loop, one batched rfft, then a fused power spectrum /
// sparse mel / log loop written straight into the output. For int16-valued input the FFT input is
// bit-identical to torchaudio's (same float32 operations in the same order), so outputs agree to ~1e-6.
torch::Tensor fbank_cpu(const torch::Tensor& src, std::int64_t num_frames, const FbankGeometry& g,
                        const FbankOptions& o, const torch::Tensor& window, const MelBank& mel) {
  const std::int64_t W = g.window_size;
  const std::int64_t S = g.window_shift;
  const std::int64_t P = g.fft_size;
  const std::int64_t K = P / 2;  // FFT bins used (the Nyquist bin has zero weight in every filter)
  const std::int64_t M = o.num_mel_bins();
  const float a = static_cast<float>(o.preemphasis());
  const bool dc = o.remove_dc_offset();
  const bool power = o.use_power();
  const bool use_log = o.use_log_fbank();
  const float* x = src.data_ptr<float>();
  const float* win = window.data_ptr<float>();
  const std::int64_t* first = mel.first.data();
  const std::int64_t* offset = mel.offset.data();
  const float* weights = mel.weights.data();

  torch::Tensor out = at::empty({num_frames, M}, src.options());
  float* out_p = out.data_ptr<float>();
  const std::int64_t num_blocks = (num_frames + kBlockFrames - 1) / kBlockFrames;

  at::parallel_for(0, num_blocks, 1, [&](std::int64_t block_begin, std::int64_t block_end) {
    const std::int64_t cap = std::min(kBlockFrames, num_frames);
    torch::Tensor frames = at::empty({cap, P}, src.options());
    std::vector<float> energy(static_cast<std::size_t>(K));
    for (std::int64_t blk = block_begin; blk < block_end; ++blk) {
      const std::int64_t start = blk * kBlockFrames;
      const std::int64_t rows = std::min(kBlockFrames, num_frames - start);
      float* fr = frames.data_ptr<float>();
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* in = x + (start + r) * S;
        float* dst = fr + r * P;
        float mean = 0.0f;
        if (dc) {
          // torchaudio: float32 sum (ATen's vectorised order), then divided by W in float32. For int16-valued
          // input (the Kaldi convention) and W <= 512 every partial sum is an integer below 2^24, so the float
          // sum is exact in any order and this reproduces it bit for bit; otherwise this is as accurate.
          double sum = 0.0;
          for (std::int64_t j = 0; j < W; ++j) sum += in[j];
          mean = static_cast<float>(sum) / static_cast<float>(W);
        }
        if (a != 0.0f) {
          float prev = in[0] - mean;
          for (std::int64_t j = 0; j < W; ++j) {
            const float cur = in[j] - mean;
            dst[j] = (cur - a * prev) * win[j];
            prev = cur;
          }
        } else {
          for (std::int64_t j = 0; j < W; ++j) dst[j] = (in[j] - mean) * win[j];
        }
        std::fill(dst + W, dst + P, 0.0f);
      }
      const torch::Tensor spectrum = torch::fft::rfft(rows == cap ? frames : frames.narrow(0, 0, rows), P, -1);
      const torch::Tensor spec_ri = at::view_as_real(spectrum);  // (rows, K + 1, 2)
      TORCH_INTERNAL_ASSERT(spec_ri.is_contiguous());
      const float* sp = spec_ri.data_ptr<float>();
      float* e = energy.data();
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* s = sp + r * (K + 1) * 2;
        for (std::int64_t k = 0; k < K; ++k) e[k] = s[2 * k] * s[2 * k] + s[2 * k + 1] * s[2 * k + 1];
        if (!power) {
          for (std::int64_t k = 0; k < K; ++k) e[k] = std::sqrt(e[k]);
        }
        float* dst = out_p + (start + r) * M;
        for (std::int64_t b = 0; b < M; ++b) {
          const float* w = weights + offset[b];
          const float* eb = e + first[b];
          const std::int64_t len = offset[b + 1] - offset[b];
          float sum = 0.0f;
          for (std::int64_t k = 0; k < len; ++k) sum += w[k] * eb[k];
          dst[b] = use_log ? std::log(std::max(sum, FLT_EPSILON)) : sum;
        }
      }
    }
  });
  return out;
}

}  // namespace

FbankGeometry fbank_geometry(const FbankOptions& o) {
  if (!(std::isfinite(o.sample_rate()) && o.sample_rate() > 0.0)) {
    bad("sample_rate must be positive, got " + fmt_double(o.sample_rate()));
  }
  if (o.dither() != 0.0) bad("dither is not supported (got " + fmt_double(o.dither()) + "); set it to 0");
  if (o.use_energy()) bad("use_energy=true is not supported: this filterbank has no log-energy column");
  if (o.num_mel_bins() <= 3) bad("num_mel_bins must be > 3, got " + std::to_string(o.num_mel_bins()));
  if (!(o.preemphasis() >= 0.0 && o.preemphasis() <= 1.0)) {
    bad("preemphasis must be in [0, 1], got " + fmt_double(o.preemphasis()));
  }
  parse_window(o.window());
  FbankGeometry g;
  // Same arithmetic (and truncation) as torchaudio: int(sample_frequency * frame_ms * 0.001).
  const double shift = o.sample_rate() * o.frame_shift_ms() * 0.001;
  const double length = o.sample_rate() * o.frame_length_ms() * 0.001;
  if (!(std::isfinite(shift) && std::isfinite(length))) bad("frame length and shift must be finite");
  g.window_shift = static_cast<std::int64_t>(shift);
  g.window_size = static_cast<std::int64_t>(length);
  if (g.window_shift <= 0) {
    bad("frame_shift_ms=" + fmt_double(o.frame_shift_ms()) + " gives a shift of " + std::to_string(g.window_shift) +
        " samples; it must be at least 1");
  }
  if (g.window_size < 2) {
    bad("frame_length_ms=" + fmt_double(o.frame_length_ms()) + " gives a window of " +
        std::to_string(g.window_size) + " samples; it must be at least 2");
  }
  g.fft_size = o.round_to_power_of_two() ? next_power_of_two(g.window_size) : g.window_size;
  if (g.fft_size % 2 != 0) {
    bad("the FFT size " + std::to_string(g.fft_size) +
        " must be even; use round_to_power_of_two or change frame_length_ms");
  }
  const double nyquist = 0.5 * o.sample_rate();
  const double high = effective_high_freq(o);
  if (!(o.low_freq() >= 0.0 && o.low_freq() < nyquist && high > 0.0 && high <= nyquist && o.low_freq() < high)) {
    bad("bad mel range: low_freq=" + fmt_double(o.low_freq()) + " Hz, high_freq=" + fmt_double(o.high_freq()) +
        " Hz (effective " + fmt_double(high) + " Hz), Nyquist=" + fmt_double(nyquist) + " Hz");
  }
  return g;
}

std::int64_t fbank_num_frames(std::int64_t num_samples, const FbankOptions& options) {
  const FbankGeometry g = fbank_geometry(options);
  if (options.snip_edges()) {
    return num_samples < g.window_size ? 0 : 1 + (num_samples - g.window_size) / g.window_shift;
  }
  return (num_samples + g.window_shift / 2) / g.window_shift;
}

torch::Tensor mel_filterbank(const FbankOptions& options) {
  const FbankGeometry g = fbank_geometry(options);
  const MelBankPtr bank = cached_mel_bank(options, g.fft_size);
  return at::constant_pad_nd(bank->mel_t.t(), {0, 1}, 0.0).contiguous();
}

torch::Tensor compute_fbank(const torch::Tensor& waveform, const FbankOptions& options) {
  const FbankGeometry g = fbank_geometry(options);
  if (!waveform.defined()) bad("waveform is an undefined tensor");
  if (waveform.dim() != 1) bad("waveform must be 1-D (N samples), got " + std::to_string(waveform.dim()) + "-D");
  if (!at::isFloatingType(waveform.scalar_type())) {
    bad(std::string("waveform must be floating point, got ") + c10::toString(waveform.scalar_type()));
  }
  const std::int64_t n = waveform.size(0);
  if (n < g.window_size) {
    bad("waveform has " + std::to_string(n) + " samples, fewer than one window (" + std::to_string(g.window_size) +
        " samples = " + fmt_double(options.frame_length_ms()) + " ms at " + fmt_double(options.sample_rate()) +
        " Hz)");
  }
  at::NoGradGuard no_grad;
  const torch::Tensor x = waveform.to(torch::kFloat32).contiguous();
  const std::int64_t num_frames = fbank_num_frames(n, options);
  const torch::Tensor window = cached_window(parse_window(options.window()), g.window_size);
  const MelBankPtr bank = cached_mel_bank(options, g.fft_size);
  const torch::Tensor src = frame_source(x, num_frames, g, options.snip_edges());
  if (num_frames == 0) return at::empty({0, options.num_mel_bins()}, x.options());
  if (x.device().is_cpu()) return fbank_cpu(src, num_frames, g, options, window, *bank);
  return fbank_tensor_ops(src, num_frames, g, options, window, bank->mel_t);
}

torch::Tensor utterance_cmvn(const torch::Tensor& features, double eps) {
  if (!features.defined() || features.dim() != 2) {
    throw std::invalid_argument("utterance_cmvn: features must be a 2-D (T, F) tensor");
  }
  if (!at::isFloatingType(features.scalar_type())) {
    throw std::invalid_argument("utterance_cmvn: features must be floating point");
  }
  if (features.size(0) == 0) throw std::invalid_argument("utterance_cmvn: features have no frames (T = 0)");
  if (!(eps >= 0.0)) throw std::invalid_argument("utterance_cmvn: eps must be >= 0");
  at::NoGradGuard no_grad;
  // Accumulate in double: features of long utterances can have large means relative to their spread.
  const torch::Tensor x = features.to(torch::kFloat64);
  const torch::Tensor mean = x.mean(0, /*keepdim=*/true);
  const torch::Tensor centred = x - mean;
  const torch::Tensor var = centred.pow(2).mean(0, /*keepdim=*/true);
  return (centred / (var + eps).sqrt()).to(features.scalar_type());
}

}  // namespace workbench
