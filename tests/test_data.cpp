// The core's data pipeline (prepare_data, collate, BucketBatcher), the learning-rate schedule, and the
// small I/O helpers that dataset plugins share (read_text_file, md5_hex, stable_bucket).
#include <torch/types.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "workbench/batch.h"
#include "workbench/data.h"
#include "workbench/error.h"
#include "workbench/io.h"
#include "workbench/prefetch.h"
#include "workbench/schedule.h"
#include "workbench/trainer.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using Catch::Matchers::Contains;

namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr int kRate = 16000;

/// Frames of a `samples`-long signal with Kaldi's snip_edges framing: 25 ms windows every 10 ms.
std::int64_t frames_of(std::int64_t samples) { return samples < 400 ? 0 : 1 + (samples - 400) / 160; }

Utterance sine(const std::string& id, std::int64_t samples, double hz, const std::string& text,
               const std::string& lang = "en") {
  Utterance u;
  u.id = id;
  u.lang = lang;
  u.text = text;
  u.path = "/synthetic/" + id + ".wav";
  u.samples.resize(static_cast<std::size_t>(samples));
  for (std::int64_t i = 0; i < samples; ++i)
    u.samples[static_cast<std::size_t>(i)] = static_cast<float>(0.3 * std::sin(2 * kPi * hz * i / kRate));
  return u;
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("wbtest_data_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

/// `n` utterances with lengths spread over 0.3 .. 2.0 s, ids "u0".."u<n-1>".
std::vector<Utterance> corpus(int n) {
  std::vector<Utterance> out;
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::int64_t> len(kRate * 3 / 10, kRate * 2);
  for (int i = 0; i < n; ++i) out.push_back(sine("u" + std::to_string(i), len(rng), 200.0 + 37 * i, "ab ba"));
  return out;
}

/// Every id in `batches`, with multiplicity.
std::multiset<std::string> ids_of(const std::vector<Batch>& batches) {
  std::multiset<std::string> ids;
  for (const auto& b : batches) ids.insert(b.ids.begin(), b.ids.end());
  return ids;
}

}  // namespace

TEST_CASE("prepare_data computes features, encodes transcripts and drops unusable utterances", "[data]") {
  auto vocab = Vocabulary::from_texts({"hello world", "привет"});
  std::vector<Utterance> utts;
  utts.push_back(sine("a", 8000, 440, "hello", "en"));        // 0.5 s
  utts.push_back(sine("b", 16000, 300, "привет", "ru"));      // 1.0 s
  utts.push_back(sine("c", 4800, 700, "world", "en"));        // 0.3 s
  utts.push_back(sine("empty", 8000, 500, "", "en"));         // paired without text: dropped
  utts.push_back(sine("short", 399, 500, "hello", "en"));     // shorter than one 25 ms window: dropped
  utts.push_back(sine("d", 11680, 250, "hex", "en"));         // 0.73 s, 'x' is not in the vocabulary
  const auto n_in = utts.size();
  auto data = prepare_data("train", BatchKind::Paired, std::move(utts), FeatureSettings{}, &vocab, 0.0);
  CHECK(utts.size() == n_in);  // the caller's vector is left in place; only its samples are released

  CHECK(data.name == "train");
  CHECK(data.kind == BatchKind::Paired);
  REQUIRE(data.size() == 4);
  CHECK(data.ids == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(data.langs == std::vector<std::string>{"en", "ru", "en", "en"});
  CHECK(data.texts == std::vector<std::string>{"hello", "привет", "world", "hex"});
  const std::vector<std::int64_t> samples = {8000, 16000, 4800, 11680};
  double seconds = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    INFO(data.ids[i]);
    REQUIRE(data.features[i].dim() == 2);
    CHECK(data.features[i].size(0) == frames_of(samples[i]));
    CHECK(data.features[i].size(1) == 80);
    CHECK(data.features[i].dtype() == torch::kFloat32);
    CHECK(torch::isfinite(data.features[i]).all().item<bool>());
    // Utterance CMVN: every mel bin has mean ~0 over the utterance.
    CHECK(data.features[i].mean(0).abs().max().item<double>() < 1e-3);
    CHECK(data.tokens[i] == vocab.encode(data.texts[i]));
    seconds += static_cast<double>(samples[i]) / kRate;
  }
  CHECK(data.features[0].size(0) == 48);
  CHECK(data.features[1].size(0) == 98);
  CHECK(data.features[3].size(0) == 71);
  CHECK(data.tokens[3].back() == Vocabulary::kUnknown);
  CHECK(data.seconds == Approx(seconds));
  CHECK(data.seconds == Approx(0.5 + 1.0 + 0.3 + 0.73));
}

TEST_CASE("prepare_data: unpaired speech keeps empty text, max_seconds, no vocabulary", "[data]") {
  std::vector<Utterance> utts;
  utts.push_back(sine("a", 8000, 440, ""));
  utts.push_back(sine("b", 24000, 440, "text is ignored"));
  utts.push_back(sine("c", 16000, 440, ""));
  auto speech = prepare_data("unlab", BatchKind::Speech, std::move(utts), FeatureSettings{}, nullptr, 1.0);
  // b (1.5 s) is longer than max_seconds; a and c are kept although their text is empty.
  CHECK(speech.ids == std::vector<std::string>{"a", "c"});
  CHECK(speech.kind == BatchKind::Speech);
  for (const auto& t : speech.tokens) CHECK(t.empty());  // no vocabulary: no tokens
  CHECK(speech.seconds == Approx(1.5));

  // Without CMVN and with 40 mel bins.
  FeatureSettings s;
  s.fbank.num_mel_bins(40);
  s.utterance_cmvn = false;
  std::vector<Utterance> one;
  one.push_back(sine("x", 16000, 1000, "x"));
  auto raw = prepare_data("x", BatchKind::Paired, std::move(one), s, nullptr, 0.0);
  REQUIRE(raw.size() == 1);
  CHECK(raw.features[0].size(1) == 40);
  CHECK(raw.features[0].mean().item<double>() > 1.0);  // log-mel energies of a loud tone, not normalised
}

TEST_CASE("collate pads features with zeros and tokens with blank", "[data][collate]") {
  auto vocab = Vocabulary::from_texts({"abc"});
  std::vector<Utterance> utts;
  utts.push_back(sine("s", 4800, 440, "a"));       // 28 frames, 1 token
  utts.push_back(sine("l", 16000, 440, "abcab"));  // 98 frames, 5 tokens
  utts.push_back(sine("m", 8000, 440, "cb"));      // 48 frames, 2 tokens
  auto data = prepare_data("d", BatchKind::Paired, std::move(utts), FeatureSettings{}, &vocab, 0.0);
  REQUIRE(data.size() == 3);

  Batch b = collate(data, {0, 1, 2});
  CHECK(b.kind == BatchKind::Paired);
  CHECK(b.size() == 3);
  REQUIRE(b.features.sizes() == torch::IntArrayRef({3, 98, 80}));
  CHECK(b.features.dtype() == torch::kFloat32);
  CHECK(torch::equal(b.feature_lengths, torch::tensor(std::vector<std::int64_t>{28, 98, 48})));
  CHECK(b.feature_lengths.dtype() == torch::kInt64);
  for (std::int64_t r = 0; r < 3; ++r) {
    const auto T = b.feature_lengths[r].item<std::int64_t>();
    INFO("row " << r);
    CHECK(torch::equal(b.features[r].narrow(0, 0, T), data.features[static_cast<std::size_t>(r)]));
    if (T < 98) CHECK(b.features[r].narrow(0, T, 98 - T).abs().sum().item<double>() == 0.0);
  }
  REQUIRE(b.tokens.sizes() == torch::IntArrayRef({3, 5}));
  CHECK(b.tokens.dtype() == torch::kInt64);
  CHECK(torch::equal(b.token_lengths, torch::tensor(std::vector<std::int64_t>{1, 5, 2})));
  CHECK(torch::equal(b.tokens[0], torch::tensor(std::vector<std::int64_t>{2, 0, 0, 0, 0})));
  CHECK(torch::equal(b.tokens[1], torch::tensor(std::vector<std::int64_t>{2, 3, 4, 2, 3})));
  CHECK(torch::equal(b.tokens[2], torch::tensor(std::vector<std::int64_t>{4, 3, 0, 0, 0})));
  CHECK(b.ids == std::vector<std::string>{"s", "l", "m"});
  CHECK(b.texts == std::vector<std::string>{"a", "abcab", "cb"});

  // Any selection and order.
  Batch two = collate(data, {2, 0});
  CHECK(two.features.sizes() == torch::IntArrayRef({2, 48, 80}));
  CHECK(two.ids == std::vector<std::string>{"m", "s"});
  CHECK(two.tokens.sizes() == torch::IntArrayRef({2, 2}));

  // Batch::to keeps everything on the CPU and leaves undefined tensors undefined.
  Batch moved = b.to(torch::kCPU);
  CHECK(torch::equal(moved.features, b.features));
  Batch text_only;
  text_only.kind = BatchKind::Text;
  text_only.tokens = torch::zeros({1, 1}, torch::kInt64);
  Batch text_moved = text_only.to(torch::kCPU);
  CHECK_FALSE(text_moved.features.defined());
  CHECK(text_moved.tokens.defined());
}

TEST_CASE("BucketBatcher: each example once per epoch, under the padded-audio budget", "[data][batcher]") {
  auto data = prepare_data("train", BatchKind::Paired, corpus(40), FeatureSettings{}, nullptr, 0.0);
  REQUIRE(data.size() == 40);
  BatchingOptions o;
  o.batch_seconds = 4.0;  // 400 padded frames per batch
  o.max_batch = 6;
  o.shuffle = true;
  BucketBatcher batcher(data, o, 42);
  CHECK(batcher.kind() == BatchKind::Paired);
  CHECK(batcher.epoch() == 0);

  const std::multiset<std::string> all_ids(data.ids.begin(), data.ids.end());
  for (int epoch = 0; epoch < 3; ++epoch) {
    INFO("epoch " << epoch);
    std::vector<Batch> batches;
    batches.push_back(batcher.next());  // the first batch of an epoch (starts it, after the first)
    CHECK(batcher.epoch() == epoch);
    const std::size_t n = batcher.batches_per_epoch();
    CHECK(n >= 40 / 6);
    for (std::size_t i = 1; i < n; ++i) batches.push_back(batcher.next());
    CHECK(batcher.epoch() == epoch);
    CHECK(ids_of(batches) == all_ids);
    for (const auto& b : batches) {
      const auto B = b.size();
      const auto T = b.features.size(1);
      CHECK(B >= 1);
      CHECK(B <= 6);
      CHECK(T == b.feature_lengths.max().item<std::int64_t>());
      if (B > 1) CHECK(static_cast<double>(B * T) <= 400.0);
    }
  }

  // The same seed gives the same batches.
  BucketBatcher again(data, o, 42);
  BucketBatcher first(data, o, 42);
  for (int i = 0; i < 15; ++i) CHECK(again.next().ids == first.next().ids);
}

TEST_CASE("BucketBatcher: an utterance longer than the budget gets a batch of its own", "[data][batcher]") {
  auto data = prepare_data("train", BatchKind::Paired, corpus(10), FeatureSettings{}, nullptr, 0.0);
  BatchingOptions o;
  o.batch_seconds = 0.5;  // 50 frames: shorter than every utterance
  BucketBatcher batcher(data, o, 1);
  CHECK(batcher.batches_per_epoch() == 10);
  for (const auto& b : batcher.all()) CHECK(b.size() == 1);
}

TEST_CASE("BucketBatcher::all is deterministic, complete and in length order", "[data][batcher]") {
  auto data = prepare_data("dev", BatchKind::Paired, corpus(25), FeatureSettings{}, nullptr, 0.0);
  BatchingOptions o;
  o.batch_seconds = 5.0;
  o.max_batch = 4;
  BucketBatcher a(data, o, 1), b(data, o, 999);
  auto first = a.all();
  auto second = a.all();
  auto other_seed = b.all();
  REQUIRE(first.size() == second.size());
  REQUIRE(first.size() == other_seed.size());
  for (std::size_t i = 0; i < first.size(); ++i) {
    CHECK(first[i].ids == second[i].ids);
    CHECK(first[i].ids == other_seed[i].ids);
    CHECK(torch::equal(first[i].features, second[i].features));
  }
  CHECK(ids_of(first) == std::multiset<std::string>(data.ids.begin(), data.ids.end()));
  std::vector<std::int64_t> lengths;
  for (const auto& batch : first) {
    CHECK(batch.size() <= 4);
    if (batch.size() > 1) CHECK(static_cast<double>(batch.size() * batch.features.size(1)) <= 500.0);
    for (std::int64_t r = 0; r < batch.size(); ++r) lengths.push_back(batch.feature_lengths[r].item<std::int64_t>());
  }
  CHECK(std::is_sorted(lengths.begin(), lengths.end()));

  // all() does not disturb training batches.
  BucketBatcher c(data, o, 1);
  auto before = c.next().ids;
  c.all();
  BucketBatcher d(data, o, 1);
  CHECK(d.next().ids == before);

  // Without shuffling, next() walks the same plan as all(), epoch after epoch.
  o.shuffle = false;
  BucketBatcher plain(data, o, 5);
  for (int epoch = 0; epoch < 2; ++epoch)
    for (const auto& expected : first) CHECK(plain.next().ids == expected.ids);
}

TEST_CASE("BucketBatcher refuses empty data", "[data][batcher]") {
  std::vector<Utterance> none;
  auto data = prepare_data("empty", BatchKind::Paired, std::move(none), FeatureSettings{}, nullptr, 0.0);
  CHECK(data.size() == 0);
  try {
    BucketBatcher b(data, BatchingOptions{}, 1);
    FAIL("no error for empty data");
  } catch (const DataError& e) {
    CHECK_THAT(std::string(e.what()), Contains("[data.empty]"));
  }
}

TEST_CASE("warmup_inverse_sqrt: linear warm-up to the peak, then 1/sqrt decay", "[schedule]") {
  const double peak = 2e-3;
  CHECK(warmup_inverse_sqrt(peak, 100, 1) == Approx(2e-5));
  CHECK(warmup_inverse_sqrt(peak, 100, 50) == Approx(1e-3));
  CHECK(warmup_inverse_sqrt(peak, 100, 99) == Approx(peak * 0.99));
  CHECK(warmup_inverse_sqrt(peak, 100, 100) == Approx(peak));
  CHECK(warmup_inverse_sqrt(peak, 100, 400) == Approx(peak / 2));
  CHECK(warmup_inverse_sqrt(peak, 100, 10000) == Approx(peak / 10));
  CHECK(warmup_inverse_sqrt(peak, 100, 101) == Approx(peak * std::sqrt(100.0 / 101.0)));
  // The peak is the maximum.
  double best = 0;
  std::int64_t best_step = 0;
  for (std::int64_t s = 1; s <= 1000; ++s) {
    double lr = warmup_inverse_sqrt(peak, 100, s);
    if (lr > best) {
      best = lr;
      best_step = s;
    }
  }
  CHECK(best_step == 100);
  // Steps count from 1 (0 is treated as 1); no warm-up means the peak at once, then decay is off.
  CHECK(warmup_inverse_sqrt(peak, 100, 0) == Approx(2e-5));
  CHECK(warmup_inverse_sqrt(peak, 0, 1) == peak);
  CHECK(warmup_inverse_sqrt(peak, 0, 500) == peak);
  CHECK(warmup_inverse_sqrt(peak, 1, 4) == Approx(peak / 2));
}

TEST_CASE("stable_bucket equals Python's int(md5(key).hexdigest(), 16) % n", "[io]") {
  // Expected values computed once with Python 3:
  //   int(hashlib.md5(key.encode()).hexdigest(), 16) % n
  // md5("activated") = c3905c37f4127686d512a7665206852e
  CHECK(md5_hex("activated") == "c3905c37f4127686d512a7665206852e");
  CHECK(md5_hex("") == "d41d8cd98f00b204e9800998ecf8427e");
  CHECK(md5_hex("привет") == "608333adc72f545078ede3aad71bfe74");
  CHECK(stable_bucket("activated", 10) == 2);
  CHECK(stable_bucket("activated", 7) == 6);
  CHECK(stable_bucket("activated", 1000003) == 59355);
  CHECK(stable_bucket("activated", 1099511627791LL) == 367096880994LL);  // 2^40 + 15
  CHECK(stable_bucket("hello-world", 10) == 0);
  CHECK(stable_bucket("vm-goodbye", 10) == 9);
  CHECK(stable_bucket("", 10) == 6);
  CHECK(stable_bucket("привет", 10) == 2);
  CHECK(stable_bucket("anything", 1) == 0);
}

TEST_CASE("read_text_file reads plain and gzip files", "[io]") {
  TempDir dir;
  std::string content;
  for (int i = 0; i < 20000; ++i) content += "line " + std::to_string(i) + ": привет\n";  // > 64 KiB
  REQUIRE(content.size() > 200000);

  const std::string plain = (dir.path / "plain.txt").string();
  {
    std::ofstream out(plain, std::ios::binary);
    out << content;
  }
  CHECK(read_text_file(plain) == content);

  const std::string gz = (dir.path / "text.txt.gz").string();
  {
    gzFile f = gzopen(gz.c_str(), "wb9");
    REQUIRE(f != nullptr);
    REQUIRE(gzwrite(f, content.data(), static_cast<unsigned>(content.size())) == static_cast<int>(content.size()));
    REQUIRE(gzclose(f) == Z_OK);
  }
  CHECK(fs::file_size(gz) < content.size() / 2);  // really compressed
  CHECK(read_text_file(gz) == content);

  // An empty file of each kind.
  const std::string empty = (dir.path / "empty.txt").string();
  { std::ofstream out(empty); }
  CHECK(read_text_file(empty).empty());
}

TEST_CASE("read_text_file errors name the file", "[io][errors]") {
  TempDir dir;
  for (const std::string name : {"missing.txt", "missing.txt.gz"}) {
    const std::string path = (dir.path / name).string();
    try {
      read_text_file(path);
      FAIL("no error for " << path);
    } catch (const DataError& e) {
      CHECK_THAT(std::string(e.what()), Contains(path));
    }
  }
  // A truncated gzip stream is an error, not silently shorter text.
  std::string content(100000, 'x');
  for (std::size_t i = 0; i < content.size(); ++i) content[i] = static_cast<char>('a' + (i * 7919) % 26);
  const std::string gz = (dir.path / "cut.txt.gz").string();
  {
    gzFile f = gzopen(gz.c_str(), "wb");
    REQUIRE(f != nullptr);
    gzwrite(f, content.data(), static_cast<unsigned>(content.size()));
    gzclose(f);
  }
  fs::resize_file(gz, fs::file_size(gz) / 2);
  try {
    std::string got = read_text_file(gz);
    FAIL("a truncated .gz read without error (" << got.size() << " of " << content.size() << " bytes)");
  } catch (const DataError& e) {
    CHECK_THAT(std::string(e.what()), Contains(gz));
  }
}

TEST_CASE("BucketBatcher: a state restored into a new batcher serves what the first would have served next",
          "[data][batcher][resume]") {
  auto data = prepare_data("train", BatchKind::Paired, corpus(20), FeatureSettings{}, nullptr, 0.0);
  BatchingOptions o;
  o.batch_seconds = 4.0;
  o.max_batch = 6;
  o.shuffle = true;
  BucketBatcher first(data, o, 7);
  for (int i = 0; i < 5; ++i) first.next_indices();  // into the second epoch
  const std::string state = first.state();
  BucketBatcher resumed(data, o, 12345);  // another seed: everything must come from the state
  resumed.restore(state);
  CHECK(resumed.epoch() == first.epoch());
  for (int i = 0; i < 3 * static_cast<int>(first.batches_per_epoch()); ++i) {
    INFO("batch " << i);
    CHECK(resumed.next_indices() == first.next_indices());
  }
  // A state of other data, or no state at all, is refused and leaves the batcher as it was.
  auto other = prepare_data("train", BatchKind::Paired, corpus(10), FeatureSettings{}, nullptr, 0.0);
  BucketBatcher small(other, o, 7);
  CHECK_THROWS_WITH(small.restore(state), Contains("over 20 examples, not of a bucket over 10"));
  CHECK_THROWS_AS(small.restore("bucket 10 garbage"), DataError);
  BucketBatcher fresh(other, o, 7);
  CHECK(small.next_indices() == fresh.next_indices());
}

namespace {

// Fails at its second batch; its state is how many batches it was asked for.
struct FailingBatcher final : TrainBatcher {
  int asked = 0;
  Batch next() override {
    if (++asked == 2) throw DataError("batch 2 is unreadable");
    Batch b;
    b.ids = {std::to_string(asked)};
    return b;
  }
  BatchKind kind() const override { return BatchKind::Text; }
  std::string state() const override { return std::to_string(asked); }
  void restore(const std::string& s) override { asked = std::stoi(s); }
};

}  // namespace

TEST_CASE("PrefetchBatcher: the wrapped batcher's batches and states, made one step ahead", "[data][batcher][prefetch]") {
  auto data = prepare_data("train", BatchKind::Paired, corpus(20), FeatureSettings{}, nullptr, 0.0);
  BatchingOptions o;
  o.batch_seconds = 4.0;
  o.max_batch = 6;
  o.shuffle = true;
  PrefetchBatcher ahead(std::make_shared<BucketBatcher>(data, o, 7));
  BucketBatcher plain(data, o, 7);
  CHECK(ahead.kind() == BatchKind::Paired);
  std::string state_at_5;
  for (int i = 0; i < 12; ++i) {  // over two epochs
    INFO("batch " << i);
    // Batch 5 has been made ahead by now; the state is the one before it, as the plain batcher's is.
    if (i == 5) {
      state_at_5 = ahead.state();
      CHECK(state_at_5 == plain.state());
    }
    Batch a = ahead.next(), b = plain.next();
    CHECK(a.ids == b.ids);
    CHECK(torch::equal(a.features, b.features));
    CHECK(torch::equal(a.feature_lengths, b.feature_lengths));
    CHECK(torch::equal(a.tokens, b.tokens));
    CHECK(ahead.share() == 1.0);
  }
  // restore() drops the batch made ahead: from the state of batch 5, batch 5 comes next.
  ahead.restore(state_at_5);
  BucketBatcher resumed(data, o, 12345);
  resumed.restore(state_at_5);
  for (int i = 0; i < 4; ++i) CHECK(ahead.next().ids == resumed.next().ids);

  // A batch that fails while made ahead fails the next() that would have returned it, and no other.
  PrefetchBatcher failing(std::make_shared<FailingBatcher>());
  CHECK(failing.next().ids == std::vector<std::string>{"1"});
  CHECK_THROWS_WITH(failing.next(), Contains("batch 2 is unreadable"));
  CHECK(failing.next().ids == std::vector<std::string>{"3"});
  CHECK(failing.state() == "3");  // the state before batch 4, made ahead
}

TEST_CASE("feature cache: the same audio and settings computed once per process, any other setting apart",
          "[data][cache]") {
  clear_feature_cache();
  auto fresh = prepare_data("a", BatchKind::Paired, corpus(5), FeatureSettings{}, nullptr, 0.0);
  CHECK(fresh.cached_features == 0);
  auto stats = feature_cache_stats();
  CHECK(stats.entries == 5);
  CHECK(stats.misses == 5);
  CHECK(stats.hits == 0);
  std::size_t floats = 0;
  for (const auto& f : fresh.features) floats += static_cast<std::size_t>(f.numel());
  CHECK(stats.bytes == floats * sizeof(float));

  // Another run (another data name, the same audio): every feature from the cache, the very tensors.
  auto again = prepare_data("b", BatchKind::Paired, corpus(5), FeatureSettings{}, nullptr, 0.0);
  CHECK(again.cached_features == 5);
  REQUIRE(again.size() == 5);
  for (std::size_t i = 0; i < 5; ++i) CHECK(again.features[i].data_ptr() == fresh.features[i].data_ptr());
  CHECK(feature_cache_stats().hits == 5);

  // One setting apart (40 mel bins, no CMVN): computed anew, not mixed up with the 80-bin ones.
  FeatureSettings s40;
  s40.fbank.num_mel_bins(40);
  auto other = prepare_data("c", BatchKind::Paired, corpus(5), s40, nullptr, 0.0);
  CHECK(other.cached_features == 0);
  CHECK(other.features[0].size(1) == 40);
  FeatureSettings no_cmvn;
  no_cmvn.utterance_cmvn = false;
  auto raw = prepare_data("d", BatchKind::Paired, corpus(5), no_cmvn, nullptr, 0.0);
  CHECK(raw.cached_features == 0);
  CHECK_FALSE(torch::equal(raw.features[0], fresh.features[0]));

  // One sample changed: another key.
  auto changed = corpus(5);
  changed[2].samples[100] += 0.01f;
  auto edited = prepare_data("e", BatchKind::Paired, std::move(changed), FeatureSettings{}, nullptr, 0.0);
  CHECK(edited.cached_features == 4);
  CHECK(edited.features[2].data_ptr() != fresh.features[2].data_ptr());

  // A limit of 0 bytes caches nothing new.
  const auto before = feature_cache_stats().entries;
  set_feature_cache_limit(0);
  FeatureSettings s64;
  s64.fbank.num_mel_bins(64);
  CHECK(prepare_data("h", BatchKind::Paired, corpus(5), s64, nullptr, 0.0).cached_features == 0);
  CHECK(feature_cache_stats().entries == before);
  set_feature_cache_limit(std::size_t{4} << 30);

  // The cached values are the computed ones.
  clear_feature_cache();
  auto recomputed = prepare_data("i", BatchKind::Paired, corpus(5), FeatureSettings{}, nullptr, 0.0);
  for (std::size_t i = 0; i < 5; ++i) CHECK(torch::equal(recomputed.features[i], fresh.features[i]));
}
