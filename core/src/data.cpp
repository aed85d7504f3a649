#include "workbench/data.h"

#include <algorithm>
#include <limits>
#include <map>
#include <cmath>
#include <numeric>
#include <stdexcept>

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/vocabulary.h"

namespace workbench {

TrainBatcher::~TrainBatcher() = default;

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
  // Per-utterance work is small, so parallelise across utterances; ops inside run single-threaded.
  at::parallel_for(0, static_cast<std::int64_t>(utterances.size()), 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      auto& u = utterances[static_cast<std::size_t>(i)];
      if (!keep[static_cast<std::size_t>(i)] || kind == BatchKind::Text) continue;
      auto wave = torch::from_blob(u.samples.data(), {static_cast<std::int64_t>(u.samples.size())}, torch::kFloat32)
                      .mul(32768.0f);  // Kaldi's convention: int16 units
      auto f = compute_fbank(wave, settings.fbank);
      if (settings.utterance_cmvn) f = utterance_cmvn(f);
      features[static_cast<std::size_t>(i)] = f.contiguous();
    }
  });
  PreparedData out;
  out.name = name;
  out.kind = kind;
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

std::vector<std::size_t> shard_rows(std::size_t global_size, int rank, int world) {
  std::vector<std::size_t> rows;
  for (std::size_t i = static_cast<std::size_t>(rank); i < global_size; i += static_cast<std::size_t>(world))
    rows.push_back(i);
  return rows;
}

ShardedBatcher::ShardedBatcher(const PreparedData& data, std::function<std::vector<std::size_t>()> draw, int rank,
                               int world, std::shared_ptr<void> keep)
    : data_(data), draw_(std::move(draw)), rank_(rank), world_(world), keep_(std::move(keep)) {
  if (world_ < 1 || rank_ < 0 || rank_ >= world_)
    throw std::invalid_argument(fmt::format("ShardedBatcher: rank {} is not in a world of {}", rank_, world_));
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
