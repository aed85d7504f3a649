// Sweeps through the real executable: a 2-point grid x 2 seeds, each pre-trained then fine-tuned from its
// own pre-training run; killed midway and run again (nothing duplicated, nothing lost, the killed run
// resumed as itself); `compare` in every format against the store's own rows; `plot` as SVG (parsed as
// XML, one stroked path per run) and PNG; the views of results/views.sql and every canned query in
// results/queries on the sweep's database.
#include <expat.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "run_support.h"
#include "test_support.h"
#include "tone_manifest.h"
#include "workbench/run_store.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using results::QueryResult;
using results::RunStore;

namespace {

std::string pretrain_experiment(const std::string& manifest, const std::string& checkpoints, int steps) {
  return "[experiment]\nname = \"sweep-pretrain\"\nseed = 1\n\n"
         "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest +
         "\"\nbatch_seconds = 2.5\nmax_batch = 2\n\n[data.dev]\nplugin = \"manifest\"\npath = \"" + manifest +
         "\"\nshuffle = false\n\n[model.speech_encoder]\nplugin = \"conformer\"\nd_model = 32\nheads = 2\n"
         "layers = 1\nffn_dim = 64\nkernel_size = 7\nsubsampling_channels = 8\n\n"
         "[objectives.ctc]\nplugin = \"ctc\"\n\n[evaluators.asr]\nplugin = \"asr\"\nevery = 20\n\n"
         "[trainer]\nsteps = " + std::to_string(steps) +
         "\nlog_every = 1\nwarmup_steps = 2\nthreads = 1\nprogress = \"none\"\n"
         "eval_at_start = false\ncheckpoint_every = 5\ncheckpoint_dir = \"" + checkpoints + "\"\n";
}

// The sweep: a grid over the warm-up, two seeds, and a fine-tuning stage from each point's own run.
std::string sweep_table(const std::string& name) {
  return "\n[sweep]\nname = \"" + name +
         "\"\nseeds = [1, 2]\nstage = \"pretrain\"\n\n[sweep.grid]\ntrainer.warmup_steps = [2, 4]\n\n"
         "[[sweep.then]]\nname = \"ft\"\nexperiment = \"ft.toml\"\ninit.from_run = \"${pretrain}\"\n"
         "trainer.steps = 4\n";
}

const std::optional<std::string>& cell(const QueryResult& result, std::size_t row, const std::string& column) {
  auto it = std::find(result.columns.begin(), result.columns.end(), column);
  if (it == result.columns.end()) throw std::runtime_error("no column " + column);
  if (row >= result.rows.size()) throw std::runtime_error("no row " + std::to_string(row));
  return result.rows[row][static_cast<std::size_t>(it - result.columns.begin())];
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::string part;
  std::istringstream in(s);
  while (std::getline(in, part, sep)) out.push_back(part);
  return out;
}

// An SVG as expat reads it: whether it parsed, the root element, and the style/attributes of each <path>.
struct SvgFacts {
  bool parsed = false;
  std::string root;
  std::vector<std::string> paths;  ///< each path's style and stroke-width attributes, concatenated
};

SvgFacts parse_svg(const std::string& text) {
  SvgFacts facts;
  XML_Parser parser = XML_ParserCreate(nullptr);
  XML_SetUserData(parser, &facts);
  XML_SetStartElementHandler(parser, [](void* data, const XML_Char* name, const XML_Char** attrs) {
    auto* f = static_cast<SvgFacts*>(data);
    const std::string element = name;
    if (f->root.empty()) f->root = element;
    if (element != "path") return;
    std::string description;
    for (int i = 0; attrs[i] != nullptr; i += 2) {
      const std::string key = attrs[i];
      if (key == "style" || key == "stroke-width") description += key + "=" + attrs[i + 1] + ";";
    }
    f->paths.push_back(description);
  });
  facts.parsed = XML_Parse(parser, text.data(), static_cast<int>(text.size()), 1) == XML_STATUS_OK;
  XML_ParserFree(parser);
  return facts;
}

// The paths cairo wrote for the runs' lines: the only ones stroked 2 units wide (frame, grid and
// legend use other widths; glyphs are filled).
std::size_t curve_paths(const SvgFacts& svg) {
  return static_cast<std::size_t>(std::count_if(svg.paths.begin(), svg.paths.end(), [](const std::string& p) {
    return p.find("stroke-width:2;") != std::string::npos || p.find("stroke-width=2;") != std::string::npos;
  }));
}

// A number as compare prints it.
std::string fmt_value(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4f", v);
  return buf;
}

}  // namespace

TEST_CASE("e2e: a sweep killed midway and run again has every point once and the killed run resumed - then "
          "compare and plot and the views and every canned query on its store",
          "[e2e][sweep]") {
  TempDir dir("wbtest_sweep_");
  const std::string manifest = write_manifest(dir, 6);
  const std::string db = dir.file("runs.db");
  const std::string exp = dir.file("pretrain.toml");
  write_file(exp, pretrain_experiment(manifest, dir.file("checkpoints"), 40) + sweep_table("tiny-ablation"));
  write_file(dir.file("ft.toml"),
             "[experiment]\nname = \"finetune-tone\"\nseed = 1\n\n[init]\ncomponents = [\"speech_encoder\"]\n\n"
             "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest +
                 "\"\nbatch_seconds = 2.5\nmax_batch = 2\n\n[data.dev]\nplugin = \"manifest\"\npath = \"" + manifest +
                 "\"\nshuffle = false\n\n[model.speech_encoder]\nplugin = \"conformer\"\nd_model = 32\nheads = 2\n"
                 "layers = 1\nffn_dim = 64\nkernel_size = 7\nsubsampling_channels = 8\n\n"
                 "[objectives.ctc]\nplugin = \"ctc\"\n\n[evaluators.asr]\nplugin = \"asr\"\nevery = 2\n\n"
                 "[trainer]\nsteps = 8\nlog_every = 1\nthreads = 1\nprogress = \"none\"\neval_at_start = true\n"
                 "checkpoint_dir = \"" + dir.file("checkpoints") + "\"\n");

  // Nothing run yet: --list shows all 8 runs to do and runs none.
  CommandResult listed = run_workbench(dir, {"sweep", exp, "--db", db, "--list"});
  INFO(listed.err);
  REQUIRE(listed.exit_code == 0);
  CHECK_THAT(listed.err, Contains("2 points x 2 seeds x 2 stages = 8 runs"));
  CHECK(split(listed.out, '\n').size() == 8);
  CHECK_THAT(listed.out, Contains("trainer.warmup_steps=4") && Contains("to run"));

  // Run it in the background and kill it (kill -9: the sweep and the run it is in are one process) once
  // the third run, point 2's pre-training of seed 1, has written two checkpoints.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    std::freopen(dir.file("killed.err").c_str(), "w", stderr);
    ::execl(WORKBENCH_BINARY_DIR "/bin/workbench", "workbench", "sweep", exp.c_str(), "--db", db.c_str(),
            static_cast<char*>(nullptr));
    std::_Exit(127);
  }
  auto third_run_checkpointed = [](const RunStore& store, std::int64_t) {
    auto runs = store.runs();
    return runs.size() == 3 && store.checkpoints(runs[2].id).size() >= 2;
  };
  const bool reached = wait_for_run(db, third_run_checkpointed);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  INFO(read_file(dir.file("killed.err")));
  REQUIRE(reached);
  {
    RunStore store(db);
    REQUIRE(store.runs().size() == 3);
    CHECK(store.run(1).status == "finished");
    CHECK(store.run(2).status == "finished");
    REQUIRE(store.run(3).status == "running");  // as the killed process left it
    CHECK(store.run(2).parent_run_id == std::optional<std::int64_t>(1));
  }
  CommandResult relisted = run_workbench(dir, {"sweep", exp, "--db", db, "--list"});
  CHECK_THAT(relisted.out, Contains("run 1 (finished)") && Contains("run 3 (crashed)"));

  // Run again: the two finished runs kept, the crashed one resumed as itself, the other five run.
  CommandResult again = run_workbench(dir, {"sweep", exp, "--db", db});
  INFO(again.err);
  REQUIRE(again.exit_code == 0);
  CHECK_THAT(again.err, Contains("2 runs kept, 5 run, 1 resumed, 0 failed"));
  RunStore store(db);
  REQUIRE(store.runs().size() == 8);
  for (const auto& r : store.runs()) {
    INFO("run " << r.id);
    CHECK(r.status == "finished");
    CHECK(store.metrics(r.id, "train/loss").size() == (r.experiment_name == "sweep-pretrain" ? 40u : 4u));
  }
  std::map<std::string, std::string> tags3;
  for (const auto& [k, v] : store.tags(3)) tags3[k] = v;
  CHECK(tags3["resumed"] == "1");
  CHECK(tags3["sweep.point"] == "trainer.warmup_steps=4");
  CHECK(tags3["sweep.seed"] == "1");

  // Features computed once per process: run 4 (point 2's fine-tuning, after resumed run 3 in the same
  // process) read the same audio and took every utterance's features from the cache.
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = 4 AND key = 'derived.data.train.features_cached'") ==
        std::optional<std::string>("6.0"));

  // The view: one run per (stage, point, seed), the fine-tuning runs children of their own point's run.
  auto sweep_runs = store.query_rows(
      "SELECT stage, point, seed, count(*) AS n, max(run_id) AS run FROM sweep_runs WHERE sweep = 'tiny-ablation' "
      "GROUP BY stage, point, seed ORDER BY run");
  REQUIRE(sweep_runs.rows.size() == 8);
  for (std::size_t i = 0; i < 8; ++i) CHECK(cell(sweep_runs, i, "n") == std::optional<std::string>("1"));
  auto pairs = store.query_rows(
      "SELECT child_id, parent_id, child_point, parent_point, seed FROM run_pairs WHERE sweep = 'tiny-ablation' "
      "ORDER BY child_id");
  REQUIRE(pairs.rows.size() == 4);
  for (std::size_t i = 0; i < 4; ++i) {
    CHECK(cell(pairs, i, "child_point") == cell(pairs, i, "parent_point"));
    CHECK(std::stoll(*cell(pairs, i, "parent_id")) + 1 == std::stoll(*cell(pairs, i, "child_id")));
  }
  // The seeds were applied: seed 2's pre-training runs record experiment.seed = 2.
  CHECK(scalar(store, "SELECT count(*) FROM sweep_runs AS s JOIN params AS p ON p.run_id = s.run_id AND "
                      "p.key = 'experiment.seed' WHERE s.seed = 2 AND p.value_num = 2") ==
        std::optional<std::string>("4"));

  // metric_final and metric_best agree with the rows themselves.
  const auto dev_cer_3 = store.metrics(3, "dev/cer");
  REQUIRE_FALSE(dev_cer_3.empty());
  double lowest = dev_cer_3[0].value;
  for (const auto& m : dev_cer_3) lowest = std::min(lowest, m.value);
  CHECK(std::stod(*scalar(store, "SELECT final_value FROM metric_final WHERE run_id = 3 AND key = 'dev/cer'")) ==
        Approx(dev_cer_3.back().value));
  CHECK(std::stod(*scalar(store, "SELECT best_value FROM metric_best WHERE run_id = 3 AND key = 'dev/cer'")) ==
        Approx(lowest));
  CHECK(scalar(store, "SELECT direction FROM metric_best WHERE run_id = 3 AND key = 'dev/cer'") ==
        std::optional<std::string>("min"));

  // A third time: everything kept, nothing run.
  CommandResult third = run_workbench(dir, {"sweep", exp, "--db", db});
  REQUIRE(third.exit_code == 0);
  CHECK_THAT(third.err, Contains("8 runs kept, 0 run, 0 resumed"));
  CHECK(RunStore(db).runs().size() == 8);

  SECTION("compare: one row per point over seeds, only the params that differ, values from the store") {
    CommandResult csv = run_workbench(dir, {"compare", "--sweep", "tiny-ablation", "--stage", "pretrain", "--metrics",
                                            "dev/cer", "train/loss", "--format", "csv", "--db", db});
    INFO(csv.err);
    REQUIRE(csv.exit_code == 0);
    auto lines = split(csv.out, '\n');
    REQUIRE(lines.size() == 3);
    CHECK(lines[0] ==
          "stage,point,n,trainer.warmup_steps,dev/cer mean,dev/cer std,train/loss mean,train/loss std");
    // Point 1 is runs 1 (seed 1) and 5 (seed 2); point 2 runs 3 and 7.
    const std::vector<std::vector<std::int64_t>> point_runs = {{1, 5}, {3, 7}};
    for (std::size_t p = 0; p < 2; ++p) {
      auto fields = split(lines[p + 1], ',');
      REQUIRE(fields.size() == 8);
      CHECK(fields[0] == "pretrain");
      CHECK(fields[2] == "2");
      CHECK(fields[3] == (p == 0 ? "2" : "4"));
      const double a = store.metrics(point_runs[p][0], "dev/cer").back().value;
      const double b = store.metrics(point_runs[p][1], "dev/cer").back().value;
      CHECK(std::stod(fields[4]) == Approx((a + b) / 2).margin(1e-4));
      CHECK(std::stod(fields[5]) == Approx(std::abs(a - b) / std::sqrt(2.0)).margin(1e-4));
      const double la = store.metrics(point_runs[p][0], "train/loss").back().value;
      const double lb = store.metrics(point_runs[p][1], "train/loss").back().value;
      CHECK(std::stod(fields[6]) == Approx((la + lb) / 2).margin(1e-4));
    }

    // --agg best: the lowest dev CER of each run (a lower-is-better metric), as metric_best has it.
    CommandResult best = run_workbench(dir, {"compare", "--sweep", "tiny-ablation", "--stage", "pretrain", "--per-run",
                                             "--metrics", "dev/cer", "--agg", "best", "--format", "json", "--db", db});
    INFO(best.err);
    REQUIRE(best.exit_code == 0);
    CHECK_THAT(best.out, StartsWith("[\n"));
    CHECK(std::count(best.out.begin(), best.out.end(), '{') == 4);
    CHECK_THAT(best.out, Contains("\"run\": 3") && Contains("\"point\": \"trainer.warmup_steps=4\"") &&
                             Contains("\"seed\": 1"));
    const std::string best3 = fmt_value(lowest);
    CHECK_THAT(best.out, Contains("\"dev/cer\": " + best3));

    // Runs by id, as a markdown table: the fine-tuning run beside its parent differs in name and more.
    CommandResult md = run_workbench(dir, {"compare", "1", "2", "--metrics", "dev/cer", "--format", "markdown",
                                           "--db", db});
    INFO(md.err);
    REQUIRE(md.exit_code == 0);
    auto md_lines = split(md.out, '\n');
    REQUIRE(md_lines.size() == 4);
    CHECK_THAT(md_lines[0], StartsWith("| run ") && Contains("| dev/cer") && Contains("trainer.steps") &&
                                Contains("experiment.name"));
    CHECK_THAT(md_lines[1], StartsWith("|---"));
    CHECK_THAT(md_lines[2], StartsWith("| 1 ") && Contains("sweep-pretrain"));
    CHECK_THAT(md_lines[3], StartsWith("| 2 ") && Contains("finetune-tone"));

    // The plain table: mean ± std (n).
    CommandResult table = run_workbench(dir, {"compare", "--sweep", "tiny-ablation", "--db", db});
    REQUIRE(table.exit_code == 0);
    CHECK_THAT(table.out, Contains("± ") && Contains("(2)") && Contains("ft") && Contains("pretrain"));
    // Both stages in one table: a key that only tells the stages apart is no column (the stage column says
    // it), one that differs between the points of a stage is.
    CHECK_THAT(table.out, !Contains("init.components"));
    CHECK_THAT(table.out, Contains("trainer.warmup_steps"));

    CommandResult unknown = run_workbench(dir, {"compare", "--sweep", "nope", "--db", db});
    CHECK(unknown.exit_code != 0);
    CHECK_THAT(unknown.err, Contains("no runs of sweep 'nope'"));
    CommandResult bad_agg = run_workbench(dir, {"compare", "1", "--agg", "median", "--db", db});
    CHECK(bad_agg.exit_code != 0);
    CHECK_THAT(bad_agg.err, Contains("median"));
  }

  SECTION("plot: SVG parses with one stroked path per run, PNG has its signature") {
    const std::string svg_path = dir.file("loss.svg");
    CommandResult svg = run_workbench(
        dir, {"plot", "1", "3", "5", "--metric", "train/loss", "--smooth", "0.5", "-o", svg_path, "--db", db});
    INFO(svg.err);
    REQUIRE(svg.exit_code == 0);
    const SvgFacts facts = parse_svg(read_file(svg_path));
    CHECK(facts.parsed);
    CHECK(facts.root == "svg");
    CHECK(curve_paths(facts) == 3);
    CommandResult two = run_workbench(
        dir, {"plot", "2", "4", "--metric", "dev/cer", "--x", "time", "-o", dir.file("cer.svg"), "--db", db});
    INFO(two.err);
    REQUIRE(two.exit_code == 0);
    CHECK(curve_paths(parse_svg(read_file(dir.file("cer.svg")))) == 2);

    const std::string png_path = dir.file("loss.png");
    CommandResult png = run_workbench(dir, {"plot", "1", "3", "--metric", "train/loss", "-o", png_path, "--db", db});
    REQUIRE(png.exit_code == 0);
    const std::string bytes = read_file(png_path);
    REQUIRE(bytes.size() > 24);
    CHECK(bytes.substr(0, 8) == std::string("\x89PNG\r\n\x1a\n", 8));
    CHECK(bytes.substr(12, 4) == "IHDR");

    CommandResult missing = run_workbench(dir, {"plot", "1", "--metric", "no/such", "-o", svg_path, "--db", db});
    CHECK(missing.exit_code != 0);
    CHECK_THAT(missing.err, Contains("no/such"));
    CommandResult bad_ext = run_workbench(dir, {"plot", "1", "--metric", "train/loss", "-o", dir.file("x.gif"), "--db", db});
    CHECK(bad_ext.exit_code != 0);
    CHECK_THAT(bad_ext.err, Contains(".gif"));
  }

  SECTION("every canned query runs on the sweep's store, with the columns and rows it should have") {
    const fs::path queries = fs::path(WORKBENCH_SOURCE_DIR) / "results" / "queries";
    std::set<std::string> seen;
    for (const auto& entry : fs::directory_iterator(queries)) {
      if (entry.path().extension() != ".sql") continue;
      const std::string name = entry.path().filename().string();
      seen.insert(name);
      INFO(name);
      QueryResult r;
      REQUIRE_NOTHROW(r = store.query_rows(read_file(entry.path())));
      REQUIRE_FALSE(r.columns.empty());
      if (name == "runs.sql") {
        REQUIRE(r.rows.size() == 8);
        CHECK(cell(r, 0, "id") == std::optional<std::string>("8"));
        CHECK(cell(r, 0, "parent") == std::optional<std::string>("7"));
        CHECK(cell(r, 0, "final_dev_cer").has_value());
      } else if (name == "metrics_of_last_run.sql") {
        CHECK(r.rows.size() == store.metrics(8).size());
        CHECK(cell(r, 0, "run_id") == std::optional<std::string>("8"));
      } else if (name == "ablation.sql") {
        CHECK(r.rows.size() == 4);  // the newest run's experiment (finetune-tone): its four finished runs
      } else if (name == "params_diff.sql") {
        // Runs 7 and 8: a pre-training run and its fine-tuning run differ in their experiment's name.
        bool name_differs = false;
        for (std::size_t i = 0; i < r.rows.size(); ++i)
          if (cell(r, i, "key") == std::optional<std::string>("experiment.name")) name_differs = true;
        CHECK(name_differs);
      } else if (name == "plugins_of_last_run.sql") {
        CHECK(r.rows.size() >= 4);  // conformer, ctc, asr, manifest
        for (std::size_t i = 0; i < r.rows.size(); ++i) CHECK(cell(r, i, "run_id") == std::optional<std::string>("8"));
      } else if (name == "pretraining.sql") {
        CHECK_FALSE(r.rows.empty());
        bool has_loss = false;
        for (std::size_t i = 0; i < r.rows.size(); ++i) has_loss |= cell(r, i, "key") == std::optional<std::string>("train/loss");
        CHECK(has_loss);
      } else if (name == "finetune.sql") {
        // Four fine-tuning runs, each from its point's pre-training run, with their dev metrics.
        std::set<std::string> runs, inits;
        for (std::size_t i = 0; i < r.rows.size(); ++i) {
          runs.insert(*cell(r, i, "run"));
          inits.insert(*cell(r, i, "init"));
        }
        CHECK(runs == std::set<std::string>{"2", "4", "6", "8"});
        CHECK(inits == std::set<std::string>{"run 1", "run 3", "run 5", "run 7"});
      } else if (name == "sweep.sql") {
        // Pre-training first, then fine-tuning; points and seeds in order; the headline metric's values.
        REQUIRE(r.rows.size() == 8);
        const std::vector<std::string> runs = {"1", "5", "3", "7", "2", "6", "4", "8"};
        for (std::size_t i = 0; i < 8; ++i) {
          CHECK(cell(r, i, "sweep") == std::optional<std::string>("tiny-ablation"));
          CHECK(cell(r, i, "run") == std::optional<std::string>(runs[i]));
          CHECK(cell(r, i, "stage") == std::optional<std::string>(i < 4 ? "pretrain" : "ft"));
          CHECK(cell(r, i, "status") == std::optional<std::string>("finished"));
          CHECK(cell(r, i, "metric") == std::optional<std::string>("dev/cer"));
          const auto cer = store.metrics(std::stoll(runs[i]), "dev/cer");
          REQUIRE_FALSE(cer.empty());
          CHECK(std::stod(*cell(r, i, "final")) == Approx(cer.back().value).margin(1e-4));
        }
      } else if (name == "confusion.sql" || name == "translation.sql" || name == "examples.sql") {
        CHECK(r.rows.empty());  // no classifier, no translation, no kept examples in this sweep
      } else {
        FAIL("a canned query this test does not know: " << name << " (add what its rows should be)");
      }
    }
    CHECK(seen.size() == 11);
  }
}

TEST_CASE("e2e: a sweep whose file changed after a run finished is refused and names the run", "[e2e][sweep]") {
  TempDir dir("wbtest_sweep_edit_");
  const std::string manifest = write_manifest(dir, 4);
  const std::string db = dir.file("runs.db");
  const std::string exp = dir.file("one.toml");
  write_file(exp, pretrain_experiment(manifest, dir.file("checkpoints"), 2) + "\n[sweep]\nname = \"one\"\n");
  CommandResult first = run_workbench(dir, {"sweep", exp, "--db", db});
  INFO(first.err);
  REQUIRE(first.exit_code == 0);
  CHECK_THAT(first.err, Contains("1 point x 1 seed x 1 stage = 1 runs"));
  write_file(exp, pretrain_experiment(manifest, dir.file("checkpoints"), 3) + "\n[sweep]\nname = \"one\"\n");
  CommandResult edited = run_workbench(dir, {"sweep", exp, "--db", db});
  CHECK(edited.exit_code != 0);
  CHECK_THAT(edited.err, Contains("finished run 1 was recorded with another configuration") &&
                             Contains("new [sweep] name"));
  CHECK(RunStore(db).runs().size() == 1);

  // Errors in the table name the file and line.
  write_file(exp, pretrain_experiment(manifest, dir.file("checkpoints"), 2) +
                      "\n[sweep]\nname = \"bad\"\n[sweep.grid]\ntrainer.lr = 0.1\n");
  CommandResult bad = run_workbench(dir, {"sweep", exp, "--db", db});
  CHECK(bad.exit_code != 0);
  CHECK_THAT(bad.err, Contains(exp + ":") && Contains("expected a non-empty list"));
}
