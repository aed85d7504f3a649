#include "workbench/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adamw.h>
#include <torch/serialize/archive.h>
#include <torch/utils.h>

#include "workbench/error.h"
#include "workbench/progress.h"
#include "workbench/runtime.h"

namespace workbench {

MetricSink::~MetricSink() = default;

double warmup_inverse_sqrt(double peak, std::int64_t warmup, std::int64_t step) {
  step = std::max<std::int64_t>(step, 1);
  if (warmup <= 0) return peak;
  double s = static_cast<double>(step), w = static_cast<double>(warmup);
  return peak * std::min(s / w, std::sqrt(w / s));
}

struct Trainer::Impl {
  Options options;
  ModelParts model;
  std::vector<Objective> objectives;
  std::vector<EvaluatorSlot> evaluators;
  std::map<std::string, std::shared_ptr<TrainBatcher>> train;
  std::map<std::string, std::vector<Batch>> eval;
  c10::Device device;
  MetricSink& sink;
  std::map<std::string, std::shared_ptr<Loss>> losses_by_name;
  std::unique_ptr<torch::optim::AdamW> optimizer;
  std::int64_t step = 0;
  std::vector<StageConfig> stages;
  std::int64_t stage = 0;  // index into stages

  Impl(const Options& o, ModelParts m, c10::Device d, MetricSink& s)
      : options(o), model(std::move(m)), device(d), sink(s) {}

  // Named modules whose parameters and buffers are trained and checkpointed.
  std::vector<std::pair<std::string, torch::nn::Module*>> modules() const {
    auto out = model.named_modules();
    for (const auto& o : objectives)
      if (auto* m = o.loss->module()) out.emplace_back("objectives." + o.name, m);
    return out;
  }
};

Trainer::Trainer(const Options& options, ModelParts model, std::vector<Objective> objectives,
                 std::vector<EvaluatorSlot> evaluators, std::map<std::string, std::shared_ptr<TrainBatcher>> train,
                 std::map<std::string, std::vector<Batch>> eval, c10::Device device, MetricSink& sink,
                 std::vector<StageConfig> stages)
    : impl_(std::make_shared<Impl>(options, std::move(model), device, sink)) {
  Impl& im = *impl_;
  im.objectives = std::move(objectives);
  im.evaluators = std::move(evaluators);
  im.train = std::move(train);
  im.eval = std::move(eval);
  for (const auto& o : im.objectives) {
    auto it = im.train.find(o.data);
    if (it == im.train.end()) throw ConfigError(fmt::format("[objectives.{}]: no training data '{}'", o.name, o.data));
    BatchKind kind = it->second->kind();
    auto accepted = o.loss->accepts();
    if (std::find(accepted.begin(), accepted.end(), kind) == accepted.end()) {
      std::string names;
      for (auto k : accepted) names += (names.empty() ? "" : ", ") + std::string(to_string(k));
      throw ConfigError(fmt::format("[objectives.{}]: [data.{}] gives {} batches, but this loss accepts: {}", o.name,
                                    o.data, to_string(kind), names));
    }
    im.losses_by_name[o.name] = o.loss;
    im.model.objectives[o.name] = o.loss.get();
  }
  for (const auto& st : stages)
    for (const auto& name : st.objectives)
      if (!im.losses_by_name.count(name))
        throw ConfigError(fmt::format("stage '{}' trains objective '{}', which the experiment does not define", st.name, name));
  if (stages.empty()) {
    StageConfig all;
    all.name = "train";
    all.steps = options.get_int("steps");
    for (const auto& o : im.objectives) all.objectives.push_back(o.name);
    stages.push_back(all);
  }
  im.stages = std::move(stages);
  for (auto& [name, m] : im.modules()) m->to(device);
  auto opts = torch::optim::AdamWOptions(options.get_float("lr"))
                  .betas({options.get_float("adam_beta1"), options.get_float("adam_beta2")})
                  .eps(options.get_float("adam_eps"))
                  .weight_decay(options.get_float("weight_decay"));
  im.optimizer = std::make_unique<torch::optim::AdamW>(parameters(), opts);
}

std::vector<torch::Tensor> Trainer::parameters() const {
  std::vector<torch::Tensor> out;
  for (auto& [name, m] : impl_->modules())
    for (auto& p : m->parameters())
      if (p.requires_grad()) out.push_back(p);
  return out;
}

void Trainer::set_training(bool training) {
  for (auto& [name, m] : impl_->modules()) m->train(training);
}

std::vector<std::pair<std::string, double>> Trainer::evaluate(std::int64_t step,
                                                              const std::function<bool(const EvaluatorSlot&)>& due) {
  Impl& im = *impl_;
  std::vector<std::pair<std::string, double>> all;
  set_training(false);
  {
    torch::NoGradGuard no_grad;
    for (auto& slot : im.evaluators) {
      if (due && !due(slot)) continue;
      auto it = im.eval.find(slot.data);
      if (it == im.eval.end()) continue;
      EvalContext ctx{it->second, im.model, im.losses_by_name, im.device};
      for (auto& [k, v] : slot.evaluator->evaluate(ctx)) all.emplace_back(slot.data + "/" + k, v);
    }
  }
  set_training(true);
  if (!all.empty()) im.sink.record(step, all);
  return all;
}

TrainResult Trainer::train() {
  Impl& im = *impl_;
  const auto& o = im.options;
  const std::int64_t total = o.get_int("steps");
  const double max_seconds = o.get_float("max_minutes") * 60.0;
  const double peak = o.get_float("lr");
  const std::int64_t warmup = o.get_int("warmup_steps");
  const double clip = o.get_float("clip_norm");
  const std::int64_t log_every = o.get_int("log_every");
  Progress progress(Progress::mode_from_string(o.get_string("progress")), total);
  auto params = parameters();

  auto summary = [](const std::vector<std::pair<std::string, double>>& m) {
    std::string s;
    for (const auto& [k, v] : m)
      if (k.find('/', k.find('/') + 1) == std::string::npos) s += fmt::format("  {} {:.4f}", k, v);
    return s;
  };

  TrainResult result;
  std::vector<std::pair<std::string, double>> last_eval;
  if (o.get_bool("eval_at_start") && !im.evaluators.empty()) {
    last_eval = evaluate(im.step);
    progress.message("step 0:" + summary(last_eval));
  }
  set_training(true);

  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  double eval_seconds = 0;
  auto window_start = clock::now();
  std::int64_t window_steps = 0;
  double steps_per_second = 0;
  // Sums over the log window, kept as tensors so a GPU is not synchronised every step.
  std::map<std::string, torch::Tensor> sums;
  std::map<std::string, std::int64_t> counts;  // objectives outside the current stage add nothing
  std::int64_t sum_count = 0, skipped = 0;
  auto accumulate = [&](const std::string& key, const torch::Tensor& v) {
    auto d = v.detach().to(torch::kFloat64);
    sums[key] = sums.count(key) ? sums[key] + d : d;
    ++counts[key];
  };
  // The stage of 0-based step s: the first whose cumulative steps exceed s (the last one after that).
  std::vector<std::int64_t> stage_end;
  for (const auto& st : im.stages) stage_end.push_back((stage_end.empty() ? 0 : stage_end.back()) + st.steps);
  auto stage_of = [&](std::int64_t s) {
    std::size_t i = 0;
    while (i + 1 < stage_end.size() && s >= stage_end[i]) ++i;
    return static_cast<std::int64_t>(i);
  };
  std::vector<std::vector<Objective*>> stage_objectives;
  for (const auto& st : im.stages) {
    std::vector<Objective*> active;
    for (auto& obj : im.objectives)
      if (std::find(st.objectives.begin(), st.objectives.end(), obj.name) != st.objectives.end()) active.push_back(&obj);
    stage_objectives.push_back(active);
  }
  double grad_norm_sum = 0;
  std::int64_t step = 0;

  // im.step is 0, or the step a checkpoint loaded with its optimizer state left off at.
  const std::int64_t first_step = im.step;
  for (step = first_step; step < total; ++step) {
    if (interrupt_requested()) {
      progress.finish();
      throw Interrupted();
    }
    double elapsed = std::chrono::duration<double>(clock::now() - start).count() - eval_seconds;
    if (max_seconds > 0 && elapsed >= max_seconds) {
      result.stopped_by_time = true;
      progress.message(fmt::format("stopping at step {}: trainer.max_minutes ({}) reached", step,
                                   o.get_float("max_minutes")));
      break;
    }
    const double lr = warmup_inverse_sqrt(peak, warmup, step + 1);
    for (auto& group : im.optimizer->param_groups()) group.options().set_lr(lr);
    // Gradients to none, not zero (LibTorch 1.13's zero_grad() zeroes them): AdamW skips a parameter
    // without a gradient, while a zero gradient would still move it by Adam's momentum, so the parts
    // of objectives outside the current stage would keep changing.
    for (auto& p : params) p.mutable_grad() = torch::Tensor();

    StepInfo info{step, total};
    const std::int64_t stage = stage_of(step);
    if (stage != im.stage || step == first_step) {
      if (step > 0 || im.stages.size() > 1)
        progress.message(fmt::format("step {}: stage '{}' ({} steps): {}", step, im.stages[stage].name,
                                     im.stages[stage].steps, fmt::join(im.stages[stage].objectives, ", ")));
      im.stage = stage;
    }
    torch::Tensor loss_sum;
    for (Objective* obj : stage_objectives[stage]) {
      Batch batch = im.train.at(obj->data)->next().to(im.device);
      LossOutput out = obj->loss->compute(batch, im.model, info);
      auto weighted = out.loss * obj->weight;
      loss_sum = loss_sum.defined() ? loss_sum + weighted : weighted;
      for (auto& [k, v] : out.metrics) accumulate(obj->name + "/" + k, v);
    }
    loss_sum.backward();
    double norm = clip > 0 ? torch::nn::utils::clip_grad_norm_(params, clip)
                           : torch::nn::utils::clip_grad_norm_(params, std::numeric_limits<double>::infinity());
    if (std::isfinite(norm)) {
      im.optimizer->step();
    } else {
      ++skipped;  // a non-finite gradient would poison Adam's moments; skip the update
    }
    grad_norm_sum += std::isfinite(norm) ? norm : 0.0;
    accumulate("train/loss", loss_sum);
    ++sum_count;
    im.step = step + 1;

    ++window_steps;
    double window = std::chrono::duration<double>(clock::now() - window_start).count();
    if (window >= 2.0) {
      steps_per_second = static_cast<double>(window_steps) / window;
      window_start = clock::now();
      window_steps = 0;
    }
    const bool log_now = (step + 1) % log_every == 0 || step + 1 == total;
    if (log_now) {
      std::vector<std::pair<std::string, double>> m;
      double mean_loss = 0;
      for (auto& [k, v] : sums) {
        double value = v.item<double>() / static_cast<double>(counts[k]);
        if (k == "train/loss") mean_loss = value;
        m.emplace_back(k, value);
      }
      m.emplace_back("train/lr", lr);
      m.emplace_back("train/grad_norm", grad_norm_sum / static_cast<double>(sum_count));
      m.emplace_back("train/steps_per_second", steps_per_second);
      m.emplace_back("train/skipped_steps", static_cast<double>(skipped));
      m.emplace_back("train/stage", static_cast<double>(stage));
      im.sink.record(step + 1, m);
      sums.clear();
      counts.clear();
      sum_count = 0;
      grad_norm_sum = 0;
      progress.update(step + 1, mean_loss, lr, steps_per_second);
    }
    const std::int64_t done = step + 1;
    auto due = [&](const EvaluatorSlot& slot) { return slot.every > 0 && done % slot.every == 0 && done < total; };
    if (std::any_of(im.evaluators.begin(), im.evaluators.end(), due)) {
      auto t0 = clock::now();
      auto m = evaluate(done, due);
      eval_seconds += std::chrono::duration<double>(clock::now() - t0).count();
      progress.message(fmt::format("step {}:{}", done, summary(m)));
    }
  }
  result.steps = step;
  result.train_seconds = std::chrono::duration<double>(clock::now() - start).count() - eval_seconds;
  progress.finish();
  if (!im.evaluators.empty()) {
    last_eval = evaluate(step);
    progress.message(fmt::format("step {} (final):{}", step, summary(last_eval)));
  }
  result.final_metrics = last_eval;
  return result;
}

void Trainer::save_checkpoint(const std::string& path, const std::string& config_toml,
                              const std::string& vocabulary) const {
  namespace fs = std::filesystem;
  if (const auto dir = fs::path(path).parent_path(); !dir.empty()) fs::create_directories(dir);
  torch::serialize::OutputArchive archive;
  for (auto& [name, m] : impl_->modules()) {
    for (const auto& p : m->named_parameters()) archive.write(name + "." + p.key(), p.value().detach().cpu());
    for (const auto& b : m->named_buffers()) archive.write(name + "." + b.key(), b.value().cpu(), /*is_buffer=*/true);
  }
  torch::serialize::OutputArchive optimizer;
  impl_->optimizer->save(optimizer);
  archive.write("optimizer", optimizer);
  archive.write("step", torch::tensor(impl_->step));
  archive.write("scheduler.stage", torch::tensor(impl_->stage));
  archive.write("scheduler.peak_lr", torch::tensor(impl_->options.get_float("lr"), torch::kFloat64));
  archive.write("scheduler.warmup_steps", torch::tensor(impl_->options.get_int("warmup_steps")));
  archive.write("config_toml", c10::IValue(config_toml));
  archive.write("vocabulary", c10::IValue(vocabulary));
  archive.save_to(path);
}

std::vector<std::string> Trainer::load_checkpoint(const std::string& path, bool with_optimizer) {
  if (!std::filesystem::exists(path)) throw DataError(fmt::format("{}: checkpoint not found", path));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw DataError(fmt::format("{}: not a workbench checkpoint ({})", path, e.what_without_backtrace()));
  }
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
      throw ConfigError(fmt::format("{}: '{}' has shape {} in the checkpoint but {} in this model", path, key,
                                    fmt::join(value.sizes(), "x"), fmt::join(target.sizes(), "x")));
    target.copy_(value);
    loaded.push_back(key);
  };
  for (auto& [name, m] : impl_->modules()) {
    for (auto& p : m->named_parameters()) copy_in(name + "." + p.key(), p.value(), false);
    for (auto& b : m->named_buffers()) copy_in(name + "." + b.key(), b.value(), true);
  }
  if (with_optimizer) {
    torch::serialize::InputArchive optimizer;
    if (archive.try_read("optimizer", optimizer)) impl_->optimizer->load(optimizer);
    torch::Tensor step;
    if (archive.try_read("step", step)) impl_->step = step.item<std::int64_t>();
  }
  return loaded;
}

std::string Trainer::checkpoint_vocabulary(const std::string& path) {
  if (!std::filesystem::exists(path)) throw DataError(fmt::format("{}: checkpoint not found", path));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(path);
  } catch (const c10::Error& e) {
    throw DataError(fmt::format("{}: not a workbench checkpoint ({})", path, e.what_without_backtrace()));
  }
  c10::IValue v;
  if (!archive.try_read("vocabulary", v)) throw DataError(fmt::format("{}: the checkpoint has no vocabulary", path));
  return v.toStringRef();
}

}  // namespace workbench
