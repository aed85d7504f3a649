// workbench: joint speech-text pre-training experiments from TOML files, recorded in SQLite.
#include <cstdio>
#include <exception>
#include <string>

#include <CLI/CLI.hpp>

#include "commands.h"

int main(int argc, char** argv) {
  CLI::App app{"workbench: SLAM/mSLAM-style speech-text pre-training, plugins named in TOML, runs in SQLite"};
  app.require_subcommand(1);

  workbench::app::RunArgs run;
  auto* run_cmd = app.add_subcommand("run", "train an experiment and record it");
  run_cmd->add_option("experiment", run.experiment, "experiment file (.toml)")->required();
  run_cmd->add_option("--set", run.overrides, "override a config value, e.g. --set trainer.steps=100")
      ->take_all()
      ->expected(1);
  run_cmd->add_option("--db", run.db, "SQLite run store")->capture_default_str();
  run_cmd->add_flag("--dump-config", run.dump_config, "print the resolved configuration and exit");
  run_cmd->add_flag("--dry-run", run.dry_run,
                    "build the model and losses, print and record the parameter counts; no data, no training");
  std::vector<std::string> tags;
  run_cmd->add_option("--tag", tags, "tag the run in the store, key=value or a bare key")->take_all()->expected(1);
  std::int64_t parent = 0;
  auto* parent_opt = run_cmd->add_option("--parent", parent, "the run this one starts from (recorded as its parent)");
  run_cmd->add_option("--nproc", run.nproc,
                      "data-parallel training on N local ranks (gloo over lo); without it, a torchrun-style "
                      "environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) makes this process one rank")
      ->check(CLI::Range(1, 1024));
  run_cmd->add_option("--backend", run.backend, "distributed backend: auto (gloo on CPU, nccl on CUDA), gloo or nccl")
      ->check(CLI::IsMember({"auto", "gloo", "nccl"}));
  run_cmd->add_option("--gloo-interface", run.gloo_interface,
                      "network interface for Gloo (default: lo for a loopback MASTER_ADDR, else the host name's)");
  // Each rank runs this command line without --nproc.
  run.rank_argv.push_back("workbench");
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--nproc") {
      ++i;
      continue;
    }
    if (a.rfind("--nproc=", 0) == 0) continue;
    run.rank_argv.push_back(a);
  }

  workbench::app::RunArgs eval;
  std::int64_t eval_run = 0;
  auto* eval_cmd = app.add_subcommand(
      "eval", "evaluate a finished run's checkpoint with an experiment's evaluators, without training");
  eval_cmd->add_option("experiment", eval.experiment, "experiment file (.toml) whose [evaluators] to run")->required();
  eval_cmd->add_option("--from-run", eval_run, "the run whose checkpoint is evaluated (recorded as the parent)")
      ->required();
  eval_cmd->add_option("--which", eval.eval_which, "its checkpoint: final, best or last")
      ->check(CLI::IsMember({"final", "best", "last"}))
      ->capture_default_str();
  eval_cmd->add_option("--set", eval.overrides, "override a config value")->take_all()->expected(1);
  eval_cmd->add_option("--db", eval.db, "SQLite run store")->capture_default_str();
  std::vector<std::string> eval_tags;
  eval_cmd->add_option("--tag", eval_tags, "tag the eval run, key=value or a bare key")->take_all()->expected(1);

  workbench::app::RunArgs resume;
  std::int64_t resume_run = 0;
  auto* resume_cmd = app.add_subcommand(
      "resume", "continue a run that was interrupted, failed or crashed, from its newest checkpoint, as the same run");
  resume_cmd->add_option("run", resume_run, "the run's id")->required();
  resume_cmd->add_option("--db", resume.db, "SQLite run store")->capture_default_str();

  workbench::app::SweepArgs sweep;
  std::vector<std::string> sweep_tags;
  auto* sweep_cmd = app.add_subcommand(
      "sweep", "run every point, seed and stage of an experiment's [sweep] table that is not finished yet");
  sweep_cmd->add_option("experiment", sweep.file, "experiment file with a [sweep] table")->required();
  sweep_cmd->add_option("--db", sweep.db, "SQLite run store")->capture_default_str();
  sweep_cmd->add_flag("--list", sweep.list, "print each run the sweep asks for and what the store has of it");
  sweep_cmd->add_option("--tag", sweep_tags, "tag every run it starts, key=value or a bare key")->take_all()->expected(1);

  workbench::app::CompareArgs compare;
  auto* compare_cmd = app.add_subcommand(
      "compare", "the params that differ and the metrics of runs, or of a sweep's points (mean ± std over seeds)");
  compare_cmd->add_option("runs", compare.runs, "run ids (or --sweep)");
  compare_cmd->add_option("--sweep", compare.sweep, "a sweep's id: one row per (stage, point)");
  compare_cmd->add_option("--stage", compare.stage, "only this stage of the sweep");
  compare_cmd->add_option("--metrics", compare.metrics, "metric keys (default: the runs' headline metrics)")
      ->take_all()
      ->expected(1, 1 << 20);
  compare_cmd->add_option("--agg", compare.agg, "each run's value of a metric: its last, best, min or max")
      ->check(CLI::IsMember({"last", "best", "min", "max"}))
      ->capture_default_str();
  compare_cmd->add_option("--format", compare.format, "table, csv, markdown or json")
      ->check(CLI::IsMember({"table", "csv", "markdown", "json"}))
      ->capture_default_str();
  compare_cmd->add_flag("--per-run", compare.per_run, "with --sweep: one row per run instead of per point");
  compare_cmd->add_option("--db", compare.db, "SQLite run store")->capture_default_str();

  workbench::app::PlotArgs plot;
  auto* plot_cmd = app.add_subcommand("plot", "draw learning curves of runs (one line each) to SVG, PNG or PDF");
  plot_cmd->add_option("runs", plot.runs, "run ids")->required();
  plot_cmd->add_option("--metric", plot.metric, "metric key, e.g. train/loss or dev/cer")->required();
  plot_cmd->add_option("--x", plot.x, "x axis: step or time")->check(CLI::IsMember({"step", "time"}))->capture_default_str();
  plot_cmd->add_option("--smooth", plot.smooth, "exponential moving average weight in [0, 1)")->capture_default_str();
  plot_cmd->add_option("-o,--output", plot.output, "FILE.svg, FILE.png or FILE.pdf")->required();
  plot_cmd->add_option("--db", plot.db, "SQLite run store")->capture_default_str();

  std::string runs_db = "results/workbench.db";
  std::size_t runs_limit = 20;
  auto* runs_cmd = app.add_subcommand("runs", "list recent runs: id, name, kind, status, start, duration, headline");
  runs_cmd->add_option("--db", runs_db, "SQLite run store")->capture_default_str();
  runs_cmd->add_option("--limit", runs_limit, "how many")->capture_default_str();

  workbench::app::InspectArgs inspect;
  auto* inspect_cmd = app.add_subcommand("inspect-audio", "print an audio file's facts and filterbank shape");
  inspect_cmd->add_option("file", inspect.file, "audio file (any format libsndfile reads)")->required();
  inspect_cmd->add_option("--npy", inspect.npy, "write the log-mel features (T, F) as a .npy file");
  inspect_cmd->add_option("--sample-rate", inspect.sample_rate, "resample to this rate (Hz) first")
      ->capture_default_str();
  inspect_cmd->add_option("--num-mel-bins", inspect.num_mel_bins, "mel channels")->capture_default_str();

  std::string describe;
  std::vector<std::string> plugin_dirs;
  auto* plugins_cmd = app.add_subcommand("plugins", "list the plugins found (kind, name, version, path)");
  plugins_cmd->add_option("--describe", describe, "show one plugin's options");
  plugins_cmd->add_option("--path", plugin_dirs, "extra plugin directory")->expected(1)->take_all();

  std::string new_kind, new_name, new_dir;
  auto* new_cmd = app.add_subcommand("new-plugin", "write a small out-of-tree plugin project to start from");
  new_cmd->add_option("kind", new_kind, "plugin kind: loss, encoder, text_embedding, dataset or evaluator")->required();
  new_cmd->add_option("name", new_name, "plugin name")->required();
  new_cmd->add_option("--dir", new_dir, "where to write it (default: ./NAME)");

  CLI11_PARSE(app, argc, argv);
  auto parse_tags = [](const std::vector<std::string>& given, workbench::app::RunArgs& into) {
    for (const auto& t : given) {
      const auto eq = t.find('=');
      if (eq == 0 || t.empty()) {
        std::fprintf(stderr, "error: --tag %s: expected key=value or a bare key, and the key must not be empty\n",
                     t.c_str());
        return false;
      }
      into.tags.emplace_back(t.substr(0, eq), eq == std::string::npos ? "" : t.substr(eq + 1));
    }
    return true;
  };
  workbench::app::RunArgs sweep_tag_holder;
  if (!parse_tags(tags, run) || !parse_tags(eval_tags, eval) || !parse_tags(sweep_tags, sweep_tag_holder)) return 2;
  sweep.tags = sweep_tag_holder.tags;
  if (*parent_opt) run.parent = parent;
  eval.eval_from_run = eval_run;
  try {
    if (*run_cmd) return workbench::app::run_command(run);
    if (*eval_cmd) return workbench::app::run_command(eval);
    if (*resume_cmd) {
      resume.resume_run = resume_run;
      return workbench::app::run_command(resume);
    }
    if (*plot_cmd) return workbench::app::plot_command(plot);
    if (*sweep_cmd) return workbench::app::sweep_command(sweep);
    if (*compare_cmd) return workbench::app::compare_command(compare);
    if (*runs_cmd) return workbench::app::runs_command(runs_db, runs_limit);
    if (*inspect_cmd) return workbench::app::inspect_audio_command(inspect);
    if (*plugins_cmd) return workbench::app::plugins_command(describe, plugin_dirs);
    if (*new_cmd) return workbench::app::new_plugin_command(new_kind, new_name, new_dir);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
