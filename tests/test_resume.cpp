// Resume: a run continued from a checkpoint trains on, step for step, as if it had never stopped; through
// the runner (Trainer::resume) and through the real executable (`workbench resume` after kill -9).
//
// The model is the runner tests' joint one with w2v-BERT (span masks, distractors, Gumbel noise), TLM (its
// own masks), CTC and dropout: every random stream a resume has to give back, and shuffled batches over
// several epochs. On the CPU with one thread the kernels are deterministic, so the losses must be equal,
// not close.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/types.h>

#include "run_support.h"
#include "runner_support.h"
#include "test_support.h"
#include "tone_manifest.h"
#include "workbench/error.h"
#include "workbench/run_store.h"
#include "workbench/runner.h"
#include "workbench/sha256.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;
using results::RunStore;

namespace {

// kJoint trained for `steps` on one thread, with dropout in both encoders and shuffled small batches
// (several epochs of the six utterances), a periodic checkpoint every 4 steps.
std::vector<std::string> joint_overrides(int steps) {
  return {"trainer.steps=" + std::to_string(steps), "trainer.threads=1", "trainer.checkpoint_every=4",
          "trainer.keep_checkpoints=10", "trainer.eval_at_start=false", "data.train.batch_seconds=6.0",
          "data.train.max_batch=3", "model.speech_encoder.dropout=0.1", "model.shared_encoder.dropout=0.1"};
}

std::map<std::int64_t, double> train_losses(Runner& runner, MemoryRecorder& recorder, const std::string& dir) {
  runner.configure_runtime();
  runner.run(recorder, dir);
  return recorder.values["train/loss"];
}

// Dropout and shuffled batches of 2 over several epochs; a periodic checkpoint every 5 steps, an
// evaluation every 10.
std::string write_crash_experiment(const TempDir& dir, const std::string& manifest, int steps) {
  const std::string exp = dir.file("resume.toml");
  write_file(exp, "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest +
                      "\"\nbatch_seconds = 2.5\nmax_batch = 2\n\n[data.dev]\nplugin = \"manifest\"\npath = \"" + manifest +
                      "\"\nshuffle = false\n\n[model.speech_encoder]\nplugin = \"conformer\"\nd_model = 32\nheads = 2\n"
                      "layers = 1\nffn_dim = 64\nkernel_size = 7\nsubsampling_channels = 8\ndropout = 0.2\n\n"
                      "[objectives.ctc]\nplugin = \"ctc\"\n\n[evaluators.asr]\nplugin = \"asr\"\nevery = 10\n\n"
                      "[trainer]\nsteps = " + std::to_string(steps) +
                      "\nlog_every = 1\nwarmup_steps = 5\nthreads = 1\nprogress = \"none\"\n"
                      "eval_at_start = false\ncheckpoint_every = 5\ncheckpoint_dir = \"" +
                      dir.file("checkpoints") + "\"\n");
  return exp;
}

}  // namespace

TEST_CASE("resume: a run continued from its step-4 checkpoint has the losses of one that never stopped",
          "[resume][runner][asterisk]") {
  if (!have_asterisk()) {
    WARN("asterisk-core-sounds-en is not installed; skipped");
    return;
  }
  TempDir dir("wbtest_resume_");
  BuiltinPlugins plugins;
  MemoryRecorder whole_rec;
  Runner whole(plugins, RunnerOptions().overrides(joint_overrides(12)).verbose(false));
  whole.resolve(ExperimentFile::parse_text(kJoint, "resume.toml", joint_overrides(12)));
  const auto reference = train_losses(whole, whole_rec, dir.file("whole"));
  REQUIRE(reference.size() == 12);
  const std::string step4 = dir.file("whole/step-4.pt");
  REQUIRE(fs::exists(step4));

  MemoryRecorder resumed_rec;
  Runner resumed(plugins, RunnerOptions().overrides(joint_overrides(12)).verbose(false).resume_from(step4));
  resumed.resolve(ExperimentFile::parse_text(kJoint, "resume.toml", joint_overrides(12)));
  const auto continued = train_losses(resumed, resumed_rec, dir.file("resumed"));
  REQUIRE(continued.size() == 8);  // steps 5 to 12
  for (const auto& [step, loss] : continued) {
    INFO("step " << step);
    REQUIRE(reference.count(step));
    CHECK(loss == reference.at(step));
  }
  // The objectives' own metrics (masked accuracies, Gumbel perplexity) and the evaluation agree too.
  for (const std::string key : {"w2v_bert/loss", "tlm/loss", "ctc/loss", "dev/cer"}) {
    INFO(key);
    REQUIRE(resumed_rec.values.count(key));
    for (const auto& [step, v] : resumed_rec.values[key]) CHECK(v == whole_rec.values[key].at(step));
  }
  CHECK(std::get<std::int64_t>(resumed_rec.params.at("derived.resumed_from_step")) == 4);
}

TEST_CASE("resume: a checkpoint without resume state, or of another model, is refused, naming the file",
          "[resume][runner][asterisk]") {
  if (!have_asterisk()) {
    WARN("asterisk-core-sounds-en is not installed; skipped");
    return;
  }
  TempDir dir("wbtest_resume_");
  BuiltinPlugins plugins;
  const std::string old = dir.file("old.pt");
  {
    torch::serialize::OutputArchive archive;  // a checkpoint as written before resume state existed
    archive.write("step", torch::tensor(std::int64_t{3}));
    archive.save_to(old);
  }
  MemoryRecorder rec;
  Runner runner(plugins, RunnerOptions().overrides(joint_overrides(6)).verbose(false).resume_from(old));
  runner.resolve(ExperimentFile::parse_text(kJoint, "resume.toml", joint_overrides(6)));
  runner.configure_runtime();
  // Its vocabulary is read first, and it has none.
  CHECK_THROWS_AS(runner.run(rec, dir.file("a")), DataError);

  // A real checkpoint of a smaller model: its tensors do not fit.
  std::vector<std::string> small = joint_overrides(4);
  small.push_back("model.speech_encoder.d_model=16");
  MemoryRecorder small_rec;
  Runner first(plugins, RunnerOptions().overrides(small).verbose(false));
  first.resolve(ExperimentFile::parse_text(kJoint, "resume.toml", small));
  train_losses(first, small_rec, dir.file("small"));
  const std::string final_small = dir.file("small/final.pt");
  MemoryRecorder rec2;
  Runner other(plugins, RunnerOptions().overrides(joint_overrides(6)).verbose(false).resume_from(final_small));
  other.resolve(ExperimentFile::parse_text(kJoint, "resume.toml", joint_overrides(6)));
  other.configure_runtime();
  CHECK_THROWS_WITH(other.run(rec2, dir.file("b")), Contains(final_small) && Contains("shape"));
}

TEST_CASE("e2e: kill -9, then `workbench resume`: the same run finishes with the losses of an uninterrupted one",
          "[e2e][resume][crash]") {
  TempDir dir("wbtest_resume_");
  const std::string manifest = write_manifest(dir, 6);
  const std::string db = dir.file("runs.db");
  const std::string exp = write_crash_experiment(dir, manifest, 120);
  // The reference, uninterrupted: run 1.
  CommandResult whole = run_workbench(dir, {"run", exp, "--db", db});
  INFO(whole.err);
  REQUIRE(whole.exit_code == 0);

  // Run 2: killed once it has written two checkpoints, wherever it then is (mid-step, mid-write).
  const pid_t child = start_run(exp, db, dir.file("killed.err"));
  REQUIRE(child > 0);
  auto second_run_checkpoints = [](const RunStore& store, std::int64_t) {
    auto runs = store.runs();
    return runs.size() == 2 && store.checkpoints(runs[1].id).size() >= 2;
  };
  REQUIRE(wait_for_run(db, second_run_checkpoints));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  {
    RunStore store(db);
    REQUIRE(store.run(2).status == "running");  // as the killed process left it
    REQUIRE(store.metrics(2, "train/loss").size() < 120);
  }

  CommandResult resumed = run_workbench(dir, {"resume", "2", "--db", db});
  INFO(resumed.err);
  REQUIRE(resumed.exit_code == 0);
  CHECK_THAT(resumed.err, Contains("resumed at step"));

  RunStore store(db);
  CHECK(store.runs().size() == 2);  // the same run, not a new one
  const auto run = store.run(2);
  CHECK(run.status == "finished");
  CHECK(run.error_message.empty());
  const auto reference = store.metrics(1, "train/loss");
  const auto continued = store.metrics(2, "train/loss");
  REQUIRE(reference.size() == 120);
  REQUIRE(continued.size() == 120);  // one row per step: nothing duplicated, nothing lost
  for (std::size_t i = 0; i < reference.size(); ++i) {
    INFO("step " << reference[i].step);
    CHECK(continued[i].step == reference[i].step);
    CHECK(continued[i].value == reference[i].value);
  }
  CHECK(store.metrics(2, "dev/cer").back().value == store.metrics(1, "dev/cer").back().value);
  std::map<std::string, std::string> tags;
  for (const auto& [k, v] : store.tags(2)) tags[k] = v;
  CHECK(tags["resumed"] == "1");
  CHECK_THAT(tags["resume.1"], Contains("it had ended running"));
  CHECK(scalar(store, "SELECT count(*) FROM checkpoints WHERE run_id = 2 AND kind = 'final'") ==
        std::optional<std::string>("1"));

  // A finished run, or one that does not exist, has nothing to resume: refused, and the store unchanged.
  CommandResult again = run_workbench(dir, {"resume", "2", "--db", db});
  CHECK(again.exit_code != 0);
  CHECK_THAT(again.err, Contains("run 2 finished"));
  CommandResult missing = run_workbench(dir, {"resume", "7", "--db", db});
  CHECK(missing.exit_code != 0);
  CHECK_THAT(missing.err, Contains("there is no run 7"));
  CHECK(RunStore(db).run(2).status == "finished");
}

TEST_CASE("e2e: killed inside a checkpoint write and inside a metrics transaction: the store is intact and the run "
          "shows crashed and the last good checkpoint loads and it resumes to the uninterrupted losses",
          "[e2e][resume][crash]") {
  TempDir dir("wbtest_failpoint_");
  const std::string manifest = write_manifest(dir, 6);
  const std::string db = dir.file("runs.db");
  const std::string exp = write_crash_experiment(dir, manifest, 30);
  CommandResult whole = run_workbench(dir, {"run", exp, "--db", db});
  INFO(whole.err);
  REQUIRE(whole.exit_code == 0);
  const auto reference = RunStore(db).metrics(1, "train/loss");
  REQUIRE(reference.size() == 30);

  struct Kill {
    std::string failpoint;
    std::int64_t last_checkpoint;  ///< the newest checkpoint the store has afterwards (0: any)
  };
  // The second checkpoint write (step 10) dies between its synced temporary file and the rename; the
  // 23rd metrics transaction (in the third decade of steps) dies before its commit.
  for (const Kill& k : {Kill{"checkpoint.before_rename:2", 5}, Kill{"metrics.before_commit:23", 0}}) {
    INFO(k.failpoint);
    ::setenv("WORKBENCH_FAILPOINT", k.failpoint.c_str(), 1);
    CommandResult killed = run_workbench(dir, {"run", exp, "--db", db});
    ::unsetenv("WORKBENCH_FAILPOINT");
    CHECK(killed.exit_code == 128 + SIGKILL);  // the shell's report of a process killed by SIGKILL
    RunStore store(db);
    const std::int64_t id = store.runs().back().id;
    CHECK(scalar(store, "PRAGMA integrity_check") == std::optional<std::string>("ok"));
    CHECK(store.run(id).status == "running");
    // What was committed is whole steps 1..L, as the uninterrupted run logged them; nothing after.
    const auto before = store.metrics(id, "train/loss");
    CHECK(before.size() < 30);
    for (std::size_t i = 0; i < before.size(); ++i) {
      CHECK(before[i].step == static_cast<std::int64_t>(i) + 1);
      CHECK(before[i].value == reference[i].value);
    }
    CommandResult listing = run_workbench(dir, {"runs", "--db", db});
    CHECK_THAT(listing.out, Contains("crashed"));
    const auto checkpoints = store.checkpoints(id);
    REQUIRE_FALSE(checkpoints.empty());
    const auto& last = checkpoints.back();
    if (k.last_checkpoint > 0) CHECK(last.step == k.last_checkpoint);
    CHECK(last.step % 5 == 0);
    CHECK(last.sha256 == workbench::sha256_file(last.path));
    CHECK(checkpoint_step(last.path) == last.step);

    CommandResult resumed = run_workbench(dir, {"resume", std::to_string(id), "--db", db});
    INFO(resumed.err);
    REQUIRE(resumed.exit_code == 0);
    CHECK_THAT(resumed.err, Contains("resumed at step " + std::to_string(last.step)));
    const auto continued = RunStore(db).metrics(id, "train/loss");
    REQUIRE(continued.size() == reference.size());
    for (std::size_t i = 0; i < reference.size(); ++i) {
      INFO("step " << reference[i].step);
      CHECK(continued[i].step == reference[i].step);
      CHECK(continued[i].value == reference[i].value);
    }
  }
}

namespace {

// How a process is killed: at the n-th hit of a failpoint, or `delay` after it started.
struct RandomKill {
  std::string failpoint;  ///< "name:n", or empty for a kill after `delay`
  std::chrono::milliseconds delay{0};
  std::string describe() const {
    if (!failpoint.empty()) return "failpoint " + failpoint;
    if (delay >= std::chrono::minutes(1)) return "not killed";
    return "SIGKILL " + std::to_string(delay.count()) + " ms after it started";
  }
};

// Runs `workbench <args>` in the background and kills it as `kill` says. Returns the exit status as
// waitpid reports it (the process may have finished before the kill came).
int run_and_kill(const std::vector<std::string>& args, const std::string& err, const RandomKill& kill) {
  if (!kill.failpoint.empty()) ::setenv("WORKBENCH_FAILPOINT", kill.failpoint.c_str(), 1);
  const pid_t child = start_workbench(args, err);
  ::unsetenv("WORKBENCH_FAILPOINT");
  int status = 0;
  const auto deadline = std::chrono::steady_clock::now() + (kill.failpoint.empty() ? kill.delay : std::chrono::minutes(5));
  while (::waitpid(child, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(child, SIGKILL);
      ::waitpid(child, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status;
}

}  // namespace

TEST_CASE("e2e: killed at random points again and again, each time the store is intact and the run resumes, and "
          "it ends with the losses of an uninterrupted run",
          "[e2e][resume][crash][random]") {
  // The points are drawn from a seed printed here; WORKBENCH_KILL_SEED=<seed> replays a failure.
  const char* seed_env = std::getenv("WORKBENCH_KILL_SEED");
  const unsigned seed = seed_env ? static_cast<unsigned>(std::strtoul(seed_env, nullptr, 10)) : std::random_device{}();
  std::printf("random kill points: WORKBENCH_KILL_SEED=%u\n", seed);
  std::fflush(stdout);
  INFO("WORKBENCH_KILL_SEED=" << seed);
  std::mt19937 rng(seed);

  TempDir dir("wbtest_random_kill_");
  const std::string manifest = write_manifest(dir, 6);
  const std::string db = dir.file("runs.db");
  constexpr int kSteps = 40;
  const std::string exp = write_crash_experiment(dir, manifest, kSteps);
  CommandResult whole = run_workbench(dir, {"run", exp, "--db", db});
  INFO(whole.err);
  REQUIRE(whole.exit_code == 0);
  const auto reference = RunStore(db).metrics(1, "train/loss");
  REQUIRE(reference.size() == kSteps);

  // A kill anywhere: inside a checkpoint write, inside a metrics transaction, or at any moment (loading
  // the data, building the model, mid-step, mid-evaluation, while the store is created).
  // `from`: the step the process starts at, so that the n-th hit is one it reaches (a checkpoint every 5
  // steps; a metrics transaction every step, and one per evaluation).
  auto draw = [&](std::int64_t from) {
    RandomKill k;
    const int left = static_cast<int>(kSteps - from);
    switch (std::uniform_int_distribution<int>(0, 2)(rng)) {
      case 0:
        k.failpoint = "checkpoint.before_rename:" + std::to_string(std::uniform_int_distribution<int>(1, std::max(1, left / 5))(rng));
        break;
      case 1:
        k.failpoint = "metrics.before_commit:" + std::to_string(std::uniform_int_distribution<int>(1, std::max(1, left))(rng));
        break;
      default: k.delay = std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 1000)(rng));
    }
    return k;
  };

  std::int64_t id = 0;  // the run being trained (0: none recorded yet)
  std::int64_t resume_step = 0;  // its newest checkpoint's step
  std::vector<std::string> history;
  int kills = 0;
  for (int round = 0; round < 16; ++round) {
    // The last rounds are not killed, so that the run ends.
    const RandomKill kill = round < 8 ? draw(id == 0 ? 0 : resume_step) : RandomKill{"", std::chrono::minutes(5)};
    const std::vector<std::string> args =
        id == 0 ? std::vector<std::string>{"run", exp, "--db", db}
                : std::vector<std::string>{"resume", std::to_string(id), "--db", db};
    history.push_back(args[0] + " " + (id ? std::to_string(id) : std::string("(new run)")) + ", " + kill.describe());
    std::ostringstream so_far;
    for (const auto& h : history) so_far << "\n  " << h;
    INFO("rounds:" << so_far.str());
    const std::size_t runs_before = fs::exists(db) ? RunStore(db).runs().size() : 0;
    const std::string err = dir.file("round" + std::to_string(round) + ".err");
    const int status = run_and_kill(args, err, kill);
    INFO("stderr: " << read_file(err));
    const bool finished = WIFEXITED(status) && WEXITSTATUS(status) == 0;  // before the kill came
    if (!finished) {
      REQUIRE(WIFSIGNALED(status));
      REQUIRE(WTERMSIG(status) == SIGKILL);
      ++kills;
    }
    if (!fs::exists(db)) continue;
    RunStore store(db);
    CHECK(scalar(store, "PRAGMA integrity_check") == std::optional<std::string>("ok"));
    const auto runs = store.runs();
    if (id == 0) {
      if (runs.size() == runs_before) continue;  // killed before it recorded the run: start again
      id = runs.back().id;
    }
    // Killed after the run was recorded finished, while the process was ending: as good as finished.
    if (finished || store.run(id).status == "finished") break;
    CHECK(store.run(id).status == "running");
    // What was committed is whole steps 1..L, as the uninterrupted run logged them.
    const auto committed = store.metrics(id, "train/loss");
    REQUIRE(committed.size() <= reference.size());
    for (std::size_t i = 0; i < committed.size(); ++i) {
      CHECK(committed[i].step == static_cast<std::int64_t>(i) + 1);
      CHECK(committed[i].value == reference[i].value);
    }
    // Killed before its first checkpoint: nothing to resume, and resume says so; a new run starts over.
    bool has_checkpoint = false;
    for (const auto& c : store.checkpoints(id)) {
      if (c.kind == "final") continue;
      // Killed between deleting an old periodic checkpoint and deleting its row: resume passes over it.
      if (!fs::exists(c.path)) continue;
      has_checkpoint = true;
      resume_step = std::max(resume_step, c.step);
      CHECK(c.sha256 == workbench::sha256_file(c.path));
    }
    if (!has_checkpoint) {
      CommandResult refused = run_workbench(dir, {"resume", std::to_string(id), "--db", db});
      CHECK(refused.exit_code != 0);
      CHECK_THAT(refused.err, Contains("has no checkpoint to resume from"));
      id = 0;
      resume_step = 0;
    }
  }
  REQUIRE(id != 0);
  RunStore store(db);
  CHECK(scalar(store, "PRAGMA integrity_check") == std::optional<std::string>("ok"));
  const auto run = store.run(id);
  CHECK(run.status == "finished");
  const auto continued = store.metrics(id, "train/loss");
  REQUIRE(continued.size() == reference.size());  // one row per step: nothing duplicated, nothing lost
  for (std::size_t i = 0; i < reference.size(); ++i) {
    INFO("step " << reference[i].step);
    CHECK(continued[i].step == reference[i].step);
    CHECK(continued[i].value == reference[i].value);
  }
  CHECK(store.metrics(id, "dev/cer").back().value == store.metrics(1, "dev/cer").back().value);
  std::printf("random kill points: %d kills, then run %lld finished:\n", kills, static_cast<long long>(id));
  for (const auto& h : history) std::printf("  %s\n", h.c_str());
}
