#include "workbench/trainer.h"

#include "workbench/failpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>

#include <ATen/Context.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/archive.h>
#include <torch/utils.h>

#include "workbench/error.h"
#include "workbench/prefetch.h"
#include "workbench/progress.h"
#include "workbench/runtime.h"
#include "workbench/sha256.h"
#include "workbench/tensor_memory.h"

namespace workbench {

namespace fs = std::filesystem;
using clock_type = std::chrono::steady_clock;

MetricSink::~MetricSink() = default;

namespace {

/// Flushes a file's data to the disk (fsync on a read-only descriptor is allowed on Linux).
/// Flushes a file's data (or a folder's entries) to the disk. Throws DataError when it cannot.
void sync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw DataError(fmt::format("{}: cannot open to sync: {}", path.string(), std::strerror(errno)));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) throw DataError(fmt::format("{}: fsync failed: {}", path.string(), std::strerror(err)));
}

std::string summary(const Metrics& m) {
  std::string s;
  for (const auto& [k, v] : m)
    if (is_summary_metric(k)) s += fmt::format("  {} {:.4f}", k, v);
  return s;
}

}  // namespace

namespace {

// A checkpoint file's archive; DataError naming the file when it is missing or not a checkpoint.
torch::serialize::InputArchive open_checkpoint(const std::string& path) {
  if (!fs::exists(path)) throw DataError(fmt::format("{}: checkpoint not found", path));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw DataError(fmt::format("{}: not a workbench checkpoint ({})", path, e.what_without_backtrace()));
  }
  return archive;
}

}  // namespace

bool is_summary_metric(const std::string& key) {
  const auto slashes = std::count(key.begin(), key.end(), '/');
  if (slashes <= 1) return true;
  return slashes == 2 && key.size() - key.rfind('/') - 1 > 3;
}

struct Trainer::Impl {
  TrainerOptions options;
  ModelParts model;
  std::vector<Objective> objectives;
  std::vector<EvaluatorSlot> evaluators;
  std::map<std::string, std::shared_ptr<TrainBatcher>> train;
  std::map<std::string, std::vector<Batch>> eval;
  c10::Device device;
  MetricSink& sink;
  TrainerHooks hooks;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::int64_t step = 0;  // optimizer steps done
  std::vector<StageConfig> stages;
  std::vector<std::int64_t> stage_end;  // cumulative steps
  std::vector<std::vector<Objective*>> stage_objectives;
  std::int64_t stage = -1;  // index into stages of the last step taken

  // One parameter group per component; `group_component[i]` names the optimizer's group i.
  std::vector<std::string> group_component;
  std::set<std::string> frozen;     // components out of the optimizer now
  bool unfrozen = false;            // freeze_for_steps has passed and the frozen joined the optimizer
  double last_lr = 0;

  // Training metrics summed over the log window, as tensors so that a GPU is not synchronised each step.
  std::map<std::string, torch::Tensor> sums;
  std::map<std::string, std::int64_t> counts;
  std::int64_t window_steps = 0, skipped = 0, skipped_in_a_row = 0;
  double grad_norm_sum = 0;
  std::int64_t peak_tensor_bytes = 0;  // the window's highest step peak (tensor_memory.h), when metered
  // Wall time per step in this process's part of the log window: the step, and the part of it spent
  // waiting for training batches (not saved for resume: a resumed window counts its own steps).
  double step_seconds_sum = 0, data_wait_seconds_sum = 0;
  // The plugins' own work per step: the losses' compute(), backward, and the clipped update. What the
  // step spends besides that and the data wait is the trainer's dispatch (train/dispatch_ms).
  double work_seconds_sum = 0;
  std::int64_t timed_steps = 0;
  // How long the previous log() took to hand its metrics to the sink (the run store's transaction).
  double last_record_seconds = -1;
  clock_type::time_point rate_start = clock_type::now();
  std::int64_t rate_steps = 0;
  double steps_per_second = 0;

  // Checkpoints.
  std::string checkpoint_dir, config_toml, vocabulary;
  std::deque<std::string> periodic;  // oldest first
  std::optional<double> best;
  bool warned_best = false;

  Impl(TrainerOptions o, ModelParts m, c10::Device d, MetricSink& s, TrainerHooks h)
      : options(std::move(o)), model(std::move(m)), device(d), sink(s), hooks(std::move(h)) {}
  // The modules are shared with whoever built the model (the runner, a later trainer): give back the
  // parameters this trainer froze.
  ~Impl() {
    for (auto& [c, params] : frozen_params)
      for (auto& p : params) p.requires_grad_(true);
  }

  // Named modules whose parameters and buffers are trained and checkpointed.
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() const {
    auto out = model.named_modules();
    for (const auto& o : objectives)
      if (auto* m = o.loss->module()) out.emplace_back("objectives." + o.name, m);
    return out;
  }

  torch::nn::Module* module_of(const std::string& component) const {
    for (const auto& [name, m] : modules())
      if (name == component) return m;
    return nullptr;
  }

  double multiplier(const std::string& component) const {
    const auto& table = options.lr_multipliers();
    auto it = table.find(component);
    return it == table.end() ? 1.0 : it->second;
  }

  std::vector<torch::Tensor> trainable(const std::string& component) const {
    std::vector<torch::Tensor> out;
    if (auto* m = module_of(component))
      for (auto& p : m->parameters())
        if (p.requires_grad()) out.push_back(p);
    return out;
  }

  void add_group(const std::string& component, const torch::optim::AdamWOptions& base) {
    auto params = trainable(component);
    if (params.empty()) return;
    auto opts = std::make_unique<torch::optim::AdamWOptions>(base);
    opts->lr(options.lr() * multiplier(component));
    if (!optimizer) {
      optimizer = std::make_unique<torch::optim::AdamW>(
          std::vector<torch::optim::OptimizerParamGroup>{torch::optim::OptimizerParamGroup(params, std::move(opts))},
          base);
    } else {
      optimizer->add_param_group(torch::optim::OptimizerParamGroup(params, std::move(opts)));
    }
    group_component.push_back(component);
  }

  torch::optim::AdamWOptions base_options() const {
    return torch::optim::AdamWOptions(options.lr())
        .betas({options.adam_beta1(), options.adam_beta2()})
        .eps(options.adam_eps())
        .weight_decay(options.weight_decay());
  }

  // Frozen parameters keep requires_grad = false, so that backward does not compute their gradients;
  // only those that were trainable are switched, never a plugin's own fixed tensors.
  std::map<std::string, std::vector<torch::Tensor>> frozen_params;

  void freeze_components() {
    for (const auto& c : options.freeze()) {
      if (!frozen.insert(c).second) continue;  // named twice
      auto params = trainable(c);
      for (auto& p : params) p.requires_grad_(false);
      frozen_params[c] = params;
    }
  }

  // Lets the frozen components join the optimizer once freeze_for_steps have passed.
  void sync_freezing() {
    if (unfrozen || frozen.empty() || options.freeze_for_steps() <= 0 || step < options.freeze_for_steps()) return;
    for (const auto& [c, params] : frozen_params) {
      for (auto& p : params) p.requires_grad_(true);
      add_group(c, base_options());
    }
    frozen_params.clear();
    frozen.clear();
    unfrozen = true;
  }

  std::int64_t stage_of(std::int64_t s) const {
    std::size_t i = 0;
    while (i + 1 < stage_end.size() && s >= stage_end[i]) ++i;
    return static_cast<std::int64_t>(i);
  }

  void accumulate(const std::string& key, const torch::Tensor& v) {
    auto d = v.detach().to(torch::kFloat64);
    sums[key] = sums.count(key) ? sums[key] + d : d;
    ++counts[key];
  }
};

Trainer::Trainer(TrainerOptions options, ModelParts model, std::vector<Objective> objectives,
                 std::vector<EvaluatorSlot> evaluators, std::map<std::string, std::shared_ptr<TrainBatcher>> train,
                 std::map<std::string, std::vector<Batch>> eval, c10::Device device, MetricSink& sink,
                 std::vector<StageConfig> stages, TrainerHooks hooks)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(model), device, sink, std::move(hooks))) {
  Impl& im = *impl_;
  im.objectives = std::move(objectives);
  im.evaluators = std::move(evaluators);
  im.train = std::move(train);
  if (im.options.prefetch())
    for (auto& [name, batcher] : im.train) batcher = std::make_shared<PrefetchBatcher>(std::move(batcher));
  im.eval = std::move(eval);
  std::set<std::string> names;
  for (const auto& o : im.objectives) {
    names.insert(o.name);
    auto it = im.train.find(o.data);
    if (it == im.train.end()) throw ConfigError(fmt::format("[objectives.{}]: no training data '{}'", o.name, o.data));
    BatchKind kind = it->second->kind();
    auto accepted = o.loss->accepts();
    if (std::find(accepted.begin(), accepted.end(), kind) == accepted.end()) {
      std::string kinds;
      for (auto k : accepted) kinds += (kinds.empty() ? "" : ", ") + std::string(to_string(k));
      throw ConfigError(fmt::format("[objectives.{}]: [data.{}] gives {} batches, but this loss accepts: {}", o.name,
                                    o.data, to_string(kind), kinds));
    }
  }
  for (const auto& st : stages)
    for (const auto& name : st.objectives)
      if (!names.count(name))
        throw ConfigError(fmt::format("stage '{}' trains objective '{}', which the experiment does not define", st.name, name));
  if (stages.empty()) {
    StageConfig all;
    all.name = "train";
    all.steps = im.options.steps();
    for (const auto& o : im.objectives) all.objectives.push_back(o.name);
    stages.push_back(all);
  }
  im.stages = std::move(stages);
  for (const auto& st : im.stages) {
    im.stage_end.push_back((im.stage_end.empty() ? 0 : im.stage_end.back()) + st.steps);
    std::vector<Objective*> active;
    for (auto& obj : im.objectives)
      if (std::find(st.objectives.begin(), st.objectives.end(), obj.name) != st.objectives.end()) active.push_back(&obj);
    im.stage_objectives.push_back(active);
  }

  // Components by name, for freeze and lr_multipliers.
  std::vector<std::string> components;
  for (auto& [name, m] : im.modules()) components.push_back(name);
  auto check_component = [&](const std::string& name, const std::string& key) {
    if (std::find(components.begin(), components.end(), name) == components.end())
      im.options.source.fail(key, fmt::format("no component '{}' in this run (it has: {})", name,
                                              fmt::join(components, ", ")));
  };
  for (const auto& c : im.options.freeze()) check_component(c, "freeze");
  // keep_best names "<data>/<metric>": an evaluator must run on that data, or best.pt would never be kept.
  // Checked here, not at the first evaluation, which may come only after the whole run.
  if (const std::string& key = im.options.keep_best(); !key.empty()) {
    std::vector<std::string> data;
    for (const auto& e : im.evaluators) data.push_back(e.data);
    const auto slash = key.find('/');
    const std::string prefix = slash == std::string::npos ? "" : key.substr(0, slash);
    if (std::find(data.begin(), data.end(), prefix) == data.end())
      im.options.source.fail("keep_best", fmt::format("'{}' is no evaluation metric of this run: it needs an evaluator "
                                                      "on [data.{}] (evaluators run on: {})",
                                                      key, prefix.empty() ? "?" : prefix,
                                                      data.empty() ? "none" : fmt::format("{}", fmt::join(data, ", "))));
  }
  for (const auto& [c, m] : im.options.lr_multipliers()) check_component(c, "lr_multipliers");

  for (auto& [name, m] : im.modules()) m->to(device);
  im.freeze_components();
  const auto base = im.base_options();
  for (const auto& c : components)
    if (!im.frozen.count(c)) im.add_group(c, base);
  if (!im.optimizer) {
    // Everything frozen (a probe with nothing to train yet): an optimizer over no parameters is refused by
    // LibTorch, so hold one dummy tensor that never gets a gradient.
    im.optimizer = std::make_unique<torch::optim::AdamW>(std::vector<torch::Tensor>{torch::zeros({1})}, base);
    im.group_component.push_back("");
  }
}

std::vector<torch::Tensor> Trainer::parameters() const {
  std::vector<torch::Tensor> out;
  for (auto& [name, m] : impl_->modules()) {
    if (impl_->frozen.count(name)) continue;
    for (auto& p : m->parameters())
      if (p.requires_grad()) out.push_back(p);
  }
  return out;
}

std::int64_t Trainer::steps_done() const { return impl_->step; }
TrainerHooks& Trainer::hooks() { return impl_->hooks; }
const TrainerOptions& Trainer::options() const { return impl_->options; }

std::map<std::string, double> Trainer::component_learning_rates() const {
  std::map<std::string, double> out;
  auto& groups = impl_->optimizer->param_groups();
  for (std::size_t i = 0; i < groups.size() && i < impl_->group_component.size(); ++i)
    if (!impl_->group_component[i].empty()) out[impl_->group_component[i]] = groups[i].options().get_lr();
  return out;
}

void Trainer::set_training(bool training) {
  for (auto& [name, m] : impl_->modules()) m->train(training);
}

Metrics Trainer::evaluate(const std::function<bool(const EvaluatorSlot&)>& due) {
  Impl& im = *impl_;
  Metrics all;
  std::vector<EvalExample> examples;
  set_training(false);
  {
    torch::NoGradGuard no_grad;
    for (auto& slot : im.evaluators) {
      if (due && !due(slot)) continue;
      auto it = im.eval.find(slot.data);
      if (it == im.eval.end()) continue;
      std::vector<EvalExample> mine;
      EvalContext ctx{it->second, im.model, im.device, &mine};
      Metrics got;
      // Like a loss's, an evaluator's exception says which evaluator, on what data, at which step.
      const std::string who = fmt::format("evaluator '{}' (plugin {}) on [data.{}] at step {}", slot.name,
                                          slot.plugin.empty() ? "?" : slot.plugin, slot.data, im.step);
      try {
        got = slot.evaluator->evaluate(ctx);
      } catch (const Interrupted&) {
        throw;
      } catch (const c10::Error& e) {
        throw Error(fmt::format("{} failed: {}", who, e.what_without_backtrace()));
      } catch (const ConfigError& e) {
        throw ConfigError(fmt::format("{}: {}", who, e.what()));
      } catch (const DataError& e) {
        throw DataError(fmt::format("{}: {}", who, e.what()));
      } catch (const std::exception& e) {
        throw Error(fmt::format("{} failed: {}", who, e.what()));
      }
      for (auto& [k, v] : got) all.emplace_back(slot.data + "/" + k, v);
      for (auto& e : mine) {
        e.task = slot.data + "/" + e.task;
        examples.push_back(std::move(e));
      }
    }
  }
  set_training(true);
  if (!examples.empty()) im.sink.record_examples(im.step, examples);
  if (all.empty()) return all;
  im.sink.record(im.step, all);
  if (im.hooks.on_evaluate) im.hooks.on_evaluate(im.step, all);
  if (const std::string& key = im.options.keep_best(); !key.empty()) {
    auto it = std::find_if(all.begin(), all.end(), [&](const auto& kv) { return kv.first == key; });
    const std::string data = key.substr(0, key.find('/'));
    const bool ran = std::any_of(all.begin(), all.end(), [&](const auto& kv) { return kv.first.rfind(data + "/", 0) == 0; });
    if (it == all.end() && ran && !im.warned_best) {
      // A warning, not an error: failing here could throw away a finished run's weights.
      std::vector<std::string> keys;
      for (const auto& kv : all) keys.push_back(kv.first);
      std::fprintf(stderr, "  WARNING: trainer.keep_best = \"%s\" is not among the evaluation metrics (%s); no best.pt\n",
                   key.c_str(), fmt::format("{}", fmt::join(keys, ", ")).c_str());
      im.warned_best = true;
    }
    if (it != all.end() && std::isfinite(it->second) && !im.checkpoint_dir.empty()) {
      const bool lower = im.options.keep_best_mode() == "min";
      if (!im.best || (lower ? it->second < *im.best : it->second > *im.best)) {
        im.best = it->second;
        checkpoint("best");
      }
    }
  }
  return all;
}

StepResult Trainer::step() {
  Impl& im = *impl_;
  const auto step_start = clock_type::now();
  double data_wait = 0, work = 0;
  auto since = [](clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); };
  if (tensor_memory_meter_installed()) reset_tensor_peak();
  im.sync_freezing();
  const std::int64_t s = im.step;
  const std::int64_t total = im.options.steps();
  const double lr = learning_rate(im.options, s);
  auto& groups = im.optimizer->param_groups();
  for (std::size_t i = 0; i < groups.size(); ++i) groups[i].options().set_lr(lr * im.multiplier(im.group_component[i]));
  im.last_lr = lr;
  auto params = parameters();
  // Gradients to none, not zero (LibTorch 1.13's zero_grad() zeroes them): AdamW skips a parameter
  // without a gradient, while a zero gradient would still move it by Adam's momentum, so the parts of
  // objectives outside the current stage would keep changing.
  for (auto& p : params) p.mutable_grad() = torch::Tensor();

  const std::int64_t stage = im.stage_of(s);
  im.stage = stage;
  StepInfo info{s, total};
  torch::Tensor loss_sum, logged_sum;  // logged: without the shards' scale
  std::vector<std::pair<const Objective*, torch::Tensor>> losses;  // looked at only when a step is not finite
  for (Objective* obj : im.stage_objectives[stage]) {
    LossOutput out;
    double share = 1.0;
    try {
      TrainBatcher& batcher = *im.train.at(obj->data);
      const auto wait_start = clock_type::now();
      Batch batch = batcher.next();
      data_wait += since(wait_start);
      share = batcher.share();
      if (batch.size() == 0) continue;  // this rank's shard of a global batch too small to reach it
      Batch on_device = batch.to(im.device);
      const auto compute_start = clock_type::now();
      out = obj->loss->compute(on_device, im.model, info);
      work += since(compute_start);
    } catch (const Interrupted&) {
      throw;
    } catch (const c10::Error& e) {
      throw Error(fmt::format("objective '{}' (loss plugin {}) failed at step {}: {}", obj->name, obj->plugin, s,
                              e.what_without_backtrace()));
    } catch (const ConfigError& e) {
      throw ConfigError(fmt::format("objective '{}' (loss plugin {}) at step {}: {}", obj->name, obj->plugin, s, e.what()));
    } catch (const DataError& e) {
      throw DataError(fmt::format("objective '{}' (loss plugin {}) at step {}: {}", obj->name, obj->plugin, s, e.what()));
    } catch (const std::exception& e) {
      throw Error(fmt::format("objective '{}' (loss plugin {}) failed at step {}: {}", obj->name, obj->plugin, s, e.what()));
    }
    losses.emplace_back(obj, out.loss.detach());
    // weight * 1.0 is weight exactly: one process trains bit for bit as before.
    auto weighted = out.loss * (obj->weight * share);
    loss_sum = loss_sum.defined() ? loss_sum + weighted : weighted;
    auto logged = share == 1.0 ? weighted.detach() : out.loss.detach() * obj->weight;
    logged_sum = logged_sum.defined() ? logged_sum + logged : logged;
    for (auto& [k, v] : out.metrics) im.accumulate(obj->name + "/" + k, v);
  }
  StepResult result;
  result.step = s;
  result.lr = lr;
  const bool backward = loss_sum.defined() && loss_sum.requires_grad();
  if (backward) {
    const auto backward_start = clock_type::now();
    try {
      loss_sum.backward();
    } catch (const c10::Error& e) {
      std::vector<std::string> names;
      for (const Objective* obj : im.stage_objectives[stage]) names.push_back(obj->name);
      throw Error(fmt::format("backward of step {} (objectives {}) failed: {}", s, fmt::join(names, ", "),
                              e.what_without_backtrace()));
    }
    work += since(backward_start);
  }
  if (im.hooks.after_backward) {  // data parallelism's gradient all-reduce: work, not dispatch
    const auto hook_start = clock_type::now();
    im.hooks.after_backward(s, params);
    work += since(hook_start);
  }
  const bool any_gradient =
      backward || std::any_of(params.begin(), params.end(), [](const torch::Tensor& p) { return p.grad().defined(); });
  if (any_gradient) {
    const auto update_start = clock_type::now();
    const double clip = im.options.clip_norm();
    double norm = torch::nn::utils::clip_grad_norm_(params, clip > 0 ? clip : std::numeric_limits<double>::infinity());
    const double clip_seconds = since(update_start);
    if (std::isfinite(norm)) {
      im.optimizer->step();
      im.skipped_in_a_row = 0;
      work += since(update_start);
    } else {
      work += clip_seconds;  // the rest of a skipped step (naming the culprits) is the trainer's own
      // A non-finite gradient would poison Adam's moments: no update, and the objective that caused it is
      // named (the losses are read back only now, so a finite step costs no host round trip).
      ++im.skipped;
      ++im.skipped_in_a_row;
      result.skipped = true;
      std::vector<std::string> culprits;
      Metrics event;
      for (const auto& [obj, l] : losses) {
        const double v = l.item<double>();
        if (std::isfinite(v)) continue;
        culprits.push_back(fmt::format("objective '{}' (loss plugin {}) gave a loss of {}", obj->name, obj->plugin, v));
        event.emplace_back("train/nonfinite/" + obj->name, 1.0);
      }
      if (culprits.empty()) {
        culprits.push_back("the gradient is not finite, though every loss is");
        event.emplace_back("train/nonfinite/gradient", 1.0);
      }
      im.sink.record(s + 1, event);
      const std::string what = fmt::format("step {}: {}", s, fmt::join(culprits, "; "));
      if (im.options.nonfinite() == "abort")
        throw Error(what + " (trainer.nonfinite = \"abort\")");
      const std::int64_t limit = im.options.max_nonfinite_skips();
      if (limit > 0 && im.skipped_in_a_row >= limit)
        throw Error(fmt::format("{} non-finite steps in a row, the last {} (trainer.max_nonfinite_skips = {})",
                                im.skipped_in_a_row, what, limit));
      std::fprintf(stderr, "  WARNING: %s; the step is skipped\n", what.c_str());
    }
    im.grad_norm_sum += std::isfinite(norm) ? norm : 0.0;
  }
  if (logged_sum.defined()) im.accumulate("train/loss", logged_sum);
  ++im.window_steps;
  if (tensor_memory_meter_installed()) im.peak_tensor_bytes = std::max(im.peak_tensor_bytes, peak_tensor_bytes());
  im.step_seconds_sum += since(step_start);
  im.data_wait_seconds_sum += data_wait;
  im.work_seconds_sum += work;
  ++im.timed_steps;
  im.step = s + 1;

  ++im.rate_steps;
  const double window = std::chrono::duration<double>(clock_type::now() - im.rate_start).count();
  if (window >= 2.0) {
    im.steps_per_second = static_cast<double>(im.rate_steps) / window;
    im.rate_start = clock_type::now();
    im.rate_steps = 0;
  }
  return result;
}

Metrics Trainer::log() {
  Impl& im = *impl_;
  Metrics m;
  if (im.window_steps == 0) return m;
  for (auto& [k, v] : im.sums) m.emplace_back(k, v.item<double>() / static_cast<double>(im.counts[k]));
  m.emplace_back("train/lr", im.last_lr);
  m.emplace_back("train/grad_norm", im.grad_norm_sum / static_cast<double>(im.window_steps));
  m.emplace_back("train/steps_per_second", im.steps_per_second);
  if (im.timed_steps > 0) {
    m.emplace_back("train/step_ms", 1e3 * im.step_seconds_sum / static_cast<double>(im.timed_steps));
    m.emplace_back("train/data_wait_ms", 1e3 * im.data_wait_seconds_sum / static_cast<double>(im.timed_steps));
    // Collating aside (data_wait_ms), the step's time outside the plugins' compute(), backward and the
    // update: moving batches, calling the objectives, collecting and accumulating their metrics.
    const double dispatch = im.step_seconds_sum - im.data_wait_seconds_sum - im.work_seconds_sum;
    m.emplace_back("train/dispatch_ms", 1e3 * std::max(0.0, dispatch) / static_cast<double>(im.timed_steps));
  }
  if (im.last_record_seconds >= 0) m.emplace_back("train/record_ms", 1e3 * im.last_record_seconds);
  // The most memory any step of the window held in CPU tensors, parameters and optimizer state included;
  // on another device those are not the step's tensors, so nothing is reported there.
  if (tensor_memory_meter_installed() && im.device.is_cpu())
    m.emplace_back("train/peak_memory_mb", static_cast<double>(im.peak_tensor_bytes) / (1024.0 * 1024.0));
  m.emplace_back("train/skipped_steps", static_cast<double>(im.skipped));
  m.emplace_back("train/stage", static_cast<double>(std::max<std::int64_t>(im.stage, 0)));
  if (im.hooks.reduce_metrics) m = im.hooks.reduce_metrics(m);
  const auto record_start = clock_type::now();
  im.sink.record(im.step, m);
  im.last_record_seconds = std::chrono::duration<double>(clock_type::now() - record_start).count();
  im.sums.clear();
  im.counts.clear();
  im.window_steps = 0;
  im.grad_norm_sum = 0;
  im.peak_tensor_bytes = 0;
  im.step_seconds_sum = im.data_wait_seconds_sum = im.work_seconds_sum = 0;
  im.timed_steps = 0;
  if (im.hooks.on_log) im.hooks.on_log(im.step, m);
  return m;
}

TrainResult Trainer::train() {
  Impl& im = *impl_;
  const auto& o = im.options;
  const std::int64_t total = o.steps();
  const double max_seconds = o.max_minutes() * 60.0;
  Progress progress(Progress::mode_from_string(o.progress()), total);

  TrainResult result;
  Metrics last_eval;
  if (o.eval_at_start() && !im.evaluators.empty() && im.step == 0) {
    last_eval = evaluate();
    progress.message("step 0:" + summary(last_eval));
  }
  set_training(true);

  const auto start = clock_type::now();
  auto last_checkpoint = start;
  double eval_seconds = 0;
  const std::int64_t first_step = im.step;
  std::int64_t shown_stage = -1;
  while (im.step < total) {
    const double elapsed = std::chrono::duration<double>(clock_type::now() - start).count() - eval_seconds;
    StopVote stop = interrupt_requested()                        ? StopVote::Interrupted
                    : max_seconds > 0 && elapsed >= max_seconds ? StopVote::TimeUp
                                                                 : StopVote::None;
    if (im.hooks.vote) stop = im.hooks.vote(stop);
    if (stop == StopVote::Interrupted) {
      progress.finish();
      if (!im.checkpoint_dir.empty()) {
        auto c = checkpoint("interrupted");
        std::fprintf(stderr, "checkpoint at step %lld: %s\n", static_cast<long long>(c.step), c.path.c_str());
      }
      throw Interrupted();
    }
    if (stop == StopVote::TimeUp) {
      result.stopped_by_time = true;
      progress.message(fmt::format("stopping at step {}: trainer.max_minutes ({}) reached", im.step, o.max_minutes()));
      break;
    }
    const std::int64_t stage = im.stage_of(im.step);
    if (stage != shown_stage) {
      if (im.step > 0 || im.stages.size() > 1)
        progress.message(fmt::format("step {}: stage '{}' ({} steps): {}", im.step, im.stages[stage].name,
                                     im.stages[stage].steps, fmt::join(im.stages[stage].objectives, ", ")));
      shown_stage = stage;
    }
    StepResult r = step();
    const std::int64_t done = im.step;
    if (done % o.log_every() == 0 || done == total) {
      double mean_loss = 0;
      for (const auto& [k, v] : log())
        if (k == "train/loss") mean_loss = v;
      progress.update(done, mean_loss, r.lr, im.steps_per_second);
    }
    auto due = [&](const EvaluatorSlot& slot) { return slot.every > 0 && done % slot.every == 0 && done < total; };
    if (std::any_of(im.evaluators.begin(), im.evaluators.end(), due)) {
      auto t0 = clock_type::now();
      auto m = evaluate(due);
      eval_seconds += std::chrono::duration<double>(clock_type::now() - t0).count();
      progress.message(fmt::format("step {}:{}", done, summary(m)));
    }
    if (!im.checkpoint_dir.empty() && done < total) {
      const bool by_steps = o.checkpoint_every() > 0 && done % o.checkpoint_every() == 0;
      const bool by_time = o.checkpoint_every_minutes() > 0 &&
                           std::chrono::duration<double>(clock_type::now() - last_checkpoint).count() >=
                               o.checkpoint_every_minutes() * 60.0;
      if (by_steps || by_time) {
        checkpoint("periodic");
        last_checkpoint = clock_type::now();
      }
    }
  }
  (void)first_step;
  result.steps = im.step;
  result.train_seconds = std::chrono::duration<double>(clock_type::now() - start).count() - eval_seconds;
  progress.finish();
  if (!im.evaluators.empty()) {
    last_eval = evaluate();
    progress.message(fmt::format("step {} (final):{}", im.step, summary(last_eval)));
  }
  result.final_metrics = last_eval;
  return result;
}

void Trainer::set_checkpoint_directory(const std::string& dir, const std::string& config_toml,
                                       const std::string& vocabulary) {
  impl_->checkpoint_dir = dir;
  impl_->config_toml = config_toml;
  impl_->vocabulary = vocabulary;
}

CheckpointInfo Trainer::checkpoint(const std::string& kind) {
  Impl& im = *impl_;
  if (im.checkpoint_dir.empty()) throw std::logic_error("Trainer::checkpoint before set_checkpoint_directory");
  CheckpointInfo info;
  info.step = im.step;
  info.kind = kind;
  std::string file;
  if (kind == "final")
    file = "final.pt";
  else if (kind == "best")
    file = "best.pt";
  else if (kind == "periodic" || kind == "interrupted")
    file = fmt::format("step-{}.pt", im.step);
  else
    throw std::invalid_argument("checkpoint kind '" + kind + "' (expected periodic, interrupted, final or best)");
  info.path = (fs::path(im.checkpoint_dir) / file).string();
  if (kind == "best") {
    info.metric_key = im.options.keep_best();
    info.metric_value = im.best;
  }
  info.sha256 = save_checkpoint(info.path, im.config_toml, im.vocabulary);
  if (im.hooks.on_checkpoint) im.hooks.on_checkpoint(info);
  if (kind == "periodic") {
    if (std::find(im.periodic.begin(), im.periodic.end(), info.path) == im.periodic.end()) im.periodic.push_back(info.path);
    while (static_cast<std::int64_t>(im.periodic.size()) > std::max<std::int64_t>(im.options.keep_checkpoints(), 1)) {
      const std::string old = im.periodic.front();
      im.periodic.pop_front();
      std::error_code ec;
      fs::remove(old, ec);
      // A file that could not be deleted stays on record, so that the store never loses track of it.
      if (!ec && im.hooks.on_checkpoint_removed) im.hooks.on_checkpoint_removed(old);
    }
  }
  return info;
}

std::string Trainer::save_checkpoint(const std::string& path, const std::string& config_toml,
                                     const std::string& vocabulary) const {
  const fs::path target(path);
  if (const auto dir = target.parent_path(); !dir.empty()) fs::create_directories(dir);
  torch::serialize::OutputArchive archive;
  for (auto& [name, m] : impl_->modules()) {
    for (const auto& p : m->named_parameters()) archive.write(name + "." + p.key(), p.value().detach().cpu());
    for (const auto& b : m->named_buffers()) archive.write(name + "." + b.key(), b.value().cpu(), /*is_buffer=*/true);
  }
  torch::serialize::OutputArchive optimizer;
  impl_->optimizer->save(optimizer);
  archive.write("optimizer", optimizer);
  archive.write("step", torch::tensor(impl_->step));
  archive.write("scheduler.stage", torch::tensor(std::max<std::int64_t>(impl_->stage, 0)));
  archive.write("scheduler.peak_lr", torch::tensor(impl_->options.lr(), torch::kFloat64));
  archive.write("scheduler.warmup_steps", torch::tensor(impl_->options.warmup_steps()));
  archive.write("config_toml", c10::IValue(config_toml));
  archive.write("vocabulary", c10::IValue(vocabulary));
  write_resume_state(archive);
  // The temporary name is unique per process, so that two writers never share one.
  const fs::path tmp = target.string() + fmt::format(".tmp-{}", ::getpid());
  std::string digest;
  try {
    archive.save_to(tmp.string());
    sync_path(tmp);
    digest = sha256_file(tmp.string());  // of the bytes that become the checkpoint
    failpoint("checkpoint.before_rename");
    fs::rename(tmp, target);
  } catch (...) {
    std::error_code ec;
    fs::remove(tmp, ec);
    throw;
  }
  sync_path(target.parent_path().empty() ? fs::path(".") : target.parent_path());
  return digest;
}

std::vector<std::string> Trainer::load_checkpoint(const std::string& path, bool with_optimizer,
                                                  const std::vector<std::string>& components, bool require_each) {
  torch::serialize::InputArchive archive = open_checkpoint(path);
  std::vector<std::string> loaded;
  torch::NoGradGuard no_grad;
  auto copy_in = [&](const std::string& key, torch::Tensor& target, bool is_buffer) {
    torch::Tensor value;
    if (!archive.try_read(key, value, is_buffer)) return;
    // Serialized blobs (a SentencePiece model) are byte buffers whose length is their content.
    if (is_buffer && value.scalar_type() == torch::kByte && target.scalar_type() == torch::kByte) {
      target.set_(value.clone());
      loaded.push_back(key);
      return;
    }
    if (value.sizes() != target.sizes())
      throw ConfigError(fmt::format("{}: '{}' has shape {} in the checkpoint but {} in this model (a head sized "
                                    "from another vocabulary or label set? leave its component out of [init] "
                                    "components so that it starts new)",
                                    path, key, fmt::join(value.sizes(), "x"), fmt::join(target.sizes(), "x")));
    target.copy_(value);
    loaded.push_back(key);
  };
  std::vector<std::string> known;
  for (auto& [name, m] : impl_->modules()) known.push_back(name);
  for (const auto& c : components)
    if (std::find(known.begin(), known.end(), c) == known.end())
      throw ConfigError(fmt::format("{}: cannot load '{}': this run has no such component (it has: {})", path, c,
                                    fmt::join(known, ", ")));
  for (auto& [name, m] : impl_->modules()) {
    if (!components.empty() && std::find(components.begin(), components.end(), name) == components.end()) continue;
    const auto before = loaded.size();
    for (auto& p : m->named_parameters()) copy_in(name + "." + p.key(), p.value(), false);
    for (auto& b : m->named_buffers()) copy_in(name + "." + b.key(), b.value(), true);
    if (require_each && !components.empty() && loaded.size() == before && !m->parameters().empty())
      throw ConfigError(fmt::format("{}: the checkpoint holds no '{}' to load (was it trained with one of that "
                                    "name?)",
                                    path, name));
  }
  if (with_optimizer) {
    torch::Tensor step;
    if (archive.try_read("step", step)) impl_->step = step.item<std::int64_t>();
    // The optimizer's groups must be those the checkpoint was written with: past freeze_for_steps the
    // frozen components have joined.
    impl_->sync_freezing();
    torch::serialize::InputArchive optimizer;
    if (archive.try_read("optimizer", optimizer)) {
      try {
        impl_->optimizer->load(optimizer);
      } catch (const c10::Error& e) {
        throw ConfigError(fmt::format("{}: its optimizer state does not fit this run's parameter groups (other "
                                      "components, freeze or freeze_for_steps?): {}",
                                      path, e.what_without_backtrace()));
      }
    }
  }
  return loaded;
}

// What a checkpoint needs besides weights, optimizer and step for an exact resume: torch's generators
// (dropout, Gumbel noise), every batcher's place in its order, every loss's own engine, the log window so
// far, and the best value and skip counts. Version 1 of these "resume." entries.
void Trainer::write_resume_state(torch::serialize::OutputArchive& archive) const {
  const Impl& im = *impl_;
  archive.write("resume.version", torch::tensor(std::int64_t{1}));
  auto generator_state = [](c10::Device device) {
    auto gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    return gen.get_state();
  };
  archive.write("resume.torch_rng.cpu", generator_state(c10::Device(c10::DeviceType::CPU)), /*is_buffer=*/true);
  if (!im.device.is_cpu()) archive.write("resume.torch_rng.device", generator_state(im.device), /*is_buffer=*/true);
  for (const auto& [name, batcher] : im.train) archive.write("resume.batcher." + name, c10::IValue(batcher->state()));
  for (const auto& o : im.objectives) archive.write("resume.loss." + o.name, c10::IValue(o.loss->random_state()));
  std::string window = fmt::format("{} {:a} {} {} {}", im.window_steps, im.grad_norm_sum, im.skipped,
                                   im.skipped_in_a_row, im.best ? fmt::format("{:a}", *im.best) : "none");
  for (const auto& [key, sum] : im.sums)
    window += fmt::format("\n{} {} {:a}", key, im.counts.at(key), sum.item<double>());
  archive.write("resume.window", c10::IValue(window));
}

void Trainer::resume(const std::string& path) {
  Impl& im = *impl_;
  torch::serialize::InputArchive archive = open_checkpoint(path);
  torch::Tensor version;
  if (!archive.try_read("resume.version", version))
    throw DataError(fmt::format("{}: written by a workbench whose checkpoints kept no random state or data order; "
                                "a run cannot resume from it (fine-tune from it with [init] instead)",
                                path));
  if (version.item<std::int64_t>() != 1)
    throw DataError(fmt::format("{}: resume state version {}, this build reads version 1", path,
                                version.item<std::int64_t>()));
  std::size_t tensors = 0;
  for (auto& [name, m] : im.modules()) tensors += m->named_parameters().size() + m->named_buffers().size();
  const auto loaded = load_checkpoint(path, /*with_optimizer=*/true, {}, /*require_each=*/false);
  if (loaded.size() != tensors)
    throw ConfigError(fmt::format("{}: holds {} of this run's {} tensors; it is not a checkpoint of this model", path,
                                  loaded.size(), tensors));
  auto set_generator = [&](const std::string& key, c10::Device device) {
    torch::Tensor state;
    if (!archive.try_read(key, state, /*is_buffer=*/true))
      throw DataError(fmt::format("{}: no '{}' to resume {}'s random numbers from", path, key, device.str()));
    auto gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
  };
  set_generator("resume.torch_rng.cpu", c10::Device(c10::DeviceType::CPU));
  if (!im.device.is_cpu()) set_generator("resume.torch_rng.device", im.device);
  auto read_text = [&](const std::string& key, const std::string& what) {
    c10::IValue v;
    if (!archive.try_read(key, v))
      throw DataError(fmt::format("{}: no state of {} (was it written by a run with other {}?)", path, what, what));
    return v.toStringRef();
  };
  for (auto& [name, batcher] : im.train) batcher->restore(read_text("resume.batcher." + name, "[data." + name + "]"));
  for (auto& o : im.objectives) {
    const std::string state = read_text("resume.loss." + o.name, "objective '" + o.name + "'");
    try {
      o.loss->restore_random_state(state);
    } catch (const std::exception& e) {
      throw DataError(fmt::format("{}: objective '{}' (loss plugin {}) cannot take its random state back: {}", path,
                                  o.name, o.plugin, e.what()));
    }
  }
  std::istringstream window(read_text("resume.window", "the log window"));
  std::string best, line;
  auto hex = [](const std::string& text) { return std::strtod(text.c_str(), nullptr); };
  std::string norm;
  if (!(window >> im.window_steps >> norm >> im.skipped >> im.skipped_in_a_row >> best))
    throw DataError(fmt::format("{}: its log window is unreadable", path));
  im.grad_norm_sum = hex(norm);
  im.best = best == "none" ? std::nullopt : std::optional<double>(hex(best));
  im.sums.clear();
  im.counts.clear();
  std::getline(window, line);
  while (std::getline(window, line)) {
    std::istringstream fields(line);
    std::string key, sum;
    std::int64_t count = 0;
    if (!(fields >> key >> count >> sum))
      throw DataError(fmt::format("{}: its log window is unreadable at '{}'", path, line));
    im.sums[key] = torch::tensor(hex(sum), torch::TensorOptions().dtype(torch::kFloat64).device(im.device));
    im.counts[key] = count;
  }
  im.stage = im.stage_of(im.step);
}

std::string Trainer::checkpoint_vocabulary(const std::string& path) {
  torch::serialize::InputArchive archive = open_checkpoint(path);
  c10::IValue v;
  if (!archive.try_read("vocabulary", v)) throw DataError(fmt::format("{}: the checkpoint has no vocabulary", path));
  return v.toStringRef();
}

}  // namespace workbench
