#include "workbench/data.h"

#include <algorithm>
#include <limits>
#include <map>
#include <cmath>
#include <cstring>
#include <mutex>
#include <tuple>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/vocabulary.h"

namespace workbench {

TrainBatcher::~TrainBatcher() = default;

namespace {

// Batcher states are plain text: "<kind> <size of the data> <engine> ..." and lists as "<n> <i1> ... <in>".
void write_batches(std::ostream& out, const std::vector<std::vector<std::size_t>>& batches) {
  out << ' ' << batches.size();
  for (const auto& b : batches) {
    out << ' ' << b.size();
    for (auto i : b) out << ' ' << i;
  }
}

std::vector<std::vector<std::size_t>> read_batches(std::istream& in, std::size_t examples) {
  std::size_t n = 0;
  in >> n;
  std::vector<std::vector<std::size_t>> batches;
  for (std::size_t b = 0; in && b < n; ++b) {
    std::size_t size = 0;
    in >> size;
    std::vector<std::size_t> batch(size);
    for (auto& i : batch) {
      in >> i;
      if (i >= examples) in.setstate(std::ios::failbit);
    }
    batches.push_back(std::move(batch));
  }
  return batches;
}

std::ostringstream state_header(const char* kind, const PreparedData& data, const std::mt19937_64& rng) {
  std::ostringstream out;
  out << kind << ' ' << data.size() << ' ' << rng;
  return out;
}

// Reads the header state_header wrote; DataError when it is another kind's or another data's.
std::istringstream read_header(const std::string& state, const char* kind, const PreparedData& data,
                               std::mt19937_64& rng) {
  std::istringstream in(state);
  std::string k;
  std::size_t n = 0;
  in >> k >> n;
  if (k != kind || n != data.size())
    throw DataError(fmt::format("[data.{}]: the checkpoint's batcher state is of a {} over {} examples, not of a "
                                "{} over {} (other data or batching than the run it continues?)",
                                data.name, k.empty() ? "?" : k, n, kind, data.size()));
  in >> rng;
  return in;
}

void check_read(const std::istream& in, const PreparedData& data) {
  if (in.fail()) throw DataError(fmt::format("[data.{}]: the checkpoint's batcher state is unreadable", data.name));
}

// The process-wide feature cache (data.h). Keys hold the settings as text, so that two runs with any
// setting apart never share features.
struct FeatureCache {
  struct Key {
    std::string settings;
    std::uint64_t hash = 0;
    std::size_t samples = 0;
    bool operator<(const Key& o) const {
      return std::tie(hash, samples, settings) < std::tie(o.hash, o.samples, o.settings);
    }
  };
  std::mutex mutex;
  std::map<Key, torch::Tensor> entries;
  std::size_t bytes = 0, hits = 0, misses = 0;
  std::size_t limit = std::size_t{4} << 30;
};

FeatureCache& feature_cache() {
  static FeatureCache cache;
  return cache;
}

std::string settings_key(const FeatureSettings& s) {
  const FbankOptions& f = s.fbank;
  return fmt::format("{:a} {:a} {:a} {:a} {:a} {:a} {:a} {} {} {} {} {} {} {} {} {}", f.sample_rate(),
                     f.frame_length_ms(), f.frame_shift_ms(), f.preemphasis(), f.low_freq(), f.high_freq(),
                     f.dither(), f.num_mel_bins(), f.remove_dc_offset(), f.snip_edges(), f.window(), f.use_energy(),
                     f.round_to_power_of_two(), f.use_log_fbank(), f.use_power(), s.utterance_cmvn);
}

// A 64-bit hash of the samples' bits, a word at a time (FNV-1a's prime over 8-byte words, then a
// final avalanche); with the count and the settings in the key, a collision is not a practical concern.
std::uint64_t samples_hash(const std::vector<float>& samples) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  const auto* bytes = reinterpret_cast<const unsigned char*>(samples.data());
  const std::size_t n = samples.size() * sizeof(float);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, bytes + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 29;
  }
  for (; i < n; ++i) h = (h ^ bytes[i]) * 0x100000001b3ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

}  // namespace

FeatureCacheStats feature_cache_stats() {
  FeatureCache& c = feature_cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return {c.entries.size(), c.bytes, c.hits, c.misses};
}

void clear_feature_cache() {
  FeatureCache& c = feature_cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.entries.clear();
  c.bytes = c.hits = c.misses = 0;
}

void set_feature_cache_limit(std::size_t bytes) {
  FeatureCache& c = feature_cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  c.limit = bytes;
}

PreparedData prepare_data(const std::string& name, BatchKind kind, std::vector<Utterance>&& utterances,
                          const FeatureSettings& settings, const Vocabulary* vocabulary, double max_seconds) {
  const double rate = settings.fbank.sample_rate();
  std::vector<char> keep(utterances.size(), 0);
  for (std::size_t i = 0; i < utterances.size(); ++i) {
    const auto& u = utterances[i];
    double seconds = static_cast<double>(u.samples.size()) / rate;
    bool ok = kind == BatchKind::Text ||
              (fbank_num_frames(static_cast<std::int64_t>(u.samples.size()), settings.fbank) > 0 &&
               (max_seconds <= 0 || seconds <= max_seconds));
    if (kind != BatchKind::Speech && u.text.empty()) ok = false;
    keep[i] = ok;
  }
  std::vector<torch::Tensor> features(utterances.size());
  FeatureCache& cache = feature_cache();
  const bool cacheable = kind != BatchKind::Text;
  const std::string settings_text = cacheable ? settings_key(settings) : std::string();
  std::vector<FeatureCache::Key> keys(cacheable ? utterances.size() : 0);
  std::size_t hits = 0;
  if (cacheable) {
    for (std::size_t i = 0; i < utterances.size(); ++i)
      if (keep[i]) keys[i] = {settings_text, samples_hash(utterances[i].samples), utterances[i].samples.size()};
    std::lock_guard<std::mutex> lock(cache.mutex);
    for (std::size_t i = 0; i < utterances.size(); ++i) {
      if (!keep[i]) continue;
      auto it = cache.entries.find(keys[i]);
      if (it == cache.entries.end()) continue;
      features[i] = it->second;
      ++hits;
    }
    cache.hits += hits;
  }
  // Per-utterance work is small, so parallelise across utterances; ops inside run single-threaded.
  at::parallel_for(0, static_cast<std::int64_t>(utterances.size()), 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      auto& u = utterances[static_cast<std::size_t>(i)];
      if (!keep[static_cast<std::size_t>(i)] || kind == BatchKind::Text) continue;
      if (features[static_cast<std::size_t>(i)].defined()) continue;  // from the cache
      auto wave = torch::from_blob(u.samples.data(), {static_cast<std::int64_t>(u.samples.size())}, torch::kFloat32)
                      .mul(32768.0f);  // Kaldi's convention: int16 units
      auto f = compute_fbank(wave, settings.fbank);
      if (settings.utterance_cmvn) f = utterance_cmvn(f);
      features[static_cast<std::size_t>(i)] = f.contiguous();
    }
  });
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache.mutex);
    for (std::size_t i = 0; i < utterances.size(); ++i) {
      if (!keep[i] || !features[i].defined()) continue;
      const std::size_t bytes = static_cast<std::size_t>(features[i].numel()) * sizeof(float);
      if (cache.bytes + bytes > cache.limit) break;
      if (cache.entries.emplace(keys[i], features[i]).second) {
        cache.bytes += bytes;
        ++cache.misses;
      }
    }
  }
  PreparedData out;
  out.name = name;
  out.kind = kind;
  out.cached_features = hits;
  for (std::size_t i = 0; i < utterances.size(); ++i) {
    if (!keep[i]) continue;
    auto& u = utterances[i];
    out.seconds += static_cast<double>(u.samples.size()) / rate;
    if (kind != BatchKind::Text) out.features.push_back(std::move(features[i]));
    out.tokens.push_back(vocabulary ? vocabulary->encode(u.text) : std::vector<std::int64_t>{});
    out.ids.push_back(std::move(u.id));
    out.langs.push_back(std::move(u.lang));
    out.texts.push_back(std::move(u.text));
    out.targets.push_back(std::move(u.target));
    std::vector<float>().swap(u.samples);
  }
  return out;
}

Batch collate(const PreparedData& data, const std::vector<std::size_t>& indices) {
  Batch b;
  b.kind = data.kind;
  const auto n = static_cast<std::int64_t>(indices.size());
  const bool audio = data.kind != BatchKind::Text;
  std::int64_t max_t = 0, max_l = 0;
  for (auto i : indices) {
    if (audio) max_t = std::max(max_t, data.features[i].size(0));
    max_l = std::max(max_l, static_cast<std::int64_t>(data.tokens[i].size()));
  }
  if (audio) {
    const std::int64_t dim = n ? data.features[indices[0]].size(1) : 0;
    b.features = torch::zeros({n, max_t, dim}, torch::kFloat32);
    b.feature_lengths = torch::empty({n}, torch::kInt64);
  }
  b.tokens = torch::zeros({n, std::max<std::int64_t>(max_l, 1)}, torch::kInt64);
  b.token_lengths = torch::empty({n}, torch::kInt64);
  std::int64_t* fl = audio ? b.feature_lengths.data_ptr<std::int64_t>() : nullptr;
  auto tl = b.token_lengths.accessor<std::int64_t, 1>();
  auto* tok = b.tokens.data_ptr<std::int64_t>();
  const std::int64_t tok_stride = b.tokens.size(1);
  for (std::int64_t r = 0; r < n; ++r) {
    auto i = indices[static_cast<std::size_t>(r)];
    if (audio) {
      const auto& f = data.features[i];
      b.features[r].narrow(0, 0, f.size(0)).copy_(f);
      fl[r] = f.size(0);
    }
    const auto& t = data.tokens[i];
    std::copy(t.begin(), t.end(), tok + r * tok_stride);
    tl[r] = static_cast<std::int64_t>(t.size());
    b.ids.push_back(data.ids[i]);
    b.langs.push_back(data.langs[i]);
    b.texts.push_back(data.texts[i]);
    b.targets.push_back(i < data.targets.size() ? data.targets[i] : std::string());  // hand-made data may have none
  }
  return b;
}

BucketBatcher::BucketBatcher(const PreparedData& data, BatchingOptions options, std::uint64_t seed)
    : data_(data), options_(options), rng_(seed) {
  if (data_.size() == 0) throw DataError(fmt::format("[data.{}] has no usable examples", data_.name));
  plan_ = make_plan(options_.shuffle && !options_.sortagrad ? &rng_ : nullptr);
}

std::vector<std::vector<std::size_t>> BucketBatcher::make_plan(std::mt19937_64* jitter_rng) const {
  const bool jitter = jitter_rng != nullptr;
  std::vector<std::size_t> order(data_.size());
  std::iota(order.begin(), order.end(), 0);
  std::vector<double> key(data_.size());
  std::uniform_real_distribution<double> noise(0.9, 1.1);
  for (std::size_t i = 0; i < key.size(); ++i)
    key[i] = static_cast<double>(data_.length(i)) * (jitter ? noise(*jitter_rng) : 1.0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return key[a] < key[b]; });
  const double budget_frames = data_.kind == BatchKind::Text ? std::numeric_limits<double>::infinity()
                                                             : options_.batch_seconds * options_.frames_per_second;
  std::vector<std::vector<std::size_t>> plan;
  std::vector<std::size_t> current;
  std::int64_t max_t = 0;
  for (auto i : order) {
    std::int64_t t = data_.length(i);
    std::int64_t new_max = std::max(max_t, t);
    bool full = !current.empty() && (static_cast<double>(new_max) * static_cast<double>(current.size() + 1) > budget_frames ||
                                     static_cast<std::int64_t>(current.size()) >= options_.max_batch);
    if (full) {
      plan.push_back(std::move(current));
      current.clear();
      new_max = t;
    }
    current.push_back(i);
    max_t = new_max;
  }
  if (!current.empty()) plan.push_back(std::move(current));
  if (jitter) std::shuffle(plan.begin(), plan.end(), *jitter_rng);
  return plan;
}

std::vector<std::size_t> BucketBatcher::next_indices() {
  if (cursor_ >= plan_.size()) {
    plan_ = make_plan(options_.shuffle ? &rng_ : nullptr);
    cursor_ = 0;
    ++epoch_;
  }
  return plan_[cursor_++];
}

Batch BucketBatcher::next() { return collate(data_, next_indices()); }

std::string BucketBatcher::state() const {
  auto out = state_header("bucket", data_, rng_);
  out << ' ' << epoch_ << ' ' << cursor_;
  write_batches(out, plan_);
  return out.str();
}

void BucketBatcher::restore(const std::string& state) {
  std::mt19937_64 rng;
  auto in = read_header(state, "bucket", data_, rng);
  std::int64_t epoch = 0;
  std::size_t cursor = 0;
  in >> epoch >> cursor;
  auto plan = read_batches(in, data_.size());
  check_read(in, data_);
  rng_ = rng;
  epoch_ = epoch;
  cursor_ = cursor;
  plan_ = std::move(plan);
}

std::vector<Batch> BucketBatcher::all() const {
  std::vector<Batch> out;
  for (const auto& idx : make_plan(nullptr)) out.push_back(collate(data_, idx));
  return out;
}

LanguageSampler::LanguageSampler(const PreparedData& data, BatchingOptions options, double temperature,
                                 std::uint64_t seed)
    : data_(data), options_(options), rng_(seed) {
  if (data_.size() == 0) throw DataError(fmt::format("[data.{}] has no usable examples", data_.name));
  if (!(temperature > 0)) throw std::invalid_argument("language sampling temperature must be > 0");
  std::map<std::string, std::vector<std::size_t>> by_lang;
  for (std::size_t i = 0; i < data_.size(); ++i) by_lang[data_.langs[i]].push_back(i);
  std::vector<double> weights;
  for (auto& [lang, members] : by_lang) {
    languages_.push_back(lang);
    weights.push_back(std::pow(static_cast<double>(members.size()) / static_cast<double>(data_.size()), 1.0 / temperature));
    members_.push_back(std::move(members));
  }
  pick_language_ = std::discrete_distribution<std::size_t>(weights.begin(), weights.end());
}

std::vector<std::pair<std::string, double>> LanguageSampler::probabilities() const {
  std::vector<std::pair<std::string, double>> out;
  auto p = pick_language_.probabilities();
  for (std::size_t i = 0; i < languages_.size(); ++i) out.emplace_back(languages_[i], p[i]);
  return out;
}

void LanguageSampler::refill() {
  const bool audio = data_.kind != BatchKind::Text;
  const double budget_frames = options_.batch_seconds * options_.frames_per_second;
  std::vector<std::size_t> pool;
  const auto pool_size = static_cast<std::size_t>(kPoolBatches * std::max<std::int64_t>(options_.max_batch, 1));
  pool.reserve(pool_size);
  for (std::size_t n = 0; n < pool_size; ++n) {
    const auto& members = members_[pick_language_(rng_)];
    std::uniform_int_distribution<std::size_t> pick(0, members.size() - 1);
    pool.push_back(members[pick(rng_)]);
  }
  std::stable_sort(pool.begin(), pool.end(), [&](auto a, auto b) { return data_.length(a) < data_.length(b); });
  std::vector<std::vector<std::size_t>> batches(1);
  std::int64_t max_t = 0;
  for (std::size_t i : pool) {
    auto& current = batches.back();
    const std::int64_t new_max = std::max(max_t, data_.length(i));
    const bool full = static_cast<std::int64_t>(current.size()) >= options_.max_batch ||
                      (audio && !current.empty() &&
                       static_cast<double>(new_max) * static_cast<double>(current.size() + 1) > budget_frames);
    if (full) {
      batches.emplace_back();
      max_t = 0;
    }
    batches.back().push_back(i);  // the first example of a batch always goes in, however long
    max_t = std::max(max_t, data_.length(i));
  }
  std::shuffle(batches.begin(), batches.end(), rng_);
  for (auto& b : batches) queue_.push_back(std::move(b));
}

std::vector<std::size_t> LanguageSampler::next_indices() {
  if (queue_.empty()) refill();
  auto batch = std::move(queue_.front());
  queue_.pop_front();
  return batch;
}

Batch LanguageSampler::next() { return collate(data_, next_indices()); }

std::string LanguageSampler::state() const {
  auto out = state_header("language_sampler", data_, rng_);
  write_batches(out, {queue_.begin(), queue_.end()});
  return out.str();
}

void LanguageSampler::restore(const std::string& state) {
  std::mt19937_64 rng;
  auto in = read_header(state, "language_sampler", data_, rng);
  auto queue = read_batches(in, data_.size());
  check_read(in, data_);
  rng_ = rng;
  queue_.assign(std::make_move_iterator(queue.begin()), std::make_move_iterator(queue.end()));
}

std::vector<std::size_t> shard_rows(std::size_t global_size, int rank, int world) {
  std::vector<std::size_t> rows;
  for (std::size_t i = static_cast<std::size_t>(rank); i < global_size; i += static_cast<std::size_t>(world))
    rows.push_back(i);
  return rows;
}

ShardedBatcher::ShardedBatcher(const PreparedData& data, std::function<std::vector<std::size_t>()> draw, int rank,
                               int world, std::shared_ptr<TrainBatcher> source)
    : data_(data), draw_(std::move(draw)), rank_(rank), world_(world), source_(std::move(source)) {
  if (world_ < 1 || rank_ < 0 || rank_ >= world_)
    throw std::invalid_argument(fmt::format("ShardedBatcher: rank {} is not in a world of {}", rank_, world_));
}

std::string ShardedBatcher::state() const { return source_ ? source_->state() : std::string(); }

void ShardedBatcher::restore(const std::string& state) {
  if (source_) source_->restore(state);
}

Batch ShardedBatcher::next() {
  const std::vector<std::size_t> global = draw_();
  std::vector<std::size_t> mine;
  for (auto row : shard_rows(global.size(), rank_, world_)) mine.push_back(global[row]);
  share_ = global.empty() ? 0.0
                          : static_cast<double>(world_) * static_cast<double>(mine.size()) / static_cast<double>(global.size());
  if (mine.empty()) {
    Batch empty;
    empty.kind = data_.kind;
    return empty;
  }
  return collate(data_, mine);
}

}  // namespace workbench
