#include "workbench/runner.h"

#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "workbench/data_options.h"
#include "workbench/dataset.h"
#include "workbench/error.h"
#include "workbench/io.h"
#include "workbench/runtime.h"
#include "workbench/tensor_memory.h"
#include "workbench/slot_options.h"
#include "workbench/text_embedding.h"

namespace workbench {

namespace fs = std::filesystem;

ComponentFactory::~ComponentFactory() = default;
RunRecorder::~RunRecorder() = default;

c10::Device select_device(const std::string& choice) {
  if (choice == "cpu") return c10::Device(c10::DeviceType::CPU);
  const bool cuda = torch::cuda::is_available();
  if (choice == "cuda" && !cuda)
    throw ConfigError("trainer.device = \"cuda\" but CUDA is not available (a CPU-only LibTorch, or no GPU)");
  return cuda ? c10::Device(c10::DeviceType::CUDA, 0) : c10::Device(c10::DeviceType::CPU);
}

namespace {

/// Forwards the trainer's metrics and decoded examples to the recorder.
class RecorderSink final : public MetricSink {
 public:
  explicit RecorderSink(RunRecorder& r) : recorder_(r) {}
  void record(std::int64_t step, const Metrics& metrics) override { recorder_.record(step, metrics); }
  void record_examples(std::int64_t step, const std::vector<EvalExample>& examples) override {
    recorder_.record_examples(step, examples);
  }

 private:
  RunRecorder& recorder_;
};

template <typename T>
std::shared_ptr<T> create_as(ComponentFactory& factory, PluginKind kind, const ComponentConfig& c,
                             const BuildContext& ctx) {
  auto made = factory.create(kind, c.plugin, c.options, ctx);
  auto cast = std::dynamic_pointer_cast<T>(made);
  if (!cast)
    throw PluginError(fmt::format("[{}]: the {} plugin '{}' made an object that is not a {}", c.section,
                                  to_string(kind), c.plugin, to_string(kind)));
  return cast;
}

}  // namespace

struct Runner::Impl {
  ComponentFactory& factory;
  RunnerOptions options;
  std::optional<ExperimentConfig> config;
  std::optional<RuntimeInfo> runtime;
  BuildContext base;
  std::set<std::string> train_names, eval_names;
  std::vector<std::string> train_texts;
  std::vector<std::string> train_targets;  // translation targets of the training data (decoder vocabularies)
  std::shared_ptr<const Vocabulary> vocabulary;
  std::map<std::string, PreparedData> prepared;
  std::map<std::string, std::shared_ptr<TrainBatcher>> batchers;
  std::map<std::string, std::vector<Batch>> eval_batches;
  bool data_ready = false, model_ready = false, components_ready = false, connected = false;
  ModelParts model;
  std::int64_t speech_dim = 0, context_dim = 0;
  std::vector<Objective> objectives;
  std::vector<EvaluatorSlot> evaluators;
  std::unique_ptr<RecorderSink> sink;
  RunRecorder* recorder = nullptr;
  std::unique_ptr<Trainer> trainer;
  std::string checkpoint_dir;
  std::vector<std::pair<std::string, OptionValue>> derived;
  std::shared_ptr<DataParallel> group;  // null: one process

  int rank() const { return group ? group->rank() : 0; }
  int world() const { return group ? group->world_size() : 1; }

  Impl(ComponentFactory& f, RunnerOptions o) : factory(f), options(std::move(o)) {}

  const ExperimentConfig& cfg() const {
    if (!config) throw std::logic_error("Runner: resolve() first");
    return *config;
  }
  void say(const std::string& text) const {
    if (options.verbose()) std::fprintf(stderr, "%s\n", text.c_str());
  }
  // A phase run again replaces what it recorded.
  void add(const std::string& key, OptionValue v) {
    auto it = std::find_if(derived.begin(), derived.end(), [&](const auto& kv) { return kv.first == key; });
    if (it != derived.end())
      it->second = v;
    else
      derived.emplace_back(key, v);
    if (recorder) recorder->record_params({{key, std::move(v)}});
  }
};

Runner::Runner(ComponentFactory& factory, RunnerOptions options)
    : impl_(std::make_unique<Impl>(factory, std::move(options))) {}
Runner::~Runner() = default;

const ExperimentConfig& Runner::resolve(const std::string& experiment_path) {
  return resolve(ExperimentFile::parse(experiment_path, impl_->options.overrides()));
}

const ExperimentConfig& Runner::resolve(const ExperimentFile& file) {
  ComponentFactory& factory = impl_->factory;
  return adopt(file.resolve([&](PluginKind kind, const std::string& name, const std::string& where) -> const OptionSchema& {
    return factory.schema(kind, name, where);
  }));
}

const ExperimentConfig& Runner::adopt(ExperimentConfig config) {
  impl_->config = std::move(config);
  const auto& cfg = *impl_->config;
  impl_->base = BuildContext();
  impl_->base.seed = static_cast<std::uint64_t>(cfg.seed);
  impl_->base.sample_rate = cfg.frontend.sample_rate();
  impl_->train_names.clear();
  impl_->eval_names.clear();
  for (const auto& o : cfg.objectives) impl_->train_names.insert(ObjectiveOptions::from(o.core).data());
  for (const auto& e : cfg.evaluators) impl_->eval_names.insert(EvaluatorOptions::from(e.core).data());
  if (impl_->options.dry_run()) impl_->train_names.clear(), impl_->eval_names.clear();
  if (impl_->rank() > 0) impl_->eval_names.clear();  // rank 0 evaluates alone
  return cfg;
}

void Runner::join(std::shared_ptr<DataParallel> group) {
  Impl& im = *impl_;
  if (!im.runtime) throw std::logic_error("Runner: configure_runtime() before join()");
  if (im.data_ready) throw std::logic_error("Runner: join() before prepare_data()");
  im.group = std::move(group);
  if (!im.group) return;
  if (im.runtime->device.is_cuda()) {
    im.runtime->device = c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(im.group->options().local_rank()));
    im.base.device = im.runtime->device;
  }
  if (im.rank() > 0) im.eval_names.clear();
  im.add("runtime.world_size", std::int64_t{im.world()});
  im.add("runtime.backend", im.group->backend());
}

const RuntimeInfo& Runner::configure_runtime() {
  const auto& tr = impl_->cfg().trainer;
  RuntimeInfo info;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  info.threads = tr.threads() > 0 ? static_cast<int>(tr.threads()) : cores;
  at::set_num_threads(info.threads);
  if (tr.blas_threads() > 0) set_blas_threads(static_cast<int>(tr.blas_threads()));
  if (tr.keep_freed_memory()) keep_freed_memory();
  // Before the model is built, so that its parameters count too: train/peak_memory_mb.
  install_tensor_memory_meter();
  const BlasInfo blas = detect_blas();
  info.blas = blas.name;
  info.blas_path = blas.path;
  info.reference_blas = blas.reference;
  info.device = select_device(tr.device());
  impl_->base.device = info.device;
  impl_->runtime = info;
  impl_->add("runtime.threads", std::int64_t{info.threads});
  impl_->add("runtime.blas", info.blas);
  return *impl_->runtime;
}

namespace {

// Audio shorter than one analysis frame has no features: a clear error naming the file, or with
// on_bad_audio = "skip" one more skipped file, rather than an utterance that silently disappears.
void drop_subframe_audio(std::vector<Utterance>& utterances, const FbankOptions& fbank, const std::string& data,
                         const std::string& on_bad_audio, std::vector<std::pair<std::string, std::string>>& skipped) {
  std::vector<Utterance> kept;
  kept.reserve(utterances.size());
  for (auto& u : utterances) {
    if (u.samples.empty() || fbank_num_frames(static_cast<std::int64_t>(u.samples.size()), fbank) > 0) {
      kept.push_back(std::move(u));
      continue;
    }
    const std::string why = fmt::format("{} samples ({:.1f} ms at {:.0f} Hz), shorter than one {:g} ms frame: no features",
                                        u.samples.size(), 1000.0 * static_cast<double>(u.samples.size()) / fbank.sample_rate(),
                                        fbank.sample_rate(), fbank.frame_length_ms());
    if (on_bad_audio != "skip") throw DataError(fmt::format("[data.{}] {}: {}", data, u.path, why));
    skipped.emplace_back(u.path, why);
  }
  utterances = std::move(kept);
}

}  // namespace

void Runner::prepare_data() {
  Impl& im = *impl_;
  const auto& cfg = im.cfg();
  if (!im.runtime) throw std::logic_error("Runner: configure_runtime() before prepare_data()");
  // A trainer of the data about to be replaced is stale, and its batchers' worker threads read that data.
  im.trainer.reset();
  torch::manual_seed(static_cast<std::uint64_t>(cfg.seed));
  const FeatureSettings features = cfg.frontend.features();
  std::map<std::string, std::vector<Utterance>> raw;
  std::map<std::string, BatchKind> kinds;
  const auto t_data = std::chrono::steady_clock::now();
  for (const auto& d : cfg.data) {
    if (!im.train_names.count(d.name) && !im.eval_names.count(d.name)) continue;
    const DataOptions data_options = DataOptions::from(d.core);
    const std::string& use = data_options.use();
    BuildContext ctx = im.base;
    ctx.load_audio = use != "text";
    ctx.on_bad_audio = data_options.on_bad_audio();
    std::vector<std::pair<std::string, std::string>> skipped;
    ctx.skipped_audio = &skipped;
    auto dataset = create_as<Dataset>(im.factory, PluginKind::Dataset, d, ctx);
    BatchKind kind = dataset->kind();
    if (use != "auto") {
      BatchKind wanted = use == "speech" ? BatchKind::Speech : use == "text" ? BatchKind::Text : BatchKind::Paired;
      // Paired data can serve as either half; nothing else can become what it lacks.
      if (wanted != kind && kind != BatchKind::Paired)
        d.core.fail("use", fmt::format("the {} plugin '{}' gives {} data, which cannot be used as {}",
                                       to_string(PluginKind::Dataset), d.plugin, to_string(kind), use));
      kind = wanted;
    }
    kinds[d.name] = kind;
    raw[d.name] = dataset->load(ctx);
    if (ctx.load_audio) drop_subframe_audio(raw[d.name], features.fbank, d.name, data_options.on_bad_audio(), skipped);
    if (data_options.on_bad_audio() == "skip") {
      for (const auto& [path, why] : skipped)
        std::fprintf(stderr, "  [data.%s] skipped %s: %s\n", d.name.c_str(), path.c_str(), why.c_str());
      im.add("derived.data." + d.name + ".skipped_audio", static_cast<std::int64_t>(skipped.size()));
    }
    for (auto& u : raw[d.name]) {
      if (kind == BatchKind::Speech) u.text.clear();
      if (kind == BatchKind::Text) std::vector<float>().swap(u.samples);
    }
  }
  im.train_texts.clear();
  for (const auto& n : im.train_names)
    if (kinds[n] != BatchKind::Speech)
      for (const auto& u : raw[n]) im.train_texts.push_back(u.text);
  im.train_targets.clear();
  for (const auto& n : im.train_names)
    for (const auto& u : raw[n])
      if (!u.target.empty()) im.train_targets.push_back(u.target);
  // Fine-tuning keeps the checkpoint's vocabulary, so that its output layers line up; characters the new
  // data adds map to unknown.
  // A new head (CTC, RNN-T) is sized from this run's data unless loaded weights index the vocabulary.
  const std::string& resume = im.options.resume_from();
  const bool checkpoint_vocabulary =
      !resume.empty() || cfg.init.uses_checkpoint_vocabulary(!cfg.text_embedding.plugin.empty());
  if (const std::string& init = resume.empty() ? cfg.init.checkpoint() : resume;
      checkpoint_vocabulary && !im.options.dry_run()) {
    if (init.empty()) throw std::logic_error("Runner: [init] from_run must be resolved to a checkpoint first");
    im.vocabulary = std::make_shared<const Vocabulary>(Vocabulary::deserialize(Trainer::checkpoint_vocabulary(init)));
    im.say(fmt::format("  vocabulary of {} symbols from {}", im.vocabulary->size(), init));
  } else {
    im.vocabulary = std::make_shared<const Vocabulary>(Vocabulary::from_texts(im.train_texts));
  }

  im.prepared.clear();
  for (auto& [name, utts] : raw) {
    const ComponentConfig* d = cfg.find_data(name);
    // Long utterances are dropped from training only; evaluation keeps everything.
    const double max_seconds = im.train_names.count(name) ? DataOptions::from(d->core).max_seconds() : 0.0;
    im.prepared[name] = workbench::prepare_data(name, kinds[name], std::move(utts), features, im.vocabulary.get(), max_seconds);
  }
  raw.clear();
  for (const auto& [name, p] : im.prepared) {
    im.add("derived.data." + name + ".utterances", static_cast<std::int64_t>(p.size()));
    if (p.kind == BatchKind::Text) {
      std::int64_t chars = 0;
      for (const auto& t : p.tokens) chars += static_cast<std::int64_t>(t.size());
      im.add("derived.data." + name + ".characters", chars);
      im.say(fmt::format("  data {:<8} {:6} sentences, {} characters (text)", name, p.size(), chars));
    } else {
      im.add("derived.data." + name + ".hours", p.seconds / 3600.0);
      if (p.cached_features > 0) {
        im.add("derived.data." + name + ".features_cached", static_cast<std::int64_t>(p.cached_features));
        im.say(fmt::format("  data {:<8} features of {} of its utterances from this process's cache", name,
                           p.cached_features));
      }
      im.say(fmt::format("  data {:<8} {:6} utterances, {:.2f} h ({})", name, p.size(), p.seconds / 3600.0,
                         to_string(p.kind)));
    }
  }
  im.add("derived.vocabulary_size", im.vocabulary->size());
  if (!im.options.dry_run())
    im.say(fmt::format("  {} characters in the vocabulary (blank and unknown included); data ready in {:.1f} s",
                       im.vocabulary->size(),
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - t_data).count()));

  im.batchers.clear();
  im.eval_batches.clear();
  const double fps = cfg.frontend.frames_per_second();
  const auto seed = static_cast<std::uint64_t>(cfg.seed);
  for (const auto& [name, p] : im.prepared) {
    const DataOptions data_options = DataOptions::from(cfg.find_data(name)->core);
    const BatchingOptions b = data_options.batching(fps);
    if (im.eval_names.count(name)) im.eval_batches[name] = BucketBatcher(p, b, seed).all();
    if (!im.train_names.count(name)) continue;
    if (im.world() > 1) {
      // Every rank plans the same global batches, with the budget of all the ranks, and keeps its shard:
      // the order is the one a single process with that budget would train on.
      BatchingOptions global = b;
      global.batch_seconds *= im.world();
      global.max_batch *= im.world();
      std::function<std::vector<std::size_t>()> draw;
      std::shared_ptr<TrainBatcher> keep;
      if (data_options.language_temperature() > 0) {
        auto sampler = std::make_shared<LanguageSampler>(p, global, data_options.language_temperature(), seed);
        for (const auto& [lang, q] : sampler->probabilities()) im.add("derived.data." + name + ".sampling." + lang, q);
        draw = [s = sampler.get()] { return s->next_indices(); };
        keep = sampler;
      } else {
        auto bucket = std::make_shared<BucketBatcher>(p, global, seed);
        draw = [s = bucket.get()] { return s->next_indices(); };
        keep = bucket;
      }
      im.batchers[name] = std::make_shared<ShardedBatcher>(p, std::move(draw), im.rank(), im.world(), std::move(keep));
    } else if (data_options.language_temperature() > 0) {
      auto sampler = std::make_shared<LanguageSampler>(p, b, data_options.language_temperature(), seed);
      for (const auto& [lang, q] : sampler->probabilities()) im.add("derived.data." + name + ".sampling." + lang, q);
      im.batchers[name] = sampler;
    } else {
      im.batchers[name] = std::make_shared<BucketBatcher>(p, b, seed);
    }
  }
  im.data_ready = true;
  im.model_ready = im.components_ready = im.connected = false;  // what was built on older data is stale
}

void Runner::build_model() try {
  Impl& im = *impl_;
  const auto& cfg = im.cfg();
  if (!im.data_ready) throw std::logic_error("Runner: prepare_data() before build_model()");
  ModelParts model;
  BuildContext enc_ctx = im.base;
  enc_ctx.input_dim = cfg.frontend.num_mel_bins();
  model.speech_encoder = create_as<Encoder>(im.factory, PluginKind::Encoder, cfg.speech_encoder, enc_ctx);
  im.speech_dim = model.speech_encoder->output_dim();
  im.context_dim = im.speech_dim;
  if (!cfg.shared_encoder.plugin.empty()) {
    BuildContext shared_ctx = im.base;
    shared_ctx.input_dim = im.speech_dim;
    model.shared_encoder = create_as<Encoder>(im.factory, PluginKind::Encoder, cfg.shared_encoder, shared_ctx);
    im.context_dim = model.shared_encoder->output_dim();
    if (cfg.modality_embedding) model.modality = ModalityEmbedding(im.context_dim);
  }
  if (!cfg.text_embedding.plugin.empty()) {
    BuildContext text_ctx = im.base;
    text_ctx.model_dim = im.context_dim;
    text_ctx.vocabulary = im.vocabulary;
    text_ctx.training_texts = im.options.dry_run() ? nullptr : &im.train_texts;
    model.text_embedding =
        create_as<TextEmbedding>(im.factory, PluginKind::TextEmbedding, cfg.text_embedding, text_ctx);
    if (model.text_embedding->output_dim() != im.context_dim)
      throw ConfigError(fmt::format("[model.text_embedding] gives {}-dimensional vectors but the shared encoder "
                                    "works in {}",
                                    model.text_embedding->output_dim(), im.context_dim));
  }
  im.model = std::move(model);
  im.model_ready = true;
  im.components_ready = im.connected = false;
} catch (const c10::Error& e) {
  // Sizes within every plugin's bounds can still add up to more memory than there is.
  const std::string what = e.what_without_backtrace();
  if (what.find("can't allocate memory") == std::string::npos) throw;
  throw ConfigError(fmt::format("building the model ran out of memory ({}); make [model.*] smaller",
                                what.substr(0, what.find('\n'))));
}

void Runner::create_components() {
  Impl& im = *impl_;
  const auto& cfg = im.cfg();
  if (!im.model_ready) throw std::logic_error("Runner: build_model() before create_components()");
  BuildContext loss_ctx = im.base;
  loss_ctx.model_dim = im.context_dim;
  loss_ctx.speech_dim = im.speech_dim;
  loss_ctx.text_vocab_size = im.model.text_embedding ? im.model.text_embedding->vocab_size() : 0;
  loss_ctx.vocabulary = im.vocabulary;
  loss_ctx.training_targets = im.train_targets.empty() ? nullptr : &im.train_targets;
  im.objectives.clear();
  for (const auto& o : cfg.objectives) {
    // One random stream per objective: two objectives of the same plugin must not mask alike.
    BuildContext ctx = loss_ctx;
    ctx.seed = im.base.seed * 1000003ULL + static_cast<std::uint64_t>(stable_bucket(o.name, 1LL << 40));
    // Nor two ranks: rank 0 draws what a single process would, the others their own masks.
    ctx.seed += 0x9E3779B97F4A7C15ULL * static_cast<std::uint64_t>(im.rank());
    const ObjectiveOptions slot = ObjectiveOptions::from(o.core);
    im.objectives.push_back(
        {o.name, create_as<Loss>(im.factory, PluginKind::Loss, o, ctx), slot.weight(), slot.data(), o.plugin});
  }
  im.evaluators.clear();
  for (const auto& e : cfg.evaluators) {
    const EvaluatorOptions slot = EvaluatorOptions::from(e.core);
    im.evaluators.push_back(
        {e.name, create_as<Evaluator>(im.factory, PluginKind::Evaluator, e, loss_ctx), slot.data(), slot.every(), e.plugin});
  }
  im.components_ready = true;
  im.connected = false;
}

void Runner::connect() {
  Impl& im = *impl_;
  if (!im.components_ready) throw std::logic_error("Runner: create_components() before connect()");
  if (im.connected) return;  // a loss may create parameters when connected: only once
  std::vector<Connections::Entry> entries;
  for (auto& o : im.objectives) entries.push_back({o.name, o.plugin, o.loss.get()});
  const Connections connections(std::move(entries));
  for (auto& o : im.objectives) o.loss->connect(connections);
  for (auto& e : im.evaluators) e.evaluator->connect(connections);
  // Counted once everything exists, and before the trainer does, so that a dry run counts alike.
  std::int64_t total = 0, model = 0;
  for (const auto& [name, n] : parameter_counts()) {
    if (name == "model" || name == "total") continue;
    total += n;
    if (name.rfind("objectives.", 0) != 0) model += n;
    im.add("derived.parameters." + name, n);
    im.say(fmt::format("  {:<24} {:14}  ({:.1f}M)", name, n, static_cast<double>(n) / 1e6));
  }
  im.say(fmt::format("  {:<24} {:14}  ({:.3f}B)", "model (without losses)", model, static_cast<double>(model) / 1e9));
  im.say(fmt::format("  {:<24} {:14}  ({:.3f}B)", "total", total, static_cast<double>(total) / 1e9));
  im.add("derived.parameters.model", model);
  im.add("derived.parameters.total", total);
  im.connected = true;
}

std::vector<std::pair<std::string, std::int64_t>> Runner::parameter_counts() const {
  std::vector<std::pair<std::string, std::int64_t>> out;
  auto modules = impl_->model.named_modules();
  for (auto& o : impl_->objectives)
    if (auto* m = o.loss->module()) modules.emplace_back("objectives." + o.name, m);
  std::int64_t total = 0, model = 0;
  for (const auto& [name, m] : modules) {
    std::int64_t n = 0;
    for (const auto& p : m->parameters()) n += p.numel();
    out.emplace_back(name, n);
    total += n;
    if (name.rfind("objectives.", 0) != 0) model += n;
  }
  out.emplace_back("model", model);
  out.emplace_back("total", total);
  return out;
}

Trainer& Runner::make_trainer(RunRecorder& recorder, const std::string& checkpoint_dir) {
  Impl& im = *impl_;
  const auto& cfg = im.cfg();
  if (!im.connected) throw std::logic_error("Runner: connect() before make_trainer()");
  // The old trainer goes first: it shares the modules (and gives back what it froze), and holds the old
  // sink. If the new one refuses its options, the runner is left with none, never a dangling one.
  im.trainer.reset();
  auto sink = std::make_unique<RecorderSink>(recorder);
  TrainerHooks hooks;
  hooks.on_checkpoint = [&recorder](const CheckpointInfo& c) { recorder.record_checkpoint(c); };
  hooks.on_checkpoint_removed = [&recorder](const std::string& path) { recorder.remove_checkpoint(path); };
  if (im.world() > 1) {
    DataParallel* group = im.group.get();
    hooks.after_backward = [group](std::int64_t, const std::vector<torch::Tensor>& params) {
      group->average_gradients(params);
    };
    hooks.reduce_metrics = [group](const Metrics& m) { return group->reduce_metrics(m); };
    hooks.vote = [group](StopVote mine) { return group->vote(mine); };
  }
  const std::string checkpoints = im.rank() == 0 ? checkpoint_dir : std::string();  // rank 0 writes them
  auto trainer = std::make_unique<Trainer>(cfg.trainer, im.model, im.objectives, im.evaluators, im.batchers,
                                           im.eval_batches, im.runtime->device, *sink, cfg.stages, std::move(hooks));
  im.trainer = std::move(trainer);
  im.sink = std::move(sink);
  if (im.recorder != &recorder) recorder.record_params(im.derived);  // what earlier phases found
  im.recorder = &recorder;
  im.checkpoint_dir = checkpoints;
  if (!checkpoints.empty())
    im.trainer->set_checkpoint_directory(checkpoints, cfg.resolved_toml, im.vocabulary->serialize());
  if (cfg.init.active() && im.options.resume_from().empty()) {
    const std::string& init = cfg.init.checkpoint();
    if (init.empty()) throw std::logic_error("Runner: [init] from_run must be resolved to a checkpoint first");
    // Named components must each be in the checkpoint. [] = the model parts the checkpoint has (one
    // pre-trained without a modality embedding has none); "all" = every component it has, heads too.
    const bool named = !cfg.init.components().empty() && !cfg.init.loads_all();
    std::vector<std::string> components = named ? cfg.init.components() : std::vector<std::string>{};
    if (cfg.init.components().empty())
      for (const auto& [name, m] : im.model.named_modules()) components.push_back(name);
    auto loaded = im.trainer->load_checkpoint(init, false, components, /*require_each=*/named);
    if (loaded.empty()) throw ConfigError(fmt::format("{}: the checkpoint holds none of this model's parts", init));
    std::vector<std::string> parts;  // what was loaded, by component
    for (const auto& key : loaded) {
      // "speech_encoder.<tensor>", "objectives.<name>.<tensor>"
      const auto dot = key.find('.', key.rfind("objectives.", 0) == 0 ? 11 : 0);
      const std::string name = key.substr(0, dot);
      if (std::find(parts.begin(), parts.end(), name) == parts.end()) parts.push_back(name);
    }
    im.add("derived.init.checkpoint", init);
    im.add("derived.init.tensors", static_cast<std::int64_t>(loaded.size()));
    im.say(fmt::format("  loaded {} tensors from {} ({})", loaded.size(), init, fmt::join(parts, ", ")));
  }
  if (im.world() > 1) {
    // Every rank starts from rank 0's weights (as DDP does at construction), then draws its own dropout.
    std::vector<torch::Tensor> state;
    auto modules = im.model.named_modules();
    for (auto& o : im.objectives)
      if (auto* m = o.loss->module()) modules.emplace_back("objectives." + o.name, m);
    for (auto& [name, m] : modules) {
      for (auto& p : m->parameters()) state.push_back(p);
      for (auto& b : m->buffers()) state.push_back(b);
    }
    im.group->broadcast(state);
    if (im.rank() > 0) torch::manual_seed(static_cast<std::uint64_t>(cfg.seed) + 1000003ULL * static_cast<std::uint64_t>(im.rank()));
  }
  return *im.trainer;
}

TrainResult Runner::train() {
  Impl& im = *impl_;
  if (!im.trainer) throw std::logic_error("Runner: make_trainer() before train()");
  TrainResult result = im.trainer->train();
  if (!im.checkpoint_dir.empty()) {
    auto c = im.trainer->checkpoint("final");
    im.add("derived.checkpoint", c.path);
  }
  im.add("derived.steps_done", result.steps);
  im.add("derived.train_seconds", result.train_seconds);
  im.add("derived.headline_metric", headline_metric(im.cfg(), result.final_metrics));
  return result;
}

Metrics Runner::evaluate() {
  Impl& im = *impl_;
  if (!im.trainer) throw std::logic_error("Runner: make_trainer() before evaluate()");
  Metrics metrics = im.trainer->evaluate();
  im.add("derived.headline_metric", headline_metric(im.cfg(), metrics));
  return metrics;
}

// What `workbench runs` shows: the kept-best metric, else the first evaluation metric (evaluators put
// their averages first), else the training loss.
std::string headline_metric(const ExperimentConfig& cfg, const Metrics& metrics) {
  if (!cfg.trainer.keep_best().empty()) return cfg.trainer.keep_best();
  if (!metrics.empty()) return metrics.front().first;
  return "train/loss";
}

TrainResult Runner::run(RunRecorder& recorder, const std::string& checkpoint_dir) {
  Impl& im = *impl_;
  im.recorder = &recorder;
  if (!im.runtime) throw std::logic_error("Runner: configure_runtime() before run()");
  // What configure_runtime recorded before there was a recorder.
  recorder.record_params(im.derived);
  prepare_data();
  build_model();
  create_components();
  connect();
  if (im.options.dry_run()) {
    im.add("runtime.dry_run", true);
    return {};
  }
  if (im.options.evaluate_only()) {
    make_trainer(recorder, "");
    TrainResult result;
    result.final_metrics = evaluate();
    return result;
  }
  make_trainer(recorder, checkpoint_dir);
  if (const std::string& resume = im.options.resume_from(); !resume.empty()) {
    im.trainer->resume(resume);
    im.add("derived.resumed_from_step", im.trainer->steps_done());
    im.say(fmt::format("  resumed at step {} from {}", im.trainer->steps_done(), resume));
  }
  return train();
}

const ExperimentConfig& Runner::config() const { return impl_->cfg(); }
const RuntimeInfo& Runner::runtime() const {
  if (!impl_->runtime) throw std::logic_error("Runner: configure_runtime() first");
  return *impl_->runtime;
}
const std::shared_ptr<const Vocabulary>& Runner::vocabulary() const { return impl_->vocabulary; }
const std::map<std::string, PreparedData>& Runner::data() const { return impl_->prepared; }
ModelParts& Runner::model() { return impl_->model; }
std::vector<Objective>& Runner::objectives() { return impl_->objectives; }
std::vector<EvaluatorSlot>& Runner::evaluators() { return impl_->evaluators; }
Trainer& Runner::trainer() {
  if (!impl_->trainer) throw std::logic_error("Runner: make_trainer() first");
  return *impl_->trainer;
}
const std::vector<std::pair<std::string, OptionValue>>& Runner::derived() const { return impl_->derived; }

std::vector<std::pair<PluginKind, std::string>> Runner::plugins_used() const {
  const auto& cfg = impl_->cfg();
  std::vector<std::pair<PluginKind, std::string>> out;
  auto add = [&](const ComponentConfig& c) {
    if (c.plugin.empty()) return;
    std::pair<PluginKind, std::string> key{c.kind, c.plugin};
    if (std::find(out.begin(), out.end(), key) == out.end()) out.push_back(key);
  };
  for (const auto& d : cfg.data) add(d);
  add(cfg.speech_encoder);
  add(cfg.text_embedding);
  add(cfg.shared_encoder);
  for (const auto& o : cfg.objectives) add(o);
  for (const auto& e : cfg.evaluators) add(e);
  return out;
}

}  // namespace workbench
