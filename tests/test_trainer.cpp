// The trainer's seams: freezing (bit-identical, and joining the optimizer after freeze_for_steps),
// per-component learning-rate multipliers, both schedules against hand-computed values, hooks, periodic /
// best / interrupted checkpoints, an atomic write that a killed process cannot tear, and a loss's
// exception reported with its objective and step.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <memory>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"
#include "trainer_fixture.h"
#include "workbench/error.h"
#include "workbench/runtime.h"
#include "workbench/schedule.h"
#include "workbench/trainer.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;

namespace {

struct Pair {
  std::shared_ptr<CountingLoss> a = std::make_shared<CountingLoss>(BatchKind::Speech, 1.0);
  std::shared_ptr<CountingLoss> b = std::make_shared<CountingLoss>(BatchKind::Speech, -1.0);
  std::shared_ptr<FixedBatcher> speech = std::make_shared<FixedBatcher>(BatchKind::Speech);
  RecordingSink sink;
  std::unique_ptr<Trainer> make(const TrainerOptions& options, TrainerHooks hooks = {},
                                std::vector<EvaluatorSlot> evaluators = {},
                                std::map<std::string, std::vector<Batch>> eval = {}) {
    return std::make_unique<Trainer>(options, ModelParts{},
                                     std::vector<Objective>{{"a", a, 1.0, "speech", "counting"},
                                                            {"b", b, 1.0, "speech", "counting"}},
                                     std::move(evaluators), std::map<std::string, std::shared_ptr<TrainBatcher>>{{"speech", speech}},
                                     std::move(eval), torch::kCPU, sink, std::vector<StageConfig>{}, std::move(hooks));
  }
};

bool identical(const torch::Tensor& x, const torch::Tensor& y) { return torch::equal(x, y); }

/// An evaluator whose metric follows a script, one value per call.
class ScriptedEvaluator final : public Evaluator {
 public:
  explicit ScriptedEvaluator(std::vector<double> values) : values_(std::move(values)) {}
  Metrics evaluate(const EvalContext&) override {
    const double v = values_.at(std::min(calls_, values_.size() - 1));
    ++calls_;
    return {{"cer", v}};
  }

 private:
  std::vector<double> values_;
  std::size_t calls_ = 0;
};

/// A loss that fails inside LibTorch (a shape error), as a plugin bug would.
class BrokenLoss final : public Loss {
 public:
  BrokenLoss() { w = module_.register_parameter("w", torch::zeros({3})); }
  std::vector<BatchKind> accepts() const override { return {BatchKind::Speech}; }
  torch::nn::Module* module() override { return &module_; }
  LossOutput compute(const Batch&, ModelParts&, const StepInfo&) override {
    auto wrong = w.view({2, 2});  // 3 values cannot be 2 x 2
    return {wrong.sum(), {}};
  }
  torch::nn::Module module_;
  torch::Tensor w;
};

}  // namespace

TEST_CASE("schedule: warm-up then inverse square root, by hand", "[trainer][schedule]") {
  CHECK(warmup_inverse_sqrt(1.0, 4, 1) == Approx(0.25));
  CHECK(warmup_inverse_sqrt(1.0, 4, 4) == Approx(1.0));
  CHECK(warmup_inverse_sqrt(1.0, 4, 16) == Approx(0.5));  // sqrt(4 / 16)
  CHECK(warmup_inverse_sqrt(2.0, 0, 7) == Approx(2.0));
  // trainer.schedule = inverse_sqrt counts optimizer steps from 0.
  auto o = TrainerOptions::defaults().lr(1.0).warmup_steps(4);
  CHECK(learning_rate(o, 0) == Approx(0.25));
  CHECK(learning_rate(o, 15) == Approx(0.5));
}

TEST_CASE("schedule: fairseq2's tri-stage, by hand", "[trainer][schedule]") {
  // 100 steps: 10 warm-up from 0.01, 40 hold, 50 decay to 0.05; peak 2.
  auto at = [](std::int64_t s) { return tri_stage(2.0, 100, 0.1, 0.4, 0.5, 0.01, 0.05, s); };
  CHECK(at(0) == Approx(0.02));
  CHECK(at(5) == Approx(0.02 + (2.0 - 0.02) * 0.5));
  CHECK(at(10) == Approx(2.0));
  CHECK(at(49) == Approx(2.0));
  CHECK(at(50) == Approx(2.0));                         // the decay starts at exp(0) = 1
  CHECK(at(75) == Approx(2.0 * std::sqrt(0.05)));       // half-way: exp(log(0.05) / 2)
  CHECK(at(100) == Approx(0.1));                        // after the decay: final * peak
  CHECK(at(1000) == Approx(0.1));
  auto o = TrainerOptions::defaults().schedule("tri_stage").lr(2.0).steps(100);
  CHECK(learning_rate(o, 75) == Approx(at(75)));

  // What the trainer logs as train/lr follows it.
  Pair p;
  auto trainer = p.make(trainer_options(20).schedule("tri_stage").lr(1.0));
  trainer->train();
  for (std::int64_t s : {1, 2, 3, 10, 20})
    CHECK(p.sink.values["train/lr"][s] == Approx(tri_stage(1.0, 20, 0.1, 0.4, 0.5, 0.01, 0.05, s - 1)));
}

TEST_CASE("schedule: tri-stage shares that do not add up to 1 are a ConfigError", "[trainer][schedule]") {
  Options t("trainer");
  for (const auto& spec : TrainerOptions::schema().specs()) t.set(spec.name, spec.default_value, "default");
  t.set("schedule", std::string("tri_stage"), "exp.toml:3:1");
  t.set("tri_stage_hold", 0.5, "exp.toml:4:1");
  CHECK_THROWS_WITH(TrainerOptions::from(t), Contains("add up to 1"));
}

TEST_CASE("freeze: a frozen component is bit-identical after training and out of the optimizer", "[trainer][freeze]") {
  Pair p;
  auto trainer = p.make(trainer_options(6).freeze({"objectives.a"}));
  const auto before = p.a->w.detach().clone();
  CHECK(trainer->component_learning_rates().count("objectives.a") == 0);
  CHECK(trainer->parameters().size() == 1);
  trainer->train();
  CHECK(identical(p.a->w, before));
  CHECK_FALSE(identical(p.b->w, torch::zeros({3})));  // the other one trained
  // It never received a gradient either: frozen parameters are not part of backward.
  CHECK_FALSE(p.a->w.grad().defined());
}

TEST_CASE("freeze: freeze_for_steps keeps it still, then it trains", "[trainer][freeze]") {
  Pair p;
  auto trainer = p.make(trainer_options(8).freeze({"objectives.a"}).freeze_for_steps(3));
  for (int s = 0; s < 3; ++s) trainer->step();
  CHECK(identical(p.a->w, torch::zeros({3})));
  CHECK(trainer->component_learning_rates().count("objectives.a") == 0);
  trainer->step();  // step 3: it joins the optimizer and moves
  CHECK(trainer->component_learning_rates().count("objectives.a") == 1);
  CHECK((p.a->w > 0).all().item<bool>());
  // a saw the frozen w at its first three calls, then a moving one.
  REQUIRE(p.a->w_at_call.size() == 4);
  for (int s = 0; s < 4; ++s) CHECK(identical(p.a->w_at_call[static_cast<std::size_t>(s)], torch::zeros({3})));
}

TEST_CASE("freeze and lr_multipliers: an unknown component is a ConfigError listing the real ones", "[trainer][freeze]") {
  Pair p;
  const std::string msg = error_message<ConfigError>([&] { p.make(trainer_options(2).freeze({"speech_encoder"})); });
  CHECK_THAT(msg, Contains("freeze") && Contains("'speech_encoder'") && Contains("objectives.a, objectives.b"));
  const std::string msg2 =
      error_message<ConfigError>([&] { p.make(trainer_options(2).lr_multipliers({{"objectives.c", 2.0}})); });
  CHECK_THAT(msg2, Contains("lr_multipliers") && Contains("'objectives.c'"));
}

TEST_CASE("lr_multipliers: a component trains at its multiple of the schedule", "[trainer][lr]") {
  Pair p;
  // Plain SGD-like check through Adam: the first Adam step moves each weight by about its learning rate.
  auto trainer = p.make(trainer_options(1).lr(0.01).warmup_steps(0).lr_multipliers({{"objectives.b", 10.0}}));
  trainer->step();
  auto rates = trainer->component_learning_rates();
  CHECK(rates.at("objectives.a") == Approx(0.01));
  CHECK(rates.at("objectives.b") == Approx(0.1));
  // Adam's first step is lr * sign(gradient) (bias-corrected moments), so the moves are 0.01 and 0.1.
  CHECK(p.a->w.detach().abs().max().item<double>() == Approx(0.01).epsilon(1e-3));
  CHECK(p.b->w.detach().abs().max().item<double>() == Approx(0.1).epsilon(1e-3));
}

TEST_CASE("hooks: after_backward sees the gradients, on_log and on_evaluate the metrics", "[trainer][hooks]") {
  Pair p;
  std::vector<std::int64_t> backward_steps, log_steps;
  bool saw_gradients = true;
  TrainerHooks hooks;
  hooks.after_backward = [&](std::int64_t step, const std::vector<torch::Tensor>& params) {
    backward_steps.push_back(step);
    for (const auto& t : params) saw_gradients = saw_gradients && t.grad().defined();
  };
  hooks.on_log = [&](std::int64_t step, const Metrics& m) {
    log_steps.push_back(step);
    CHECK(std::any_of(m.begin(), m.end(), [](const auto& kv) { return kv.first == "train/loss"; }));
  };
  std::vector<std::pair<std::int64_t, double>> evaluations;
  hooks.on_evaluate = [&](std::int64_t step, const Metrics& m) {
    REQUIRE(m.size() == 1);
    CHECK(m[0].first == "dev/cer");
    evaluations.emplace_back(step, m[0].second);
  };
  auto evaluator = std::make_shared<ScriptedEvaluator>(std::vector<double>{0.9, 0.8, 0.7});
  auto trainer = p.make(trainer_options(4).log_every(2), hooks, {{"asr", evaluator, "dev", 2}},
                        {{"dev", std::vector<Batch>{}}});
  trainer->train();
  CHECK(backward_steps == std::vector<std::int64_t>{0, 1, 2, 3});
  CHECK(saw_gradients);
  CHECK(log_steps == std::vector<std::int64_t>{2, 4});
  // At the start, at step 2 (every = 2) and at the end.
  CHECK(evaluations == std::vector<std::pair<std::int64_t, double>>{{0, 0.9}, {2, 0.8}, {4, 0.7}});
}

TEST_CASE("checkpoints: periodic ones every N steps, the last K kept, each reported", "[trainer][checkpoint]") {
  TempDir dir("wbtest_trainer_");
  Pair p;
  std::vector<CheckpointInfo> written;
  std::vector<std::string> removed;
  TrainerHooks hooks;
  hooks.on_checkpoint = [&](const CheckpointInfo& c) { written.push_back(c); };
  hooks.on_checkpoint_removed = [&](const std::string& path) { removed.push_back(path); };
  auto trainer = p.make(trainer_options(7).checkpoint_every(2).keep_checkpoints(2), hooks);
  trainer->set_checkpoint_directory(dir.path.string(), "# config", "vocabulary");
  trainer->train();
  REQUIRE(written.size() == 3);  // after steps 2, 4, 6 (not at the end: the final one is the runner's)
  CHECK(written[0].step == 2);
  CHECK(written[2].step == 6);
  CHECK(written[2].kind == "periodic");
  CHECK(written[2].sha256.size() == 64);
  CHECK(removed == std::vector<std::string>{dir.file("step-2.pt")});
  CHECK_FALSE(fs::exists(dir.file("step-2.pt")));
  CHECK(fs::exists(dir.file("step-4.pt")));
  CHECK(fs::exists(dir.file("step-6.pt")));
  // A checkpoint loads with its step, into a fresh trainer.
  Pair q;
  auto fresh = q.make(trainer_options(7));
  fresh->load_checkpoint(dir.file("step-6.pt"), /*with_optimizer=*/true);
  CHECK(fresh->steps_done() == 6);
  CHECK(identical(q.a->w, p.a->w_at_call[6]));
}

TEST_CASE("checkpoints: keep_best keeps the checkpoint at the best evaluation", "[trainer][checkpoint]") {
  TempDir dir("wbtest_trainer_");
  Pair p;
  std::vector<CheckpointInfo> best;
  TrainerHooks hooks;
  hooks.on_checkpoint = [&](const CheckpointInfo& c) {
    if (c.kind == "best") best.push_back(c);
  };
  // Evaluations at steps 0, 2, 4, 6 and the end (8): dev/cer 0.9, 0.5, 0.7, 0.4, 0.6.
  auto evaluator = std::make_shared<ScriptedEvaluator>(std::vector<double>{0.9, 0.5, 0.7, 0.4, 0.6});
  auto trainer = p.make(trainer_options(8).keep_best("dev/cer"), hooks, {{"asr", evaluator, "dev", 2}},
                        {{"dev", std::vector<Batch>{}}});
  trainer->set_checkpoint_directory(dir.path.string(), "", "");
  trainer->train();
  REQUIRE(best.size() == 3);  // 0.9 at 0, 0.5 at 2, 0.4 at 6
  CHECK(best.back().step == 6);
  CHECK(best.back().metric_key == std::optional<std::string>("dev/cer"));
  CHECK(best.back().metric_value == std::optional<double>(0.4));
  CHECK(best.back().path == dir.file("best.pt"));
  Pair q;
  auto fresh = q.make(trainer_options(8));
  fresh->load_checkpoint(dir.file("best.pt"), true);
  CHECK(fresh->steps_done() == 6);

  // A metric of data no evaluator runs on is a ConfigError when the trainer is made, before any step.
  Pair r;
  const std::string msg = error_message<ConfigError>([&] {
    r.make(trainer_options(2).keep_best("test/cer"), {}, {{"asr", evaluator, "dev", 0}}, {{"dev", std::vector<Batch>{}}});
  });
  CHECK_THAT(msg, Contains("keep_best") && Contains("[data.test]") && Contains("dev"));
  CHECK_THROWS_AS(r.make(trainer_options(2).keep_best("dev/cer")), ConfigError);  // no evaluator at all
  // A metric the evaluator on dev does not give is only a warning: the run and its final weights survive.
  Pair w;
  auto wrong = w.make(trainer_options(2).keep_best("dev/wer").eval_at_start(false), {}, {{"asr", evaluator, "dev", 0}},
                      {{"dev", std::vector<Batch>{}}});
  wrong->set_checkpoint_directory(dir.file("other"), "", "");
  CHECK_NOTHROW(wrong->train());
  CHECK_FALSE(fs::exists(dir.file("other") + "/best.pt"));
  CHECK_NOTHROW(wrong->checkpoint("final"));
}

TEST_CASE("checkpoints: Ctrl-C mid-run writes a complete checkpoint, then Interrupted", "[trainer][checkpoint]") {
  TempDir dir("wbtest_trainer_");
  install_interrupt_handler();
  clear_interrupt();
  Pair p;
  TrainerHooks hooks;
  hooks.on_log = [](std::int64_t step, const Metrics&) {
    if (step == 3) ::raise(SIGINT);  // the handler only raises a flag; the loop sees it before step 4
  };
  std::vector<CheckpointInfo> written;
  hooks.on_checkpoint = [&](const CheckpointInfo& c) { written.push_back(c); };
  auto trainer = p.make(trainer_options(10), hooks);
  trainer->set_checkpoint_directory(dir.path.string(), "# config", "vocab");
  CHECK_THROWS_AS(trainer->train(), Interrupted);
  clear_interrupt();
  REQUIRE(written.size() == 1);
  CHECK(written[0].kind == "interrupted");
  CHECK(written[0].step == 3);
  Pair q;
  auto fresh = q.make(trainer_options(10));
  auto loaded = fresh->load_checkpoint(written[0].path, true);
  CHECK(loaded.size() == 2);
  CHECK(fresh->steps_done() == 3);
  CHECK(Trainer::checkpoint_vocabulary(written[0].path) == "vocab");
}

TEST_CASE("checkpoints: a process killed while writing never replaces the previous good one", "[trainer][checkpoint]") {
  TempDir dir("wbtest_trainer_");
  const std::string path = dir.file("step.pt");
  Pair p;
  auto trainer = p.make(trainer_options(2));
  trainer->train();
  const std::string good = trainer->save_checkpoint(path, "# good", "good vocabulary");
  std::mt19937 rng(7);
  bool saw_new = false;
  for (int round = 0; round < 6; ++round) {
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      // Rewrites the same path as fast as it can, each one a large file, until it is killed.
      const std::string big(4 << 20, 'x');
      for (;;) trainer->save_checkpoint(path, big, "new vocabulary");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(40, 400)(rng)));
    ::kill(child, SIGKILL);
    int status = 0;
    ::waitpid(child, &status, 0);
    // Whatever the moment, the file at `path` is a complete checkpoint: the old one or a new one.
    const std::string vocabulary = Trainer::checkpoint_vocabulary(path);
    CHECK((vocabulary == "good vocabulary" || vocabulary == "new vocabulary"));
    saw_new = saw_new || vocabulary == "new vocabulary";
    Pair q;
    CHECK_NOTHROW(q.make(trainer_options(2))->load_checkpoint(path));
  }
  (void)good;
  CHECK(saw_new);  // the child did write: the kills fell between and inside real writes
}

TEST_CASE("checkpoints: a run resumed with its optimizer state goes on exactly as the run that never stopped",
          "[trainer][checkpoint]") {
  TempDir dir("wbtest_trainer_");
  Pair p;
  auto trainer = p.make(trainer_options(8).freeze({"objectives.a"}).freeze_for_steps(3));
  for (int s = 0; s < 4; ++s) trainer->step();  // past freeze_for_steps: a has joined the optimizer
  trainer->save_checkpoint(dir.file("at4.pt"), "", "");
  for (int s = 0; s < 3; ++s) trainer->step();
  Pair q;
  auto resumed = q.make(trainer_options(8).freeze({"objectives.a"}).freeze_for_steps(3));
  resumed->load_checkpoint(dir.file("at4.pt"), /*with_optimizer=*/true);
  CHECK(resumed->steps_done() == 4);
  for (int s = 0; s < 3; ++s) resumed->step();
  // Bit for bit: the same Adam moments, the same step count, the same schedule.
  CHECK(identical(q.a->w, p.a->w));
  CHECK(identical(q.b->w, p.b->w));
  // Without the optimizer state the moments start at zero and the weights part ways.
  Pair r;
  auto fresh = r.make(trainer_options(8).freeze({"objectives.a"}).freeze_for_steps(3));
  fresh->load_checkpoint(dir.file("at4.pt"));
  for (int s = 0; s < 3; ++s) fresh->step();
  CHECK_FALSE(identical(r.b->w, p.b->w));
}

TEST_CASE("freeze: a second trainer over the same modules finds them trainable again", "[trainer][freeze]") {
  Pair p;
  {
    auto first = p.make(trainer_options(2).freeze({"objectives.a", "objectives.a"}));
    CHECK_FALSE(p.a->w.requires_grad());
  }
  CHECK(p.a->w.requires_grad());
  auto second = p.make(trainer_options(2));
  CHECK(second->component_learning_rates().count("objectives.a") == 1);
}

TEST_CASE("errors: an exception inside a loss names the objective, its plugin and the step", "[trainer][errors]") {
  auto broken = std::make_shared<BrokenLoss>();
  auto speech = std::make_shared<FixedBatcher>(BatchKind::Speech);
  RecordingSink sink;
  Trainer trainer(trainer_options(3), ModelParts{}, {{"lid", broken, 1.0, "speech", "my_lid"}}, {},
                  {{"speech", speech}}, {}, torch::kCPU, sink);
  const std::string msg = error_message<Error>([&] { trainer.train(); });
  CHECK_THAT(msg, Contains("objective 'lid'") && Contains("my_lid") && Contains("step 0"));
  CHECK_THAT(msg, !Contains("Exception raised from"));  // no C++ backtrace
}

namespace {

/// A loss with one parameter whose value is NaN (or +inf) at the steps in `bad`.
class PoisonedLoss final : public Loss {
 public:
  PoisonedLoss(std::set<std::int64_t> bad, double poison) : bad_(std::move(bad)), poison_(poison) {
    w = module_.register_parameter("w", torch::zeros({2}));
  }
  std::vector<BatchKind> accepts() const override { return {BatchKind::Speech}; }
  torch::nn::Module* module() override { return &module_; }
  LossOutput compute(const Batch&, ModelParts&, const StepInfo& step) override {
    w_at_call.push_back(w.detach().clone());
    auto loss = (w - 1.0).pow(2).sum();
    if (bad_.count(step.step)) loss = loss * poison_;
    return {loss, {{"loss", loss.detach()}}};
  }
  torch::nn::Module module_;
  torch::Tensor w;
  std::vector<torch::Tensor> w_at_call;

 private:
  std::set<std::int64_t> bad_;
  double poison_;
};

struct Poisoned {
  std::shared_ptr<PoisonedLoss> loss;
  std::shared_ptr<CountingLoss> healthy = std::make_shared<CountingLoss>(BatchKind::Speech, 1.0);
  RecordingSink sink;
  std::unique_ptr<Trainer> make(const TrainerOptions& options) {
    return std::make_unique<Trainer>(
        options, ModelParts{},
        std::vector<Objective>{{"poisoned", loss, 1.0, "speech", "poisoned_plugin"}, {"fine", healthy, 1.0, "speech", "counting"}},
        std::vector<EvaluatorSlot>{},
        std::map<std::string, std::shared_ptr<TrainBatcher>>{{"speech", std::make_shared<FixedBatcher>(BatchKind::Speech)}},
        std::map<std::string, std::vector<Batch>>{}, torch::kCPU, sink);
  }
};

}  // namespace

TEST_CASE("non-finite steps: skipped without an update and recorded with their objective, or the run aborts",
          "[trainer][nonfinite]") {
  SECTION("skip: the step leaves every parameter as it was, the run goes on") {
    Poisoned p{std::make_shared<PoisonedLoss>(std::set<std::int64_t>{2}, std::nan(""))};
    auto trainer = p.make(trainer_options(5));
    trainer->train();
    REQUIRE(p.loss->w_at_call.size() == 5);
    CHECK(identical(p.loss->w_at_call[3], p.loss->w_at_call[2]));      // step 2 did not update
    CHECK_FALSE(identical(p.loss->w_at_call[2], p.loss->w_at_call[1]));  // its neighbours did
    CHECK_FALSE(identical(p.loss->w_at_call[4], p.loss->w_at_call[3]));
    CHECK(identical(p.healthy->w_at_call[3], p.healthy->w_at_call[2]));  // nor did the healthy objective
    REQUIRE(p.sink.values.count("train/nonfinite/poisoned") == 1);
    CHECK(p.sink.values["train/nonfinite/poisoned"] == std::map<std::int64_t, double>{{3, 1.0}});
    CHECK(p.sink.values.count("train/nonfinite/fine") == 0);
    CHECK(p.sink.values["train/skipped_steps"].rbegin()->second == 1.0);
  }
  SECTION("abort: the run fails at that step, naming the objective and its plugin") {
    Poisoned p{std::make_shared<PoisonedLoss>(std::set<std::int64_t>{2}, std::numeric_limits<double>::infinity())};
    auto trainer = p.make(trainer_options(5).nonfinite("abort"));
    const std::string message = error_message<Error>([&] { trainer->train(); });
    CHECK_THAT(message, Contains("step 2") && Contains("objective 'poisoned' (loss plugin poisoned_plugin)") &&
                            Contains("inf") && Contains("trainer.nonfinite"));
    CHECK(p.sink.values["train/nonfinite/poisoned"] == std::map<std::int64_t, double>{{3, 1.0}});
    CHECK(trainer->steps_done() == 2);
  }
  SECTION("skip, with a limit: too many in a row fail the run; isolated ones do not add up") {
    Poisoned p{std::make_shared<PoisonedLoss>(std::set<std::int64_t>{1, 3, 4, 5, 6, 7}, std::nan(""))};
    auto trainer = p.make(trainer_options(20).max_nonfinite_skips(3));
    const std::string message = error_message<Error>([&] { trainer->train(); });
    CHECK_THAT(message, Contains("3 non-finite steps in a row") && Contains("step 5") &&
                            Contains("trainer.max_nonfinite_skips = 3"));
    CHECK(p.sink.values["train/nonfinite/poisoned"].size() == 4);  // steps 1, 3, 4, 5
  }
}

TEST_CASE("an evaluator's exception names the evaluator, its plugin, its data and the step", "[trainer][errors]") {
  class Failing final : public Evaluator {
   public:
    Metrics evaluate(const EvalContext&) override {
      if (++calls == 2) throw DataError("dev.tsv: row 3 has no audio");
      return {{"cer", 1.0}};
    }
    int calls = 0;
  };
  Pair p;
  auto trainer = p.make(trainer_options(4), {}, {{"asr", std::make_shared<Failing>(), "dev", 2, "scripted"}},
                        {{"dev", std::vector<Batch>{}}});
  const std::string message = error_message<DataError>([&] { trainer->train(); });
  CHECK_THAT(message, Contains("evaluator 'asr' (plugin scripted) on [data.dev] at step 2") &&
                          Contains("dev.tsv: row 3 has no audio"));
}
