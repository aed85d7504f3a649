// Audio reading (libsndfile), resampling (libsoxr), audio writing and .npy I/O.

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "workbench/audio.h"
#include "workbench/npy.h"

// Catch2 must come after every header that pulls in glog (ATen, torch, workbench headers): glog's
// logging.h defines its own CHECK macro, which would otherwise silently replace Catch's CHECK.
#include <catch2/catch.hpp>

namespace fs = std::filesystem;

namespace {

const std::string kDataDir = WORKBENCH_TEST_DATA_DIR;
const std::string kAsteriskWav = "/usr/share/asterisk/sounds/en/hello-world.wav";
constexpr double kPi = 3.14159265358979323846;

// A fresh directory under the system temp dir, removed at scope exit.
struct TempDir {
  fs::path path;
  TempDir() {
    std::random_device rd;
    path = fs::temp_directory_path() / ("workbench_test_audio_" + std::to_string(rd()) + std::to_string(rd()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::vector<float> sine(double freq_hz, double rate_hz, std::size_t n, double amplitude, double phase = 0.0) {
  std::vector<float> out(n);
  for (std::size_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(amplitude * std::sin(2.0 * kPi * freq_hz * static_cast<double>(i) / rate_hz + phase));
  }
  return out;
}

double rms(const std::vector<float>& x, std::size_t begin, std::size_t end) {
  double s = 0.0;
  for (std::size_t i = begin; i < end; ++i) s += static_cast<double>(x[i]) * x[i];
  return std::sqrt(s / static_cast<double>(end - begin));
}

// Normalised cross-correlation at lag 0 over [begin, end).
double correlation(const std::vector<float>& a, const std::vector<float>& b, std::size_t begin, std::size_t end) {
  double ab = 0.0, aa = 0.0, bb = 0.0;
  for (std::size_t i = begin; i < end; ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(aa * bb);
}

// Writes a hand-made .npy (format 1.0) with the given header dict and raw data bytes.
void write_raw_npy(const std::string& path, std::string header, const std::string& data) {
  header.append(64 - (10 + header.size() + 1) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  out.put(static_cast<char>(header.size() & 0xff));
  out.put(static_cast<char>(header.size() >> 8));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

template <typename Fn>
std::string audio_error_message(Fn&& fn) {
  try {
    fn();
  } catch (const workbench::AudioError& e) {
    return e.what();
  }
  FAIL("expected workbench::AudioError");
  return {};
}

}  // namespace

TEST_CASE("read_audio: Asterisk prompt (8 kHz mono 16-bit WAV)", "[audio]") {
  if (!fs::exists(kAsteriskWav)) {
    WARN("skipping: " << kAsteriskWav << " not found (install asterisk-core-sounds-en-wav)");
    return;
  }
  const workbench::AudioInfo info = workbench::probe_audio(kAsteriskWav);
  CHECK(info.sample_rate == 8000);
  CHECK(info.channels == 1);
  CHECK(info.frames == 11234);

  const workbench::Audio a = workbench::read_audio(kAsteriskWav);
  CHECK(a.sample_rate == 8000);
  CHECK(static_cast<std::int64_t>(a.samples.size()) == info.frames);
  CHECK(a.duration_seconds() == Approx(1.40425).margin(1e-4));
  float peak = 0.0f;
  std::size_t out_of_range = 0;
  std::size_t not_int16 = 0;  // 16-bit PCM is normalised by exactly 32768
  for (float v : a.samples) {
    out_of_range += !(v >= -1.0f && v < 1.0f);
    not_int16 += v * 32768.0f != std::round(v * 32768.0f);
    peak = std::max(peak, std::fabs(v));
  }
  CHECK(out_of_range == 0);
  CHECK(not_int16 == 0);
  CHECK(peak > 0.1f);  // it is speech, not silence

  const workbench::Audio up = workbench::load_audio(kAsteriskWav, 16000);
  CHECK(up.sample_rate == 16000);
  CHECK(static_cast<std::int64_t>(up.samples.size()) == 2 * info.frames);
  const workbench::Audio same = workbench::load_audio(kAsteriskWav, 8000);
  CHECK(same.samples == a.samples);
}

TEST_CASE("read_audio: stereo 22.05 kHz file is averaged to mono", "[audio]") {
  const std::string path = kDataDir + "/stereo_22k.wav";
  const workbench::AudioInfo info = workbench::probe_audio(path);
  CHECK(info.sample_rate == 22050);
  CHECK(info.channels == 2);
  CHECK(info.frames == 2205);
  const workbench::Audio a = workbench::read_audio(path);
  CHECK(a.sample_rate == 22050);
  const torch::Tensor expected = workbench::read_npy(kDataDir + "/stereo_22k_mono.npy");
  REQUIRE(expected.scalar_type() == torch::kFloat32);
  REQUIRE(expected.numel() == static_cast<std::int64_t>(a.samples.size()));
  const float* e = expected.data_ptr<float>();
  std::size_t mismatches = 0;
  for (std::size_t i = 0; i < a.samples.size(); ++i) mismatches += a.samples[i] != e[i];
  CHECK(mismatches == 0);  // (L + R) / 2 of k / 32768 values is exact in float
}

TEST_CASE("read_audio: the speech golden input is 16 kHz and ~1.4 s", "[audio]") {
  const workbench::Audio a = workbench::read_audio(kDataDir + "/speech_16k.wav");
  CHECK(a.sample_rate == 16000);
  CHECK(a.duration_seconds() == Approx(1.404).margin(0.01));
}

TEST_CASE("resample: 1 kHz sine 8 kHz -> 16 kHz keeps frequency, amplitude, timing and length", "[audio][resample]") {
  const std::size_t n = 8000;  // 1 s
  const std::vector<float> in = sine(1000.0, 8000.0, n, 0.5);
  const std::vector<float> out = workbench::resample(in, 8000.0, 16000.0);
  CHECK(out.size() == 2 * n);
  REQUIRE(out.size() >= 2 * n - 4);
  const std::vector<float> ref = sine(1000.0, 16000.0, out.size(), 0.5);
  // Exclude 50 ms at each end (filter transients against the implicit zero padding).
  const std::size_t edge = 800;
  CHECK(correlation(out, ref, edge, out.size() - edge) > 0.9999);
  CHECK(rms(out, edge, out.size() - edge) == Approx(0.5 / std::sqrt(2.0)).epsilon(0.005));
}

TEST_CASE("resample: other ratios, identity and errors", "[audio][resample]") {
  const std::vector<float> in = sine(440.0, 44100.0, 44100, 0.3);
  SECTION("44.1 kHz -> 16 kHz") {
    const std::vector<float> out = workbench::resample(in, 44100.0, 16000.0);
    CHECK(out.size() == 16000);
    const std::vector<float> ref = sine(440.0, 16000.0, out.size(), 0.3);
    CHECK(correlation(out, ref, 800, out.size() - 800) > 0.9999);
  }
  SECTION("16 kHz -> 8 kHz removes content above the new Nyquist") {
    const std::vector<float> hi = sine(6000.0, 16000.0, 16000, 0.5);
    const std::vector<float> out = workbench::resample(hi, 16000.0, 8000.0);
    CHECK(out.size() == 8000);
    CHECK(rms(out, 400, out.size() - 400) < 1e-3);
  }
  SECTION("equal rates return the input unchanged") { CHECK(workbench::resample(in, 44100.0, 44100.0) == in); }
  SECTION("empty input") { CHECK(workbench::resample({}, 8000.0, 16000.0).empty()); }
  SECTION("bad rates") {
    CHECK_THROWS_AS(workbench::resample(in, 0.0, 16000.0), workbench::AudioError);
    CHECK_THROWS_AS(workbench::resample(in, 16000.0, -1.0), workbench::AudioError);
    CHECK_THROWS_AS(workbench::resample(in, std::nan(""), 16000.0), workbench::AudioError);
  }
}

TEST_CASE("audio errors name the file and carry libsndfile's message", "[audio][errors]") {
  TempDir tmp;
  SECTION("missing file") {
    const std::string path = tmp.file("does/not/exist.wav");
    const std::string msg = audio_error_message([&] { workbench::read_audio(path); });
    CHECK_THAT(msg, Catch::Contains("cannot open '" + path + "'"));
    CHECK_THAT(msg, Catch::Contains("No such file or directory"));
    CHECK_THAT(audio_error_message([&] { workbench::probe_audio(path); }), Catch::Contains(path));
    CHECK_THAT(audio_error_message([&] { workbench::load_audio(path, 16000); }), Catch::Contains(path));
  }
  SECTION("zero-byte file") {
    const std::string path = tmp.file("empty.wav");
    std::ofstream(path).close();
    const std::string msg = audio_error_message([&] { workbench::read_audio(path); });
    CHECK_THAT(msg, Catch::Contains(path));
    CHECK_THAT(msg, Catch::Contains("empty"));
  }
  SECTION("not audio") {
    const std::string path = tmp.file("text.wav");
    std::ofstream(path) << "this is not a RIFF file, just some text that is long enough to be sniffed\n";
    CHECK_THAT(audio_error_message([&] { workbench::read_audio(path); }), Catch::Contains(path));
  }
  SECTION("valid header but no frames") {
    // A 44-byte WAV header with a zero-length data chunk.
    const std::string path = tmp.file("no_frames.wav");
    {
      std::ofstream out(path, std::ios::binary);
      auto u32 = [&](std::uint32_t v) {
        for (int i = 0; i < 4; ++i) out.put(static_cast<char>((v >> (8 * i)) & 0xff));
      };
      auto u16 = [&](std::uint16_t v) {
        out.put(static_cast<char>(v & 0xff));
        out.put(static_cast<char>(v >> 8));
      };
      out.write("RIFF", 4);
      u32(36);
      out.write("WAVEfmt ", 8);
      u32(16);
      u16(1);  // PCM
      u16(1);  // mono
      u32(16000);
      u32(32000);
      u16(2);
      u16(16);
      out.write("data", 4);
      u32(0);
    }
    const std::string msg = audio_error_message([&] { workbench::read_audio(path); });
    CHECK_THAT(msg, Catch::Contains(path));
    CHECK_THAT(msg, Catch::Contains("no audio frames"));
  }
  SECTION("bad target rate") {
    CHECK_THROWS_AS(workbench::load_audio(kDataDir + "/speech_16k.wav", 0), workbench::AudioError);
  }
}

TEST_CASE("write_audio / read_audio round trip through libsndfile codecs", "[audio][formats]") {
  TempDir tmp;
  workbench::Audio a;
  a.sample_rate = 16000;
  a.samples = sine(440.0, 16000.0, 16000, 0.5);
  // Quantise to 16-bit so that lossless formats must give the samples back exactly.
  for (float& v : a.samples) v = std::round(v * 32768.0f) / 32768.0f;

  for (const std::string ext : {"wav", "flac"}) {
    CAPTURE(ext);
    const std::string path = tmp.file("sine." + ext);
    workbench::write_audio(path, a);
    const workbench::AudioInfo info = workbench::probe_audio(path);
    CHECK(info.sample_rate == 16000);
    CHECK(info.channels == 1);
    CHECK(info.frames == 16000);
    const workbench::Audio b = workbench::read_audio(path);
    CHECK(b.sample_rate == 16000);
    CHECK(b.samples == a.samples);
  }
  if (fs::file_size(tmp.file("sine.flac")) >= fs::file_size(tmp.file("sine.wav"))) {
    WARN("FLAC is not smaller than WAV: is FLAC really being encoded?");
  }

  // Lossy codecs: only check that they decode to something of the right length and level.
  for (const std::string ext : {"ogg", "opus"}) {
    CAPTURE(ext);
    const std::string path = tmp.file("sine." + ext);
    try {
      workbench::write_audio(path, a);
    } catch (const workbench::AudioError& e) {
      WARN("libsndfile cannot write ." << ext << " here, skipping: " << e.what());
      continue;
    }
    const workbench::Audio b = workbench::read_audio(path);
    CHECK(b.sample_rate == 16000);
    CHECK(static_cast<double>(b.samples.size()) == Approx(16000.0).margin(1000.0));
    CHECK(rms(b.samples, 1000, std::min<std::size_t>(b.samples.size(), 15000)) ==
          Approx(0.5 / std::sqrt(2.0)).epsilon(0.1));
  }

  CHECK_THROWS_AS(workbench::write_audio(tmp.file("x.mp4"), a), workbench::AudioError);
  CHECK_THROWS_AS(workbench::write_audio(tmp.file("x.wav"), workbench::Audio{}), workbench::AudioError);
  CHECK_THAT(audio_error_message([&] { workbench::write_audio(tmp.file("no/such/dir/x.wav"), a); }),
             Catch::Contains("no/such/dir/x.wav"));
}

TEST_CASE("npy: round trips", "[npy]") {
  TempDir tmp;
  SECTION("float32 2-D") {
    const torch::Tensor t = torch::randn({7, 5});
    workbench::write_npy(tmp.file("a.npy"), t);
    const torch::Tensor r = workbench::read_npy(tmp.file("a.npy"));
    CHECK(r.scalar_type() == torch::kFloat32);
    CHECK(torch::equal(r, t));
  }
  SECTION("float64 3-D, non-contiguous input") {
    const torch::Tensor t = torch::randn({3, 4, 2}, torch::kFloat64).transpose(0, 2);
    workbench::write_npy(tmp.file("b.npy"), t);
    const torch::Tensor r = workbench::read_npy(tmp.file("b.npy"));
    CHECK(r.scalar_type() == torch::kFloat64);
    CHECK(r.sizes() == torch::IntArrayRef({2, 4, 3}));
    CHECK(torch::equal(r, t));
  }
  SECTION("int64 1-D, int32, 0-d and empty") {
    const torch::Tensor i64 = torch::arange(-5, 1000, torch::kLong);
    workbench::write_npy(tmp.file("c.npy"), i64);
    CHECK(torch::equal(workbench::read_npy(tmp.file("c.npy")), i64));
    const torch::Tensor i32 = torch::arange(0, 10, torch::kInt).reshape({2, 5});
    workbench::write_npy(tmp.file("d.npy"), i32);
    CHECK(torch::equal(workbench::read_npy(tmp.file("d.npy")), i32));
    const torch::Tensor scalar = torch::tensor(3.5, torch::kFloat64);
    workbench::write_npy(tmp.file("e.npy"), scalar);
    const torch::Tensor rs = workbench::read_npy(tmp.file("e.npy"));
    CHECK(rs.dim() == 0);
    CHECK(rs.item<double>() == 3.5);
    const torch::Tensor empty = torch::zeros({0, 80});
    workbench::write_npy(tmp.file("f.npy"), empty);
    CHECK(workbench::read_npy(tmp.file("f.npy")).sizes() == torch::IntArrayRef({0, 80}));
  }
  SECTION("header is NumPy format 1.0, 64-byte aligned") {
    workbench::write_npy(tmp.file("g.npy"), torch::zeros({2, 3}));
    std::ifstream in(tmp.file("g.npy"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // 10-byte prefix + 60-character dict + padding + '\n' = 128 bytes, then 6 floats.
    REQUIRE(bytes.size() == 128 + 6 * 4);
    CHECK(bytes.substr(0, 8) == std::string("\x93NUMPY\x01\x00", 8));
    CHECK(static_cast<unsigned char>(bytes[8]) == 118);
    CHECK(bytes[9] == 0);
    CHECK(bytes[127] == '\n');
    CHECK_THAT(bytes.substr(10, 118), Catch::StartsWith("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
  }
  SECTION("reads a NumPy-written file") {
    const torch::Tensor g = workbench::read_npy(kDataDir + "/fbank_default.npy");
    CHECK(g.scalar_type() == torch::kFloat32);
    CHECK(g.sizes() == torch::IntArrayRef({138, 80}));
  }
  SECTION("Fortran order is read back in C order") {
    // np.asfortranarray(np.arange(6, dtype='<i8').reshape(2, 3)) stores 0 3 1 4 2 5.
    std::string data;
    for (std::int64_t v : {0, 3, 1, 4, 2, 5}) data.append(reinterpret_cast<const char*>(&v), 8);
    write_raw_npy(tmp.file("h.npy"), "{'descr': '<i8', 'fortran_order': True, 'shape': (2, 3), }", data);
    const torch::Tensor r = workbench::read_npy(tmp.file("h.npy"));
    CHECK(torch::equal(r, torch::arange(6, torch::kLong).reshape({2, 3})));
  }
}

TEST_CASE("npy: errors", "[npy]") {
  TempDir tmp;
  auto npy_error = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const workbench::NpyError& e) {
      return e.what();
    }
    FAIL("expected workbench::NpyError");
    return {};
  };
  const std::string missing = tmp.file("missing.npy");
  CHECK_THAT(npy_error([&] { workbench::read_npy(missing); }), Catch::Contains(missing));
  CHECK_THAT(npy_error([&] { workbench::write_npy(tmp.file("u8.npy"), torch::zeros({3}, torch::kByte)); }),
             Catch::Contains("unsupported dtype"));
  CHECK_THAT(npy_error([&] { workbench::write_npy(tmp.file("no/dir/x.npy"), torch::zeros({3})); }),
             Catch::Contains("no/dir/x.npy"));

  const std::string text = tmp.file("text.npy");
  std::ofstream(text) << "definitely not numpy";
  CHECK_THAT(npy_error([&] { workbench::read_npy(text); }), Catch::Contains("bad magic"));

  // Truncated data.
  workbench::write_npy(tmp.file("t.npy"), torch::zeros({100}));
  fs::resize_file(tmp.file("t.npy"), 128 + 100);  // header is 128 bytes, data 400
  CHECK_THAT(npy_error([&] { workbench::read_npy(tmp.file("t.npy")); }), Catch::Contains("truncated"));

  // Big-endian data.
  write_raw_npy(tmp.file("be.npy"), "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                std::string("\x3f\x80\x00\x00", 4));
  CHECK_THAT(npy_error([&] { workbench::read_npy(tmp.file("be.npy")); }), Catch::Contains("big-endian"));
}
