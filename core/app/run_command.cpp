// `workbench run`: resolve the experiment, record the run, build every component from its plugin,
// train, evaluate, checkpoint, and record the outcome (finished, failed or interrupted) whatever happens.
#include <ATen/Parallel.h>
#include <torch/cuda.h>
#include <torch/utils.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "commands.h"
#include "workbench/data.h"
#include "workbench/dataset.h"
#include "workbench/error.h"
#include "workbench/experiment.h"
#include "workbench/io.h"
#include "workbench/registry.h"
#include "workbench/run_store.h"
#include "workbench/runtime.h"
#include "workbench/text_embedding.h"
#include "workbench/trainer.h"
#include "workbench/vocabulary.h"

namespace workbench::app {

namespace fs = std::filesystem;
using results::RunStatus;
using results::RunStore;

namespace {

class StoreSink final : public MetricSink {
 public:
  StoreSink(RunStore& store, std::int64_t run) : store_(store), run_(run) {}
  void record(std::int64_t step, const std::vector<std::pair<std::string, double>>& metrics) override {
    store_.log_metrics(run_, step, metrics);
  }

 private:
  RunStore& store_;
  std::int64_t run_;
};

results::Param to_param(const std::string& key, const OptionValue& v) {
  results::Param p;
  p.key = key;
  if (const auto* s = std::get_if<std::string>(&v)) {
    p.text = *s;  // strings unquoted: WHERE value_text = 'conformer'
  } else {
    p.text = to_toml(v);
  }
  if (const auto* b = std::get_if<bool>(&v)) p.number = *b ? 1.0 : 0.0;
  if (const auto* i = std::get_if<std::int64_t>(&v)) p.number = static_cast<double>(*i);
  if (const auto* d = std::get_if<double>(&v)) p.number = *d;
  return p;
}

c10::Device pick_device(const std::string& choice) {
  if (choice == "cpu") return c10::Device(c10::DeviceType::CPU);
  bool cuda = torch::cuda::is_available();
  if (choice == "cuda" && !cuda)
    throw ConfigError("trainer.device = \"cuda\" but CUDA is not available (a CPU-only LibTorch, or no GPU)");
  return cuda ? c10::Device(c10::DeviceType::CUDA, 0) : c10::Device(c10::DeviceType::CPU);
}

FeatureSettings feature_settings(const Options& f) {
  FeatureSettings s;
  s.fbank.sample_rate(static_cast<double>(f.get_int("sample_rate")))
      .num_mel_bins(f.get_int("num_mel_bins"))
      .frame_length_ms(f.get_float("frame_length_ms"))
      .frame_shift_ms(f.get_float("frame_shift_ms"))
      .preemphasis(f.get_float("preemphasis"))
      .low_freq(f.get_float("low_freq"))
      .high_freq(f.get_float("high_freq"))
      .window(f.get_string("window"));
  s.utterance_cmvn = f.get_string("cmvn") == "utterance";
  return s;
}

std::string raw_file_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Prints and records (derived.parameters.<part>, .model, .total) the parameters of each module. The
/// papers' sizes count the model; the losses' heads (quantizer, output layers) go after pre-training.
void record_parameter_counts(const std::vector<std::pair<std::string, torch::nn::Module*>>& modules,
                             std::vector<results::Param>& derived) {
  std::int64_t total = 0, model = 0;
  for (const auto& [name, m] : modules) {
    std::int64_t n = 0;
    for (const auto& p : m->parameters()) n += p.numel();
    total += n;
    if (name.rfind("objectives.", 0) != 0) model += n;
    derived.push_back(to_param("derived.parameters." + name, n));
    std::fprintf(stderr, "  %-24s %14lld  (%.1fM)\n", name.c_str(), static_cast<long long>(n), n / 1e6);
  }
  std::fprintf(stderr, "  %-24s %14lld  (%.3fB)\n", "model (without losses)", static_cast<long long>(model), model / 1e9);
  std::fprintf(stderr, "  %-24s %14lld  (%.3fB)\n", "total", static_cast<long long>(total), total / 1e9);
  derived.push_back(to_param("derived.parameters.model", model));
  derived.push_back(to_param("derived.parameters.total", total));
}

}  // namespace

int run_command(const RunArgs& args) {
  install_interrupt_handler();
  const auto t_start = std::chrono::steady_clock::now();

  // Resolve the configuration first: --dump-config must not touch the database.
  Registry registry;
  std::unique_ptr<ExperimentConfig> config;
  std::string config_error;
  try {
    ExperimentFile file = ExperimentFile::parse(args.experiment, args.overrides);
    for (const auto& d : Registry::default_search_paths()) registry.load_directory(d);
    for (const auto& d : file.plugin_paths()) registry.load_directory(d);
    config = std::make_unique<ExperimentConfig>(file.resolve(
        [&](PluginKind kind, const std::string& name, const std::string& where) -> const OptionSchema& {
          return registry.get(kind, name, where).descriptor.options;
        }));
  } catch (const Error& e) {
    if (args.dump_config) throw;
    config_error = e.what();
  }
  if (args.dump_config) {
    std::fputs(config->resolved_toml.c_str(), stdout);
    return 0;
  }

  RunStore store(args.db);
  results::RunInfo info;
  info.experiment_path = args.experiment;
  info.host = host_name();
  info.git_revision = workbench_git_revision();
  info.torch_version = torch_header_version();
  if (!config) {
    // Nothing is lost: even a run whose file does not parse is recorded, with the text it had.
    info.experiment_name = fs::path(args.experiment).stem().string();
    info.config_toml = raw_file_text(args.experiment);
    info.device = "none";
    auto run = store.begin_run(info);
    store.finish_run(run, RunStatus::Failed, config_error);
    std::fprintf(stderr, "error: %s\n(recorded as failed run %lld in %s)\n", config_error.c_str(),
                 static_cast<long long>(run), args.db.c_str());
    return 1;
  }
  const ExperimentConfig& cfg = *config;
  const Options& tr = cfg.trainer;

  // Threads before anything runs on the pools.
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int threads = tr.get_int("threads") > 0 ? static_cast<int>(tr.get_int("threads")) : cores;
  at::set_num_threads(threads);
  if (tr.get_int("blas_threads") > 0) set_blas_threads(static_cast<int>(tr.get_int("blas_threads")));
  const BlasInfo blas = detect_blas();
  std::string device_error;
  c10::Device device(c10::DeviceType::CPU);
  try {
    device = pick_device(tr.get_string("device"));
  } catch (const Error& e) {
    device_error = e.what();
  }

  info.experiment_name = cfg.name;
  info.config_toml = cfg.resolved_toml;
  info.config_hash = results::sha256_text(cfg.resolved_toml);
  info.seed = cfg.seed;
  info.kind = args.dry_run ? "dry-run" : "train";
  info.device = device_error.empty() ? device.str() : tr.get_string("device") + " (unavailable)";
  const std::int64_t run = store.begin_run(info);
  if (!device_error.empty()) {
    store.finish_run(run, RunStatus::Failed, device_error);
    std::fprintf(stderr, "error: %s\n(recorded as failed run %lld in %s)\n", device_error.c_str(),
                 static_cast<long long>(run), args.db.c_str());
    return 1;
  }

  std::fprintf(stderr, "workbench run %lld: %s (%s)\n", static_cast<long long>(run), cfg.name.c_str(),
               args.experiment.c_str());
  std::fprintf(stderr, "  LibTorch %s, device %s, %d intra-op threads; BLAS: %s%s%s\n", info.torch_version.c_str(),
               info.device.c_str(), threads, blas.name.c_str(), blas.path.empty() ? "" : " at ",
               blas.path.c_str());
  if (blas.reference)
    std::fprintf(stderr,
                 "  WARNING: LibTorch is using the reference BLAS, about 17x slower than OpenBLAS here. Install "
                 "libopenblas0-pthread (scripts/install-deps.sh does) or select it with update-alternatives "
                 "--config libblas.so.3-$(dpkg-architecture -qDEB_HOST_MULTIARCH).\n");

  try {
    std::vector<results::Param> params;
    for (const auto& [k, v] : cfg.flat) params.push_back(to_param(k, v));
    params.push_back(to_param("runtime.threads", std::int64_t{threads}));
    params.push_back(to_param("runtime.blas", blas.name));
    store.add_params(run, params);

    // Record exactly the plugins this run uses.
    std::vector<const ComponentConfig*> components;
    for (const auto& d : cfg.data) components.push_back(&d);
    components.push_back(&cfg.speech_encoder);
    for (const auto* part : {&cfg.text_embedding, &cfg.shared_encoder})
      if (!part->plugin.empty()) components.push_back(part);
    for (const auto& o : cfg.objectives) components.push_back(&o);
    for (const auto& e : cfg.evaluators) components.push_back(&e);
    std::set<std::pair<PluginKind, std::string>> recorded;
    for (const auto* c : components) {
      if (!recorded.insert({c->kind, c->plugin}).second) continue;
      const auto& p = registry.get(c->kind, c->plugin, c->section);
      store.add_plugin(run, {to_string(c->kind), p.descriptor.name, p.descriptor.version, p.path, p.sha256()});
    }

    torch::manual_seed(static_cast<std::uint64_t>(cfg.seed));
    const FeatureSettings features = feature_settings(cfg.frontend);
    BuildContext base;
    base.device = device;
    base.seed = static_cast<std::uint64_t>(cfg.seed);
    base.sample_rate = cfg.frontend.get_int("sample_rate");

    // Data: load, then build the vocabulary from the texts the objectives train on. A dry run loads none.
    std::set<std::string> train_names, eval_names;
    for (const auto& o : cfg.objectives) train_names.insert(o.core.get_string("data"));
    for (const auto& e : cfg.evaluators) eval_names.insert(e.core.get_string("data"));
    if (args.dry_run) train_names.clear(), eval_names.clear();
    std::map<std::string, std::vector<Utterance>> raw;
    std::map<std::string, BatchKind> kinds;
    auto t_data = std::chrono::steady_clock::now();
    for (const auto& d : cfg.data) {
      if (!train_names.count(d.name) && !eval_names.count(d.name)) continue;
      const std::string use = d.core.get_string("use");
      BuildContext data_ctx = base;
      data_ctx.load_audio = use != "text";
      auto dataset = registry.create_as<Dataset>(PluginKind::Dataset, d.plugin, d.options, data_ctx);
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
      raw[d.name] = dataset->load(data_ctx);
      for (auto& u : raw[d.name]) {
        if (kind == BatchKind::Speech) u.text.clear();
        if (kind == BatchKind::Text) std::vector<float>().swap(u.samples);
      }
    }
    std::vector<std::string> train_texts;
    for (const auto& n : train_names)
      if (kinds[n] != BatchKind::Speech)
        for (const auto& u : raw[n]) train_texts.push_back(u.text);
    auto vocabulary = std::make_shared<const Vocabulary>(Vocabulary::from_texts(train_texts));

    std::map<std::string, PreparedData> prepared;
    for (auto& [name, utts] : raw) {
      const ComponentConfig* d = cfg.find_data(name);
      // Long utterances are dropped from training only; evaluation keeps everything.
      double max_seconds = train_names.count(name) ? d->core.get_float("max_seconds") : 0.0;
      prepared[name] = prepare_data(name, kinds[name], std::move(utts), features, vocabulary.get(), max_seconds);
    }
    raw.clear();
    const double frames_per_second = 1000.0 / cfg.frontend.get_float("frame_shift_ms");
    std::vector<results::Param> derived;
    for (const auto& [name, p] : prepared) {
      derived.push_back(to_param("derived.data." + name + ".utterances", static_cast<std::int64_t>(p.size())));
      if (p.kind == BatchKind::Text) {
        std::int64_t chars = 0;
        for (const auto& t : p.tokens) chars += static_cast<std::int64_t>(t.size());
        derived.push_back(to_param("derived.data." + name + ".characters", chars));
        std::fprintf(stderr, "  data %-8s %6zu sentences, %lld characters (text)\n", name.c_str(), p.size(),
                     static_cast<long long>(chars));
      } else {
        derived.push_back(to_param("derived.data." + name + ".hours", p.seconds / 3600.0));
        std::fprintf(stderr, "  data %-8s %6zu utterances, %.2f h (%s)\n", name.c_str(), p.size(), p.seconds / 3600.0,
                     to_string(p.kind));
      }
    }
    derived.push_back(to_param("derived.vocabulary_size", vocabulary->size()));
    if (!args.dry_run)
      std::fprintf(stderr, "  %lld characters in the vocabulary (blank and unknown included); data ready in %.1f s\n",
                   static_cast<long long>(vocabulary->size()),
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t_data).count());

    std::map<std::string, std::shared_ptr<TrainBatcher>> batchers;
    std::map<std::string, std::vector<Batch>> eval_batches;
    for (const auto& [name, p] : prepared) {
      const auto& c = cfg.find_data(name)->core;
      BatchingOptions b;
      b.batch_seconds = c.get_float("batch_seconds");
      b.max_batch = c.get_int("max_batch");
      b.shuffle = c.get_bool("shuffle");
      b.sortagrad = c.get_bool("sortagrad");
      b.frames_per_second = frames_per_second;
      const auto seed = static_cast<std::uint64_t>(cfg.seed);
      if (eval_names.count(name)) eval_batches[name] = BucketBatcher(p, b, seed).all();
      if (!train_names.count(name)) continue;
      const double temperature = c.get_float("language_temperature");
      if (temperature > 0) {
        auto sampler = std::make_shared<LanguageSampler>(p, b, temperature, seed);
        for (const auto& [lang, q] : sampler->probabilities())
          derived.push_back(to_param("derived.data." + name + ".sampling." + lang, q));
        batchers[name] = sampler;
      } else {
        batchers[name] = std::make_shared<BucketBatcher>(p, b, seed);
      }
    }

    // Model: speech encoder -> (projection) shared encoder <- text embedding (mSLAM figure 1).
    ModelParts model;
    BuildContext enc_ctx = base;
    enc_ctx.input_dim = features.fbank.num_mel_bins();
    model.speech_encoder =
        registry.create_as<Encoder>(PluginKind::Encoder, cfg.speech_encoder.plugin, cfg.speech_encoder.options, enc_ctx);
    const std::int64_t speech_dim = model.speech_encoder->output_dim();
    std::int64_t context_dim = speech_dim;
    if (!cfg.shared_encoder.plugin.empty()) {
      BuildContext shared_ctx = base;
      shared_ctx.input_dim = speech_dim;
      model.shared_encoder = registry.create_as<Encoder>(PluginKind::Encoder, cfg.shared_encoder.plugin,
                                                         cfg.shared_encoder.options, shared_ctx);
      context_dim = model.shared_encoder->output_dim();
      if (cfg.modality_embedding) model.modality = ModalityEmbedding(context_dim);
    }
    if (!cfg.text_embedding.plugin.empty()) {
      BuildContext text_ctx = base;
      text_ctx.model_dim = context_dim;
      text_ctx.vocabulary = vocabulary;
      text_ctx.training_texts = args.dry_run ? nullptr : &train_texts;
      model.text_embedding = registry.create_as<TextEmbedding>(PluginKind::Encoder, cfg.text_embedding.plugin,
                                                               cfg.text_embedding.options, text_ctx);
      if (model.text_embedding->output_dim() != context_dim)
        throw ConfigError(fmt::format("[model.text_embedding] gives {}-dimensional vectors but the shared encoder "
                                      "works in {}",
                                      model.text_embedding->output_dim(), context_dim));
    }
    BuildContext loss_ctx = base;
    loss_ctx.model_dim = context_dim;
    loss_ctx.speech_dim = speech_dim;
    loss_ctx.text_vocab_size = model.text_embedding ? model.text_embedding->vocab_size() : 0;
    loss_ctx.vocabulary = vocabulary;
    std::vector<Objective> objectives;
    for (const auto& o : cfg.objectives) {
      // One random stream per objective: two objectives of the same plugin must not mask alike.
      BuildContext ctx = loss_ctx;
      ctx.seed = base.seed * 1000003ULL + static_cast<std::uint64_t>(stable_bucket(o.name, 1LL << 40));
      objectives.push_back({o.name, registry.create_as<Loss>(PluginKind::Loss, o.plugin, o.options, ctx),
                            o.core.get_float("weight"), o.core.get_string("data")});
    }
    std::vector<EvaluatorSlot> evaluators;
    for (const auto& e : cfg.evaluators)
      evaluators.push_back({e.name, registry.create_as<Evaluator>(PluginKind::Evaluator, e.plugin, e.options, base),
                            e.core.get_string("data"), e.core.get_int("every")});
    // Counted before the trainer exists, so that a dry run (which has no batches for it) counts alike.
    auto counted = model.named_modules();
    for (auto& o : objectives)
      if (auto* m = o.loss->module()) counted.emplace_back("objectives." + o.name, m);
    record_parameter_counts(counted, derived);
    if (args.dry_run) {
      derived.push_back(to_param("runtime.dry_run", true));
      store.add_params(run, derived);
      store.finish_run(run, RunStatus::Finished);
      std::fprintf(stderr, "dry run %lld recorded in %s\n", static_cast<long long>(run), args.db.c_str());
      return 0;
    }

    StoreSink sink(store, run);
    Trainer trainer(tr, model, std::move(objectives), std::move(evaluators), std::move(batchers),
                    std::move(eval_batches), device, sink, cfg.stages);
    if (const std::string init = tr.get_string("init_checkpoint"); !init.empty()) {
      if (Trainer::checkpoint_vocabulary(init) != vocabulary->serialize())
        throw ConfigError(fmt::format("trainer.init_checkpoint {}: the checkpoint's character vocabulary differs from "
                                      "this experiment's; the output layers would not line up",
                                      init));
      auto loaded = trainer.load_checkpoint(init);
      derived.push_back(to_param("derived.init_checkpoint_tensors", static_cast<std::int64_t>(loaded.size())));
      std::fprintf(stderr, "  loaded %zu tensors from %s\n", loaded.size(), init.c_str());
    }
    store.add_params(run, derived);

    TrainResult result = trainer.train();

    // Run ids are per database, so two databases would share run-<id>: never overwrite another run's file.
    fs::path ckpt_dir = fs::path(tr.get_string("checkpoint_dir")) / fmt::format("run-{}", run);
    for (int n = 2; fs::exists(ckpt_dir); ++n)
      ckpt_dir = fs::path(tr.get_string("checkpoint_dir")) / fmt::format("run-{}-{}", run, n);
    const fs::path ckpt = ckpt_dir / "final.pt";
    trainer.save_checkpoint(ckpt.string(), cfg.resolved_toml, vocabulary->serialize());
    store.add_params(run, {to_param("derived.checkpoint", ckpt.string()),
                           to_param("derived.steps_done", result.steps),
                           to_param("derived.train_seconds", result.train_seconds)});
    store.finish_run(run, RunStatus::Finished);
    double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    std::fprintf(stderr, "run %lld finished: %lld steps, %.1f s training, %.1f s in all; checkpoint %s\n",
                 static_cast<long long>(run), static_cast<long long>(result.steps), result.train_seconds, total_s,
                 ckpt.string().c_str());
    for (const auto& [k, v] : result.final_metrics)
      if (k.find('/', k.find('/') + 1) == std::string::npos) std::fprintf(stderr, "  %-16s %.4f\n", k.c_str(), v);
    std::fprintf(stderr, "  sqlite3 %s \"SELECT key, step, value FROM metrics WHERE run_id = %lld\"\n", args.db.c_str(),
                 static_cast<long long>(run));
    return 0;
  } catch (const Interrupted& e) {
    store.finish_run(run, RunStatus::Interrupted, e.what());
    std::fprintf(stderr, "\nrun %lld interrupted (recorded in %s)\n", static_cast<long long>(run), args.db.c_str());
    return 130;
  } catch (const std::exception& e) {
    store.finish_run(run, RunStatus::Failed, e.what());
    std::fprintf(stderr, "\nerror: %s\n(recorded as failed run %lld in %s)\n", e.what(), static_cast<long long>(run),
                 args.db.c_str());
    return 1;
  }
}

}  // namespace workbench::app
