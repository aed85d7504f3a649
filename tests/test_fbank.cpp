// Kaldi fbank against torchaudio.compliance.kaldi.fbank goldens (tests/golden/make_fbank_golden.py),
// utterance CMVN, and option validation.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "workbench/audio.h"
#include "workbench/fbank.h"
#include "workbench/npy.h"

// Catch2 must come after every header that pulls in glog (ATen, torch, workbench headers): glog's
// logging.h defines its own CHECK macro, which would otherwise silently replace Catch's CHECK.
#include <catch2/catch.hpp>

namespace {

using workbench::FbankOptions;

const std::string kDataDir = WORKBENCH_TEST_DATA_DIR;

// speech_16k.wav in int16 units (Kaldi convention), exactly as the golden script fed it to torchaudio.
torch::Tensor speech_int16_units() {
  const workbench::Audio audio = workbench::read_audio(kDataDir + "/speech_16k.wav");
  REQUIRE(audio.sample_rate == 16000);
  const auto n = static_cast<std::int64_t>(audio.samples.size());
  return torch::from_blob(const_cast<float*>(audio.samples.data()), {n}, torch::kFloat32).clone() * 32768.0;
}

// Must mirror CASES in tests/golden/make_fbank_golden.py.
FbankOptions golden_options(const std::string& name) {
  FbankOptions o;  // "default": workbench defaults
  if (name == "variant") {
    o.num_mel_bins(40).window("hamming").preemphasis(0.0).remove_dc_offset(false).snip_edges(false).low_freq(60.0)
        .high_freq(-400.0);
  } else if (name == "rect_mag") {
    o.num_mel_bins(23).window("rectangular").frame_length_ms(20.0).frame_shift_ms(12.5).round_to_power_of_two(false)
        .use_power(false);
  } else if (name == "hann_linear") {
    o.num_mel_bins(24).window("hanning").use_log_fbank(false);
  }
  return o;
}

double max_abs_diff(const torch::Tensor& a, const torch::Tensor& b) {
  return (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs().max().item<double>();
}

}  // namespace

TEST_CASE("FbankOptions: defaults and chained setters", "[fbank]") {
  const FbankOptions d;
  CHECK(d.num_mel_bins() == 80);
  CHECK(d.sample_rate() == 16000.0);
  CHECK(d.frame_length_ms() == 25.0);
  CHECK(d.frame_shift_ms() == 10.0);
  CHECK(d.preemphasis() == 0.97);
  CHECK(d.low_freq() == 20.0);
  CHECK(d.high_freq() == 0.0);
  CHECK(d.remove_dc_offset());
  CHECK(d.snip_edges());
  CHECK(d.window() == "povey");
  CHECK_FALSE(d.use_energy());
  CHECK(d.dither() == 0.0);
  CHECK(d.round_to_power_of_two());
  CHECK(d.use_log_fbank());
  CHECK(d.use_power());
  const auto o = FbankOptions().num_mel_bins(40).window("hamming").sample_rate(8000);
  CHECK(o.num_mel_bins() == 40);
  CHECK(o.window() == "hamming");
  CHECK(o.sample_rate() == 8000.0);

  const workbench::FbankGeometry g = workbench::fbank_geometry(d);
  CHECK(g.window_size == 400);
  CHECK(g.window_shift == 160);
  CHECK(g.fft_size == 512);
}

TEST_CASE("compute_fbank matches torchaudio.compliance.kaldi.fbank goldens", "[fbank][golden]") {
  const torch::Tensor wave = speech_int16_units();
  const std::string name = GENERATE(as<std::string>{}, "default", "variant", "rect_mag", "hann_linear");
  CAPTURE(name);
  const FbankOptions o = golden_options(name);
  const torch::Tensor golden = workbench::read_npy(kDataDir + "/fbank_" + name + ".npy");
  const torch::Tensor ours = workbench::compute_fbank(wave, o);

  REQUIRE(ours.scalar_type() == torch::kFloat32);
  REQUIRE(ours.sizes() == golden.sizes());
  CHECK(ours.size(0) == workbench::fbank_num_frames(wave.size(0), o));
  if (o.use_log_fbank()) {
    const double diff = max_abs_diff(ours, golden);
    CAPTURE(diff);
    CHECK(diff < 1e-3);
  } else {
    // Linear energies span ~1e-1..1e11: compare in the log domain (same 1e-3 bound, i.e. 0.1% relative).
    REQUIRE(golden.min().item<float>() > 0.0f);
    const double diff = max_abs_diff(ours.clamp_min(1e-30).log(), golden.log());
    CAPTURE(diff);
    CHECK(diff < 1e-3);
  }
}

TEST_CASE("compute_fbank: frame count, dtype and device handling", "[fbank]") {
  const torch::Tensor wave = speech_int16_units();
  const FbankOptions o;
  const torch::Tensor ref = workbench::compute_fbank(wave, o);
  // T = 1 + (N - window) / shift.
  CHECK(ref.size(0) == 1 + (wave.size(0) - 400) / 160);
  CHECK(ref.size(1) == 80);

  SECTION("float64 input gives the same float32 features") {
    const torch::Tensor f64 = workbench::compute_fbank(wave.to(torch::kFloat64), o);
    CHECK(f64.scalar_type() == torch::kFloat32);
    CHECK(max_abs_diff(f64, ref) < 1e-4);
  }
  SECTION("non-contiguous input") {
    const torch::Tensor strided = torch::stack({wave, wave}, 1).select(1, 0);
    REQUIRE_FALSE(strided.is_contiguous());
    CHECK(torch::equal(workbench::compute_fbank(strided, o), ref));
  }
  SECTION("a view with a storage offset (e.g. a slice of a longer recording)") {
    const torch::Tensor longer = torch::cat({torch::zeros({123}), wave});
    const torch::Tensor view = longer.narrow(0, 123, wave.size(0));
    REQUIRE(view.storage_offset() == 123);
    CHECK(torch::equal(workbench::compute_fbank(view, o), ref));
    CHECK(torch::equal(workbench::compute_fbank(view, FbankOptions().snip_edges(false)),
                       workbench::compute_fbank(wave, FbankOptions().snip_edges(false))));
  }
  SECTION("exactly one window") {
    const torch::Tensor one = workbench::compute_fbank(wave.narrow(0, 0, 400), o);
    CHECK(one.size(0) == 1);
    CHECK(max_abs_diff(one[0], ref[0]) < 1e-4);
  }
  SECTION("snip_edges=false frame count") {
    const auto ns = FbankOptions().snip_edges(false);
    CHECK(workbench::compute_fbank(wave, ns).size(0) == (wave.size(0) + 80) / 160);
  }
  SECTION("digital silence gives log(FLT_EPSILON)") {
    const torch::Tensor silent = workbench::compute_fbank(torch::zeros({1600}), o);
    CHECK(silent.size(0) == 8);
    CHECK(max_abs_diff(silent, torch::full_like(silent, std::log(1.1920928955078125e-07))) < 1e-6);
  }
}

TEST_CASE("compute_fbank: long inputs (several internal blocks) equal frame-aligned slices", "[fbank]") {
  // ~25 s: crosses the CPU path's internal block boundary (2048 frames).
  const torch::Tensor speech = speech_int16_units();
  const torch::Tensor wave = speech.repeat({18}) + torch::arange(speech.size(0) * 18, torch::kFloat32).sin();
  const FbankOptions o;
  const torch::Tensor all = workbench::compute_fbank(wave, o);
  REQUIRE(all.size(0) > 2100);
  const std::int64_t first = 2040;  // frame index; slice the waveform at its first sample
  const torch::Tensor part = workbench::compute_fbank(wave.narrow(0, first * 160, wave.size(0) - first * 160), o);
  REQUIRE(part.size(0) == all.size(0) - first);
  CHECK(max_abs_diff(part, all.narrow(0, first, part.size(0))) < 1e-5);
}

TEST_CASE("compute_fbank: results do not depend on the thread count", "[fbank]") {
  const torch::Tensor wave = speech_int16_units().repeat({4});
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  const torch::Tensor one = workbench::compute_fbank(wave);
  at::set_num_threads(2);
  const torch::Tensor two = workbench::compute_fbank(wave);
  at::set_num_threads(saved);
  CHECK(max_abs_diff(one, two) < 1e-5);
}

TEST_CASE("mel_filterbank: shape and triangle properties", "[fbank]") {
  const torch::Tensor m = workbench::mel_filterbank(FbankOptions());
  REQUIRE(m.sizes() == torch::IntArrayRef({80, 257}));
  CHECK(m.min().item<float>() >= 0.0f);
  CHECK(m.max().item<float>() <= 1.0f);
  CHECK(m.select(1, 256).abs().max().item<float>() == 0.0f);  // Nyquist bin unused, as in Kaldi
  CHECK((m.sum(1) > 0).all().item<bool>());                    // no empty filter at 80 bins / 512-point FFT
}

TEST_CASE("utterance_cmvn normalises each feature column", "[fbank][cmvn]") {
  const torch::Tensor feats = workbench::compute_fbank(speech_int16_units());
  const torch::Tensor n = workbench::utterance_cmvn(feats);
  REQUIRE(n.sizes() == feats.sizes());
  CHECK(n.scalar_type() == torch::kFloat32);
  CHECK(n.mean(0).abs().max().item<float>() < 1e-4f);
  CHECK((n.std(0, /*unbiased=*/false) - 1.0).abs().max().item<float>() < 1e-3f);

  // A constant column maps to zeros (no division by zero), a single frame to zeros.
  const torch::Tensor constant = torch::full({10, 3}, 5.0);
  CHECK(workbench::utterance_cmvn(constant).abs().max().item<float>() == 0.0f);
  CHECK(workbench::utterance_cmvn(feats.narrow(0, 0, 1)).abs().max().item<float>() == 0.0f);
  CHECK(workbench::utterance_cmvn(feats.to(torch::kFloat64)).scalar_type() == torch::kFloat64);

  CHECK_THROWS_AS(workbench::utterance_cmvn(torch::zeros({5})), std::invalid_argument);
  CHECK_THROWS_AS(workbench::utterance_cmvn(torch::zeros({0, 80})), std::invalid_argument);
  CHECK_THROWS_AS(workbench::utterance_cmvn(torch::zeros({5, 80}, torch::kLong)), std::invalid_argument);
}

TEST_CASE("compute_fbank rejects bad options and inputs", "[fbank]") {
  const torch::Tensor wave = torch::randn({16000}) * 1000.0;
  auto rejects = [&](const FbankOptions& o, const std::string& fragment) {
    CAPTURE(fragment);
    try {
      workbench::compute_fbank(wave, o);
      FAIL("expected std::invalid_argument");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains(fragment));
    }
  };
  rejects(FbankOptions().dither(1.0), "dither");
  rejects(FbankOptions().use_energy(true), "use_energy");
  rejects(FbankOptions().window("blackman"), "unknown window 'blackman'");
  rejects(FbankOptions().num_mel_bins(3), "num_mel_bins");
  rejects(FbankOptions().preemphasis(1.5), "preemphasis");
  rejects(FbankOptions().sample_rate(0), "sample_rate");
  rejects(FbankOptions().frame_shift_ms(0.01), "frame_shift_ms");
  rejects(FbankOptions().frame_length_ms(0.0), "frame_length_ms");
  rejects(FbankOptions().round_to_power_of_two(false).frame_length_ms(25.0625), "must be even");
  rejects(FbankOptions().high_freq(9000.0), "mel range");
  rejects(FbankOptions().low_freq(8000.0), "mel range");
  rejects(FbankOptions().low_freq(5000.0).high_freq(4000.0), "mel range");
  rejects(FbankOptions().high_freq(-8000.0), "mel range");

  CHECK_THROWS_AS(workbench::compute_fbank(torch::zeros({399})), std::invalid_argument);
  CHECK_THROWS_AS(workbench::compute_fbank(torch::zeros({2, 16000})), std::invalid_argument);
  CHECK_THROWS_AS(workbench::compute_fbank(torch::zeros({16000}, torch::kShort)), std::invalid_argument);
  CHECK_THROWS_AS(workbench::compute_fbank(torch::Tensor()), std::invalid_argument);
  CHECK_THROWS_AS(workbench::fbank_num_frames(100, FbankOptions().window("nope")), std::invalid_argument);
}

// Not run by default (hidden tag): `test_fbank "[.bench]"` prints seconds of compute per hour of 16 kHz audio
// (best of 3 passes over 10 minutes of noise, cut into 10 s or 600 s utterances), for 1 and 2 ATen threads.
TEST_CASE("compute_fbank speed", "[.bench]") {
  const std::int64_t seconds = 600;
  const torch::Tensor wave = torch::randn({seconds * 16000}) * 3000.0;
  const int saved = at::get_num_threads();
  for (int threads : {1, 2}) {
    at::set_num_threads(threads);
    for (std::int64_t utt_s : {10, 600}) {
      workbench::compute_fbank(wave.narrow(0, 0, 16000));  // warm-up, caches
      double best = 1e30;
      for (int rep = 0; rep < 3; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        for (std::int64_t s = 0; s + utt_s <= seconds; s += utt_s) {
          workbench::compute_fbank(wave.narrow(0, s * 16000, utt_s * 16000));
        }
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      }
      WARN("threads=" << threads << " utterance=" << utt_s << " s: " << best * 3600.0 / static_cast<double>(seconds)
                      << " s per hour of 16 kHz audio");
    }
  }
  at::set_num_threads(saved);
}
