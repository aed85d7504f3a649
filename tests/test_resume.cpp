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
#include <cstdlib>
#include <cmath>
#include <filesystem>
#include <map>
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
