// End to end: the real `workbench` executable on tiny experiments written to a temporary folder, then
// the SQLite run store read back. Each case takes a few seconds on 2 cores.
//
// Set WORKBENCH_KEEP_E2E=1 to keep the temporary folders (their paths are printed) for inspection.
#include <signal.h>
#include <sys/wait.h>
#include <torch/cuda.h>
#include <torch/serialize/input-archive.h>
#include <torch/types.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "test_support.h"
#include "run_support.h"
#include "tone_manifest.h"
#include "workbench/audio.h"
#include "workbench/registry.h"
#include "workbench/run_store.h"
#include "workbench/sha256.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using results::RunStore;
using Catch::Matchers::Contains;

namespace {

bool asterisk_installed() {
  for (const char* lang : {"en", "es"}) {
    if (!fs::is_directory(std::string("/usr/share/asterisk/sounds/") + lang)) return false;
    if (!fs::exists(std::string("/usr/share/doc/asterisk-core-sounds-") + lang + "/core-sounds-" + lang + ".txt.gz"))
      return false;
  }
  return true;
}

const char* kTinyModel = R"(
[model.speech_encoder]
plugin = "conformer"
d_model = 32
heads = 2
layers = 1
ffn_dim = 64
kernel_size = 7
subsampling_channels = 8

[objectives.ctc]
plugin = "ctc"
data = "train"

[evaluators.asr]
plugin = "asr"
data = "dev"
)";

/// The tiny experiment on `manifest` (train and dev), `steps` steps, with `trainer_extra` lines in [trainer].
std::string manifest_experiment(const TempDir& dir, const std::string& manifest, int steps,
                                const std::string& trainer_extra = "");

std::string trainer_section(const TempDir& dir, int steps) {
  return "\n[trainer]\nsteps = " + std::to_string(steps) +
         "\nlog_every = 1\nwarmup_steps = 2\nthreads = 2\nprogress = \"none\"\ncheckpoint_dir = \"" +
         dir.file("checkpoints") + "\"\n";
}

std::string manifest_experiment(const TempDir& dir, const std::string& manifest, int steps,
                                const std::string& trainer_extra) {
  return "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest +
         "\"\nbatch_seconds = 4.0\n\n[data.dev]\nplugin = \"manifest\"\npath = \"" + manifest +
         "\"\nshuffle = false\n" + kTinyModel + trainer_section(dir, steps) + trainer_extra;
}

}  // namespace

TEST_CASE("e2e: a few steps on the Asterisk prompts are recorded in the run store", "[e2e][asterisk]") {
  if (!asterisk_installed()) {
    WARN("Asterisk prompts (asterisk-core-sounds-en/-es and -wav) are not installed: skipping");
    return;
  }
  TempDir dir("wbtest_e2e_");
  const std::string exp = dir.file("e2e.toml");
  const std::string db = dir.file("runs.db");
  write_file(exp, std::string(R"([experiment]
name = "e2e"
seed = 3

[data.train]
plugin = "asterisk"
languages = ["en", "es"]
max_per_language = 12
batch_seconds = 30.0

[data.dev]
plugin = "asterisk"
split = "dev"
languages = ["en", "es"]
max_per_language = 12
shuffle = false
)") + kTinyModel + trainer_section(dir, 20));

  // --dump-config prints the resolved configuration and touches no database.
  CommandResult dump = run_workbench(
      dir, {"run", exp, "--set", "trainer.steps=4", "--set", "trainer.checkpoint_every=2", "--dump-config", "--db", db});
  INFO(dump.err);
  REQUIRE(dump.exit_code == 0);
  CHECK_THAT(dump.out, Contains("steps = 4") && Contains("[model.speech_encoder]"));
  CHECK_FALSE(fs::exists(db));

  CommandResult run = run_workbench(dir, {"run", exp, "--set", "trainer.steps=4", "--set", "trainer.checkpoint_every=2",
                                          "--tag", "study=e2e", "--tag", "smoke", "--db", db});
  INFO(run.err);
  REQUIRE(run.exit_code == 0);
  REQUIRE(fs::exists(db));

  RunStore store(db);
  auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  const auto r = runs[0];
  CHECK(r.status == "finished");
  CHECK(r.experiment_name == "e2e");
  CHECK(r.error_message.empty());
  CHECK_FALSE(r.started_at.empty());
  CHECK_FALSE(r.ended_at.empty());
  CHECK(r.seed == 3);
  CHECK(r.device == "cpu");
  CHECK(r.kind == "train");
  CHECK(r.torch_version == torch_header_version());
  REQUIRE_FALSE(r.config_toml.empty());
  CHECK(r.config_toml == dump.out);
  CHECK(r.config_hash == workbench::sha256_text(r.config_toml));
  const std::string id = std::to_string(r.id);

  // Typed params: the override, the file's values, and what the run derived.
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id + " AND key = 'trainer.steps'") ==
        std::optional<std::string>("4.0"));
  CHECK(scalar(store, "SELECT value_text FROM params WHERE run_id = " + id + " AND key = 'trainer.steps'") ==
        std::optional<std::string>("4"));
  CHECK(scalar(store, "SELECT count(*) FROM params WHERE run_id = " + id +
                          " AND key = 'model.speech_encoder.d_model' AND value_num = 32") ==
        std::optional<std::string>("1"));
  CHECK(scalar(store, "SELECT value_text FROM params WHERE run_id = " + id +
                          " AND key = 'model.speech_encoder.plugin'") == std::optional<std::string>("conformer"));
  CHECK(scalar(store, "SELECT value_num IS NULL FROM params WHERE run_id = " + id +
                          " AND key = 'data.train.languages'") == std::optional<std::string>("1"));
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id +
                          " AND key = 'derived.data.train.utterances'") == std::optional<std::string>("24.0"));
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id +
                          " AND key = 'derived.data.dev.utterances'") == std::optional<std::string>("24.0"));
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id + " AND key = 'derived.steps_done'") ==
        std::optional<std::string>("4.0"));
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id + " AND key = 'runtime.threads'") ==
        std::optional<std::string>("2.0"));

  // Training metrics at every step (log_every = 1), one row each.
  auto loss = store.metrics(r.id, "ctc/loss");
  REQUIRE(loss.size() == 4);
  for (std::size_t i = 0; i < loss.size(); ++i) {
    CHECK(loss[i].step == static_cast<std::int64_t>(i + 1));
    CHECK(std::isfinite(loss[i].value));
    CHECK(loss[i].value > 0);
    CHECK(loss[i].wall_time > 1.6e9);
  }
  CHECK(scalar(store, "SELECT count(*) FROM metrics WHERE run_id = " + id + " AND key = 'ctc/loss'") ==
        std::optional<std::string>("4"));
  // The schedule: warm-up over 2 steps to lr = 1e-3, then 1e-3 * sqrt(2 / step).
  auto lr = store.metrics(r.id, "train/lr");
  REQUIRE(lr.size() == 4);
  CHECK(lr[0].value == Approx(5e-4));
  CHECK(lr[1].value == Approx(1e-3));
  CHECK(lr[3].value == Approx(1e-3 * std::sqrt(0.5)));
  // Evaluation at the start and at the end.
  auto cer = store.metrics(r.id, "dev/cer");
  REQUIRE(cer.size() == 2);
  CHECK(cer[0].step == 0);
  CHECK(cer[1].step == 4);
  for (const auto& m : cer) CHECK((m.value >= 0 && std::isfinite(m.value)));
  CHECK(store.metrics(r.id, "dev/cer/en").size() == 2);
  CHECK(store.metrics(r.id, "dev/cer/es").size() == 2);
  CHECK(store.metrics(r.id, "dev/wer").size() == 2);

  // The plugins used, with the sha256 of each .so.
  auto plugins = store.plugins(r.id);
  REQUIRE(plugins.size() == 4);
  std::map<std::string, std::string> kinds;
  for (const auto& p : plugins) {
    INFO(p.name);
    kinds[p.name] = p.kind;
    CHECK(p.path == Registry::builtin_plugin_dir() + "/" + p.name + ".so");
    CHECK_FALSE(p.version.empty());
    REQUIRE(p.sha256.size() == 64);
    CHECK(p.sha256.find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK(p.sha256 == workbench::sha256_file(p.path));
  }
  CHECK(kinds == std::map<std::string, std::string>{
                     {"asterisk", "dataset"}, {"conformer", "encoder"}, {"ctc", "loss"}, {"asr", "evaluator"}});

  // The checkpoint is where the run says, and holds the step, the config and the vocabulary.
  const std::string ckpt = dir.file("checkpoints") + "/run-" + id + "/final.pt";
  REQUIRE(fs::exists(ckpt));
  CHECK(fs::file_size(ckpt) > 10000);
  CHECK(scalar(store, "SELECT value_text FROM params WHERE run_id = " + id + " AND key = 'derived.checkpoint'") ==
        std::optional<std::string>(ckpt));
  torch::serialize::InputArchive archive;
  archive.load_from(ckpt);
  torch::Tensor step;
  archive.read("step", step);
  CHECK(step.item<std::int64_t>() == 4);
  c10::IValue config;
  archive.read("config_toml", config);
  CHECK(config.toStringRef() == r.config_toml);
  c10::IValue vocabulary;
  archive.read("vocabulary", vocabulary);
  CHECK_THAT(vocabulary.toStringRef(), Contains("workbench-char-vocabulary"));
  torch::Tensor head;
  CHECK(archive.try_read("objectives.ctc.project.weight", head));
  CHECK(head.size(1) == 32);

  // Every checkpoint is in the store with its step and sha256: the periodic one at step 2 (step 4 is the
  // end, whose checkpoint is final.pt), and the final one.
  auto checkpoints = store.checkpoints(r.id);
  REQUIRE(checkpoints.size() == 2);
  CHECK(checkpoints[0].kind == "periodic");
  CHECK(checkpoints[0].step == 2);
  CHECK(checkpoints[0].path == dir.file("checkpoints") + "/run-" + id + "/step-2.pt");
  CHECK(checkpoints[1].kind == "final");
  CHECK(checkpoints[1].path == ckpt);
  CHECK(checkpoints[1].sha256 == workbench::sha256_file(ckpt));
  CHECK(store.tags(r.id) == std::vector<std::pair<std::string, std::string>>{{"smoke", ""}, {"study", "e2e"}});
  // The revision the binary was built from, fixed at build time: 12 hex digits, "-dirty" when the tree
  // had changes (outside a git checkout, "unknown").
  const std::string rev = r.git_revision;
  if (rev != "unknown") {
    REQUIRE(rev.size() >= 12);
    CHECK(rev.substr(0, 12).find_first_not_of("0123456789abcdef") == std::string::npos);
    CHECK((rev.size() == 12 || rev.substr(12) == "-dirty"));
  }

  // `workbench runs` lists it with its headline metric (the first averaged evaluation metric).
  CommandResult listed = run_workbench(dir, {"runs", "--db", db});
  INFO(listed.err);
  REQUIRE(listed.exit_code == 0);
  CHECK_THAT(listed.out, Contains("ID") && Contains("HEADLINE"));
  CHECK_THAT(listed.out, Contains("e2e") && Contains("train") && Contains("finished") && Contains("dev/cer "));

  // A run that starts from this one's checkpoint is recorded as its child, and SQL joins the two.
  CommandResult child = run_workbench(dir, {"run", exp, "--set", "trainer.steps=2", "--set",
                                            "init.checkpoint=\"" + ckpt + "\"", "--db", db});
  INFO(child.err);
  REQUIRE(child.exit_code == 0);
  runs = store.runs();
  REQUIRE(runs.size() == 2);
  CHECK(runs[1].parent_run_id == std::optional<std::int64_t>(r.id));
  CHECK(scalar(store, "SELECT parent_id FROM run_parents WHERE child_id = " + std::to_string(runs[1].id)) ==
        std::optional<std::string>(id));
  // --parent names one directly; an unknown one is refused.
  CommandResult named = run_workbench(dir, {"run", exp, "--set", "trainer.steps=1", "--parent", id, "--db", db});
  REQUIRE(named.exit_code == 0);
  CHECK(store.runs().back().parent_run_id == std::optional<std::int64_t>(r.id));
  CommandResult unknown = run_workbench(dir, {"run", exp, "--set", "trainer.steps=1", "--parent", "999", "--db", db});
  CHECK(unknown.exit_code != 0);
  CHECK_THAT(unknown.err, Contains("999"));
  // [init] from_run names the parent by id: its final checkpoint is loaded and the link recorded.
  CommandResult by_id = run_workbench(dir, {"run", exp, "--set", "trainer.steps=1", "--set", "init.from_run=" + id,
                                            "--db", db});
  INFO(by_id.err);
  REQUIRE(by_id.exit_code == 0);
  CHECK(store.runs().back().parent_run_id == std::optional<std::int64_t>(r.id));
  CHECK(scalar(store, "SELECT value_text FROM params WHERE run_id = " + std::to_string(store.runs().back().id) +
                          " AND key = 'derived.init.checkpoint'") == std::optional<std::string>(ckpt));
  // A run that does not exist, or has no checkpoint of that kind, fails the run with what it does have.
  CommandResult no_run = run_workbench(dir, {"run", exp, "--set", "init.from_run=999", "--db", db});
  CHECK(no_run.exit_code == 1);
  CHECK_THAT(no_run.err, Contains("no run 999"));
  CHECK(store.runs().back().status == "failed");
  CommandResult no_best = run_workbench(dir, {"run", exp, "--set", "init.from_run=" + id, "--set",
                                              "init.which=\"best\"", "--db", db});
  CHECK(no_best.exit_code == 1);
  CHECK_THAT(no_best.err, Contains("has no best checkpoint") && Contains("final (step "));

  // `workbench eval --from-run` scores the parent's checkpoint without training: an eval run, its child,
  // with the metrics the parent ended on.
  CommandResult evaluated = run_workbench(dir, {"eval", exp, "--from-run", id, "--db", db});
  INFO(evaluated.err);
  REQUIRE(evaluated.exit_code == 0);
  const auto eval_run = store.runs().back();
  CHECK(eval_run.kind == "eval");
  CHECK(eval_run.status == "finished");
  CHECK(eval_run.parent_run_id == std::optional<std::int64_t>(r.id));
  const std::string eid = std::to_string(eval_run.id);
  CHECK(scalar(store, "SELECT count(*) FROM checkpoints WHERE run_id = " + eid) == std::optional<std::string>("0"));
  CHECK(scalar(store, "SELECT step FROM metrics WHERE run_id = " + eid + " AND key = 'dev/cer'") ==
        std::optional<std::string>("0"));
  const auto parent_cer = scalar(store, "SELECT value FROM metrics WHERE run_id = " + id +
                                            " AND key = 'dev/cer' ORDER BY step DESC LIMIT 1");
  const auto eval_cer = scalar(store, "SELECT value FROM metrics WHERE run_id = " + eid + " AND key = 'dev/cer'");
  REQUIRE(parent_cer);
  REQUIRE(eval_cer);
  CHECK(std::stod(*eval_cer) == Approx(std::stod(*parent_cer)).margin(1e-9));
  // An evaluation keeps no best checkpoint, so a keep_best on data it does not evaluate is no error.
  CommandResult elsewhere = run_workbench(dir, {"eval", exp, "--from-run", id, "--db", db, "--set",
                                                "trainer.keep_best=\"test/cer\""});
  INFO(elsewhere.err);
  CHECK(elsewhere.exit_code == 0);
  // SQL reaches the parent's config and metrics from the child.
  CHECK(scalar(store, "SELECT count(*) FROM run_parents WHERE child_id = " + eid + " AND parent_config_toml LIKE "
                      "'%[objectives.%'") == std::optional<std::string>("1"));

  // A tag without a key is refused before anything runs.
  const auto before = store.runs().size();
  CommandResult keyless = run_workbench(dir, {"run", exp, "--tag", "=x", "--db", db});
  CHECK(keyless.exit_code == 2);
  CHECK_THAT(keyless.err, Contains("--tag =x"));
  CHECK(store.runs().size() == before);
}

TEST_CASE("e2e: a manifest of synthetic WAVs trains and records the run", "[e2e][manifest]") {
  TempDir dir("wbtest_e2e_");
  const std::string manifest = write_manifest(dir, 6);
  const std::string exp = dir.file("manifest.toml");
  const std::string db = dir.file("runs.db");
  write_file(exp, "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest +
                      "\"\nbatch_seconds = 4.0\n\n[data.dev]\nplugin = \"manifest\"\npath = \"" + manifest +
                      "\"\nshuffle = false\n" + kTinyModel + trainer_section(dir, 2));
  CommandResult run = run_workbench(dir, {"run", exp, "--db", db});
  INFO(run.err);
  REQUIRE(run.exit_code == 0);
  RunStore store(db);
  auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  const auto& r = runs[0];
  CHECK(r.status == "finished");
  CHECK(r.experiment_name == "manifest");  // the file's stem: no [experiment] name
  const std::string id = std::to_string(r.id);
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id +
                          " AND key = 'derived.data.train.utterances'") == std::optional<std::string>("6.0"));
  // Vocabulary: blank, unknown, ' ', 'a', 'b' ("Aab" is lower-cased).
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id + " AND key = 'derived.vocabulary_size'") ==
        std::optional<std::string>("5.0"));
  auto loss = store.metrics(r.id, "ctc/loss");
  REQUIRE(loss.size() == 2);
  CHECK(loss[0].step == 1);
  CHECK(loss[1].step == 2);
  auto cer = store.metrics(r.id, "dev/cer/zz");
  REQUIRE(cer.size() == 2);
  CHECK(cer[0].step == 0);
  CHECK(cer[1].step == 2);
  auto plugins = store.plugins(r.id);
  std::set<std::string> names;
  for (const auto& p : plugins) names.insert(p.name);
  CHECK(names == std::set<std::string>{"manifest", "conformer", "ctc", "asr"});
  CHECK(fs::exists(dir.file("checkpoints") + "/run-" + id + "/final.pt"));
}

TEST_CASE("e2e: Ctrl-C mid-run writes a checkpoint that loads, and the run is recorded as interrupted",
          "[e2e][interrupt]") {
  TempDir dir("wbtest_e2e_");
  const std::string manifest = write_manifest(dir, 6);
  const std::string exp = dir.file("long.toml");
  const std::string db = dir.file("runs.db");
  // Far more steps than the test waits for: it is stopped by SIGINT, not by its end.
  write_file(exp, manifest_experiment(dir, manifest, 100000));
  const pid_t child = start_run(exp, db, dir.file("interrupted.err"));
  REQUIRE(child > 0);
  // Wait until it trains (training metrics are in the store), then press Ctrl-C.
  REQUIRE(wait_for_run(db, [](const RunStore& store, std::int64_t run) { return !store.metrics(run, "train/loss").empty(); }));
  ::kill(child, SIGINT);
  int status = 0;
  ::waitpid(child, &status, 0);
  INFO(read_file(dir.file("interrupted.err")));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  RunStore store(db);
  const auto run = store.runs().at(0);
  CHECK(run.status == "interrupted");
  const auto checkpoints = store.checkpoints(run.id);
  REQUIRE(checkpoints.size() == 1);
  CHECK(checkpoints[0].kind == "interrupted");
  CHECK(checkpoints[0].step > 0);
  CHECK(checkpoints[0].sha256 == workbench::sha256_file(checkpoints[0].path));
  // The file is complete: it loads, with the step it was written at.
  torch::serialize::InputArchive archive;
  archive.load_from(checkpoints[0].path);
  torch::Tensor step;
  archive.read("step", step);
  CHECK(step.item<std::int64_t>() == checkpoints[0].step);
}

TEST_CASE("e2e: a configuration error fails the run and records the message", "[e2e][errors]") {
  TempDir dir("wbtest_e2e_");
  const std::string exp = dir.file("bad_key.toml");
  const std::string db = dir.file("runs.db");
  std::string model = kTinyModel;
  const std::string anchor = "subsampling_channels = 8\n";
  REQUIRE(model.find(anchor) != std::string::npos);
  model.insert(model.find(anchor) + anchor.size(), "d_modle = 64\n");  // a typo in [model.speech_encoder]
  const std::string text =
      std::string("[data.train]\nplugin = \"manifest\"\npath = \"x.tsv\"\n") + model + trainer_section(dir, 2);
  write_file(exp, text);

  // --dump-config reports it too, and writes no database.
  CommandResult dump = run_workbench(dir, {"run", exp, "--dump-config", "--db", db});
  CHECK(dump.exit_code != 0);
  CHECK_THAT(dump.err, Contains("d_modle"));
  CHECK_FALSE(fs::exists(db));

  CommandResult run = run_workbench(dir, {"run", exp, "--db", db});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK_THAT(run.err, Contains("d_modle") && Contains("recorded as failed run"));
  REQUIRE(fs::exists(db));
  RunStore store(db);
  auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  const auto& r = runs[0];
  CHECK(r.status == "failed");
  CHECK(r.experiment_name == "bad_key");
  CHECK_THAT(r.error_message, Contains("d_modle") && Contains("unknown key") && Contains(exp + ":"));
  CHECK_THAT(r.error_message, Contains("[model.speech_encoder]") && Contains("d_model"));
  CHECK_FALSE(r.ended_at.empty());
  CHECK(r.config_toml == text);  // the file as written: it did not resolve
  CHECK(store.metrics(r.id).empty());

  // A bad --set is recorded the same way, in the same database.
  CommandResult set = run_workbench(dir, {"run", exp, "--set", "trainer.steps", "--db", db});
  CHECK(set.exit_code == 1);
  runs = store.runs();
  REQUIRE(runs.size() == 2);
  CHECK(runs[1].status == "failed");
  CHECK_THAT(runs[1].error_message, Contains("--set trainer.steps"));
}

TEST_CASE("e2e: a dataset that fails to load fails the run, naming the file", "[e2e][errors]") {
  TempDir dir("wbtest_e2e_");
  const std::string missing = dir.file("no_such_manifest.tsv");
  const std::string exp = dir.file("missing_data.toml");
  const std::string db = dir.file("runs.db");
  write_file(exp, "[experiment]\nname = \"missing\"\n[data.train]\nplugin = \"manifest\"\npath = \"" + missing +
                      "\"\n[data.dev]\nplugin = \"manifest\"\npath = \"" + missing + "\"\n" + kTinyModel +
                      trainer_section(dir, 2));
  CommandResult run = run_workbench(dir, {"run", exp, "--db", db});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK_THAT(run.err, Contains(missing));
  RunStore store(db);
  auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  const auto& r = runs[0];
  CHECK(r.status == "failed");
  CHECK(r.experiment_name == "missing");
  CHECK_THAT(r.error_message, Contains(missing));
  CHECK_FALSE(r.ended_at.empty());
  // The configuration resolved, so the run has its resolved config, params and plugins.
  CHECK_THAT(r.config_toml, Contains("[data.train]") && Contains("plugin = \"manifest\""));
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + std::to_string(r.id) +
                          " AND key = 'trainer.steps'") == std::optional<std::string>("2.0"));
  CHECK(store.plugins(r.id).size() == 4);
  CHECK(store.metrics(r.id).empty());
  CHECK_FALSE(fs::exists(dir.file("checkpoints")));

  // A manifest whose audio file is missing names the audio file and the manifest.
  const std::string manifest = dir.file("broken.tsv");
  const std::string wav = dir.file("gone.wav");
  write_file(manifest, "path\ttext\tlang\n" + wav + "\thello\ten\n");
  CommandResult broken = run_workbench(dir, {"run", exp, "--db", db, "--set", "data.train.path=" + manifest, "--set",
                                      "data.dev.path=" + manifest});
  CHECK(broken.exit_code == 1);
  runs = store.runs();
  REQUIRE(runs.size() == 2);
  CHECK(runs[1].status == "failed");
  CHECK_THAT(runs[1].error_message, Contains(wav) && Contains(manifest));

  // A manifest without the needed columns names the file and line.
  write_file(manifest, "file\ttranscript\n" + wav + "\thello\n");
  CommandResult columns = run_workbench(dir, {"run", exp, "--db", db, "--set", "data.train.path=" + manifest, "--set",
                                       "data.dev.path=" + manifest});
  CHECK(columns.exit_code == 1);
  runs = store.runs();
  REQUIRE(runs.size() == 3);
  CHECK(runs[2].status == "failed");
  CHECK_THAT(runs[2].error_message, Contains(manifest + ":1") && Contains("'path'"));
}

// Known bug (reported): run_command picks the device after opening the store but before begin_run, so
// `trainer.device = "cuda"` without CUDA exits with an error and leaves no run in the database.
TEST_CASE("e2e: an unavailable device fails the run and records it", "[e2e][errors]") {
  if (torch::cuda::is_available()) {
    WARN("CUDA is available here: trainer.device = \"cuda\" is not an error; skipping");
    return;
  }
  TempDir dir("wbtest_e2e_");
  const std::string manifest = write_manifest(dir, 2);
  const std::string exp = dir.file("cuda.toml");
  const std::string db = dir.file("runs.db");
  write_file(exp, "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest + "\"\n[data.dev]\nplugin = \"manifest\"\npath = \"" +
                      manifest + "\"\n" + kTinyModel + trainer_section(dir, 1));
  CommandResult run = run_workbench(dir, {"run", exp, "--db", db, "--set", "trainer.device=cuda"});
  INFO(run.err);
  CHECK(run.exit_code == 1);
  CHECK_THAT(run.err, Contains("CUDA is not available"));
  REQUIRE(fs::exists(db));
  RunStore store(db);
  auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].status == "failed");
  CHECK_THAT(runs[0].error_message, Contains("CUDA"));
}

TEST_CASE("e2e: on_bad_audio = \"skip\" leaves out the files that cannot be decoded, logs and counts them",
          "[e2e][errors][manifest]") {
  TempDir dir("wbtest_e2e_");
  const std::string manifest = write_manifest(dir, 4);
  // A truncated RIFF header and a file of no bytes at all, listed among good ones.
  write_file(dir.file("audio/torn.wav"), std::string("RIFF\x24\x00\x00\x00WAVEfmt ", 16));
  write_file(dir.file("audio/empty.wav"), "");
  write_file(manifest, read_file(manifest) + "torn\taudio/torn.wav\tab\tzz\nempty\taudio/empty.wav\tba\tzz\n");
  const std::string exp = dir.file("bad_audio.toml");
  const std::string db = dir.file("runs.db");
  write_file(exp, "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest +
                      "\"\nbatch_seconds = 4.0\n\n[data.dev]\nplugin = \"manifest\"\npath = \"" + manifest +
                      "\"\nshuffle = false\non_bad_audio = \"skip\"\n" + kTinyModel + trainer_section(dir, 1));
  // By default the first bad file fails the run, naming it and the manifest.
  CommandResult strict = run_workbench(dir, {"run", exp, "--db", db});
  CHECK(strict.exit_code == 1);
  RunStore store(db);
  REQUIRE(store.runs().size() == 1);
  CHECK(store.runs()[0].status == "failed");
  CHECK_THAT(store.runs()[0].error_message, Contains("audio/") && Contains("(listed in " + manifest + ")"));

  CommandResult lenient = run_workbench(dir, {"run", exp, "--db", db, "--set", "data.train.on_bad_audio=\"skip\""});
  INFO(lenient.err);
  REQUIRE(lenient.exit_code == 0);
  CHECK_THAT(lenient.err, Contains("[data.train] skipped " + dir.file("audio/torn.wav")) &&
                              Contains("[data.train] skipped " + dir.file("audio/empty.wav")));
  const std::string id = std::to_string(store.runs()[1].id);
  CHECK(store.runs()[1].status == "finished");
  for (const std::string data : {"train", "dev"}) {
    CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id + " AND key = 'derived.data." + data +
                            ".skipped_audio'") == std::optional<std::string>("2.0"));
    CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id + " AND key = 'derived.data." + data +
                            ".utterances'") == std::optional<std::string>("4.0"));
  }
}

TEST_CASE("e2e: kill -9 mid-run: the store is intact, the run shows as crashed, its last checkpoint loads",
          "[e2e][crash]") {
  TempDir dir("wbtest_e2e_");
  const std::string manifest = write_manifest(dir, 6);
  const std::string exp = dir.file("long.toml");
  const std::string db = dir.file("runs.db");
  write_file(exp, manifest_experiment(dir, manifest, 100000, "checkpoint_every = 3\neval_at_start = false\n"));
  const pid_t child = start_run(exp, db, dir.file("killed.err"));
  REQUIRE(child > 0);
  // Until two periodic checkpoints are recorded: it is training, writing metrics and checkpoints.
  REQUIRE(wait_for_run(db, [](const RunStore& store, std::int64_t run) { return store.checkpoints(run).size() >= 2; }));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);

  RunStore store(db);
  CHECK(scalar(store, "PRAGMA integrity_check") == std::optional<std::string>("ok"));
  const auto run = store.runs().at(0);
  CHECK(run.status == "running");  // what was recorded; nobody was left to end it
  CommandResult listing = run_workbench(dir, {"runs", "--db", db});
  REQUIRE(listing.exit_code == 0);
  CHECK_THAT(listing.out, Contains("crashed"));
  // The newest checkpoint the store recorded is complete: its hash matches and it loads.
  auto checkpoints = store.checkpoints(run.id);
  REQUIRE_FALSE(checkpoints.empty());
  const auto& last = *std::max_element(checkpoints.begin(), checkpoints.end(),
                                       [](const auto& a, const auto& b) { return a.step < b.step; });
  CHECK(last.sha256 == workbench::sha256_file(last.path));
  CHECK(checkpoint_step(last.path) == last.step);
}

TEST_CASE("e2e: 4 concurrent runs on one database lose no rows and never meet \"database is locked\"",
          "[e2e][concurrency]") {
  TempDir dir("wbtest_e2e_");
  const std::string manifest = write_manifest(dir, 4);
  const std::string exp = dir.file("small.toml");
  const std::string db = dir.file("shared.db");
  const int steps = 30;
  write_file(exp, manifest_experiment(dir, manifest, steps, "checkpoint_every = 10\n"));
  std::vector<pid_t> children;
  for (int i = 0; i < 4; ++i) {
    const pid_t child = start_run(exp, db, dir.file("run" + std::to_string(i) + ".err"),
                                  {"--tag", "worker=" + std::to_string(i), "--set", "trainer.threads=1"});
    REQUIRE(child > 0);
    children.push_back(child);
  }
  for (std::size_t i = 0; i < children.size(); ++i) {
    int status = 0;
    ::waitpid(children[i], &status, 0);
    const std::string err = read_file(dir.file("run" + std::to_string(i) + ".err"));
    INFO(err);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK_THAT(err, !Contains("locked"));
  }
  RunStore store(db);
  CHECK(scalar(store, "PRAGMA integrity_check") == std::optional<std::string>("ok"));
  const auto runs = store.runs();
  REQUIRE(runs.size() == 4);
  for (const auto& r : runs) {
    INFO("run " << r.id);
    CHECK(r.status == "finished");
    CHECK(store.metrics(r.id, "train/loss").size() == static_cast<std::size_t>(steps));  // log_every = 1
    CHECK(store.metrics(r.id, "dev/cer").size() == 2);
    CHECK(store.checkpoints(r.id).size() == 3);  // periodic at 10 and 20 (both kept), final
  }
  CHECK(scalar(store, "SELECT count(DISTINCT value) FROM tags WHERE key = 'worker'") ==
        std::optional<std::string>("4"));
}
