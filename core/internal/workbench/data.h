#pragma once
// The core's data pipeline: utterances -> filterbank features and token ids -> length-bucketed batches.
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "workbench/batch.h"
#include "workbench/fbank.h"

namespace workbench {

class Vocabulary;

/// One data source with features computed once, up front (it is small next to a training run, and
/// it keeps feature extraction off the training step).
struct PreparedData {
  std::string name;  ///< the [data.<name>] it came from
  BatchKind kind = BatchKind::Paired;
  std::vector<torch::Tensor> features;             ///< each (T_i, F) float32, 10 ms frames
  std::vector<std::vector<std::int64_t>> tokens;   ///< vocabulary ids of each transcript
  std::vector<std::string> ids, langs, texts;
  std::vector<std::string> targets;                ///< translation targets ("" when none)
  double seconds = 0;                              ///< total audio (s)
  std::size_t cached_features = 0;                 ///< how many features came from the process's cache
  std::size_t size() const { return ids.size(); }
  /// What batching sorts and budgets by: frames for audio, tokens for text.
  std::int64_t length(std::size_t i) const {
    return kind == BatchKind::Text ? static_cast<std::int64_t>(tokens[i].size()) : features[i].size(0);
  }
};

struct FeatureSettings {
  FbankOptions fbank;
  bool utterance_cmvn = true;
};

/// The process's feature cache: prepare_data keeps each utterance's features, keyed by a 64-bit hash of
/// its samples, their count and every feature setting, so that the runs of one process (a sweep's points
/// and stages) compute the features of the same audio once and share the tensors (read-only). New
/// entries stop once the cache holds `limit` bytes.
struct FeatureCacheStats {
  std::size_t entries = 0, bytes = 0, hits = 0, misses = 0;
};
FeatureCacheStats feature_cache_stats();
void clear_feature_cache();
/// Bytes of features the cache may hold (default 4 GiB; 0 turns caching off).
void set_feature_cache_limit(std::size_t bytes);

/// Computes features (in parallel over utterances; from the feature cache where it has them) and encodes transcripts with `vocabulary` (may be
/// null: tokens stay empty). Utterances longer than `max_seconds` (> 0) and shorter than one frame are
/// dropped; so are paired utterances with an empty transcript. The samples are released as it goes.
/// Text data has no features: its examples are the non-empty texts.
PreparedData prepare_data(const std::string& name, BatchKind kind, std::vector<Utterance>&& utterances,
                          const FeatureSettings& settings, const Vocabulary* vocabulary, double max_seconds);

/// Pads a selection of examples into a Batch (on the CPU). Text batches leave the speech fields undefined.
Batch collate(const PreparedData& data, const std::vector<std::size_t>& indices);

struct BatchingOptions {
  double batch_seconds = 160;  ///< padded audio per batch (s): B * T_max * hop <= this (audio only)
  std::int64_t max_batch = 64;
  bool shuffle = true;
  /// SortaGrad (Amodei et al. 2016, DeepSpeech 2, section 3.1): the first epoch goes from the shortest
  /// batches to the longest, which gets CTC off its all-blank plateau sooner.
  bool sortagrad = false;
  double frames_per_second = 100;
};

/// An endless source of training batches of one kind.
class TrainBatcher {
 public:
  virtual ~TrainBatcher();
  virtual Batch next() = 0;
  virtual BatchKind kind() const = 0;
  /// The last batch's rows as a share of the global batch, times the number of ranks: 1 on one rank.
  /// The trainer scales that batch's losses by it, so that the ranks' mean gradient is the gradient of
  /// the global batch's mean over rows (DDP's plain mean, when the shards are equal).
  virtual double share() const { return 1.0; }
  /// Resume: where the batcher is in its order (random engine, epoch, position), as text that restore()
  /// takes back; a restored batcher serves the batches an uninterrupted one would have served next.
  virtual std::string state() const = 0;
  /// Throws DataError when `state` is not one this kind of batcher wrote for the same data.
  virtual void restore(const std::string& state) = 0;
};

/// Length-bucketed batches: each epoch sorts the examples by length (with a little seeded jitter so that
/// batches differ between epochs), cuts batches under the padded-audio budget (audio) or at max_batch
/// (text), and shuffles their order.
class BucketBatcher final : public TrainBatcher {
 public:
  BucketBatcher(const PreparedData& data, BatchingOptions options, std::uint64_t seed);
  /// The next training batch; endless, a new epoch starts when one ends.
  Batch next() override;
  /// The examples of the next batch, without collating.
  std::vector<std::size_t> next_indices();
  /// Every example once, in length order, in deterministic batches (evaluation).
  std::vector<Batch> all() const;
  BatchKind kind() const override { return data_.kind; }
  std::int64_t epoch() const { return epoch_; }
  std::size_t batches_per_epoch() const { return plan_.size(); }
  std::string state() const override;
  void restore(const std::string& state) override;

 private:
  /// With `jitter_rng`: jittered lengths and shuffled batch order; without: deterministic.
  std::vector<std::vector<std::size_t>> make_plan(std::mt19937_64* jitter_rng) const;
  const PreparedData& data_;
  BatchingOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::vector<std::size_t>> plan_;
  std::size_t cursor_ = 0;
  std::int64_t epoch_ = 0;
};

/// Multilingual sampling with a temperature (XLM, Conneau & Lample 2019, section 3.1; mSLAM samples text
/// languages at T = 3): language l is drawn with probability q_l = p_l^(1/T) / sum_k p_k^(1/T), where p_l
/// is its share of the examples, then an example uniformly within it. T = 1 follows the data; a larger T
/// flattens it towards uniform. Examples are drawn kPoolBatches * max_batch at a time, sorted by length and
/// cut into batches under max_batch and the padded-audio budget (audio only), which are served in random
/// order: each batch holds examples of similar length, so little of it is padding, and the languages'
/// shares stay those of the draws.
class LanguageSampler final : public TrainBatcher {
 public:
  /// Throws DataError when `data` is empty, std::invalid_argument when temperature <= 0.
  LanguageSampler(const PreparedData& data, BatchingOptions options, double temperature, std::uint64_t seed);
  Batch next() override;
  BatchKind kind() const override { return data_.kind; }
  /// (language, q_l) in language order.
  std::vector<std::pair<std::string, double>> probabilities() const;
  /// The examples of the next batch, without collating (for tests and statistics).
  std::vector<std::size_t> next_indices();
  std::string state() const override;
  void restore(const std::string& state) override;
  static constexpr std::int64_t kPoolBatches = 16;

 private:
  void refill();
  std::deque<std::vector<std::size_t>> queue_;
  const PreparedData& data_;
  BatchingOptions options_;
  std::mt19937_64 rng_;
  std::vector<std::string> languages_;
  std::vector<std::vector<std::size_t>> members_;
  std::discrete_distribution<std::size_t> pick_language_;
};

/// Strided shards of a global batch: rank `rank` of `world` takes rows rank, rank + world, ... of its
/// `global_size` rows, so that each rank's rows span the batch's lengths alike (batches are cut from
/// length-sorted examples). Empty when global_size <= rank.
std::vector<std::size_t> shard_rows(std::size_t global_size, int rank, int world);

/// Data parallelism's batcher: every rank draws the same global batch from `draw` (the same seed and
/// plan, with `world` ranks' budget) and keeps its shard_rows of it. Across the ranks each example is
/// seen once per epoch, in the global order a single process with the whole budget would see.
class ShardedBatcher final : public TrainBatcher {
 public:
  /// `draw` gives the next global batch's examples of `data`; `source` is the batcher it draws from (kept
  /// alive, and whose state() is this one's).
  ShardedBatcher(const PreparedData& data, std::function<std::vector<std::size_t>()> draw, int rank, int world,
                 std::shared_ptr<TrainBatcher> source = nullptr);
  /// This rank's rows of the next global batch; a Batch of no rows when the global one has <= rank.
  Batch next() override;
  BatchKind kind() const override { return data_.kind; }
  double share() const override { return share_; }
  /// The source's; "" without one.
  std::string state() const override;
  void restore(const std::string& state) override;

 private:
  const PreparedData& data_;
  std::function<std::vector<std::size_t>()> draw_;
  int rank_, world_;
  std::shared_ptr<TrainBatcher> source_;
  double share_ = 1.0;
};

}  // namespace workbench
