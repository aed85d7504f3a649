#pragma once
// The subcommands of the `workbench` executable.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace workbench::app {

struct RunArgs {
  std::string experiment;
  std::vector<std::string> overrides;  ///< --set key=value
  std::string db = "results/workbench.db";
  bool dump_config = false;
  /// Build the model and losses, print and record the parameter counts, train nothing, load no data.
  bool dry_run = false;
  /// --tag key=value (or a bare key): stored in the run store's tags table.
  std::vector<std::pair<std::string, std::string>> tags;
  /// --parent ID: the run this one continues or fine-tunes (also found from [init] from_run or from the
  /// run that wrote [init] checkpoint).
  std::optional<std::int64_t> parent;
  /// `workbench eval --from-run ID`: load every component of run ID's checkpoint, run the evaluators once,
  /// train nothing; recorded as a run of kind "eval" whose parent is ID.
  std::optional<std::int64_t> eval_from_run;
  std::string eval_which = "final";  ///< --which: final, best or last
  /// --nproc N: start N local ranks of this command (data-parallel training) and wait for them.
  int nproc = 0;
  /// The command line each rank runs: this one without --nproc.
  std::vector<std::string> rank_argv;
  /// --backend and --gloo-interface: override WORKBENCH_DIST_BACKEND and GLOO_SOCKET_IFNAME.
  std::string backend, gloo_interface;
  /// `workbench resume ID`: continue run ID of `db` from its newest checkpoint, with the config it
  /// recorded (experiment and overrides are not read), as the same run.
  std::optional<std::int64_t> resume_run;
};
/// `workbench run`, `workbench eval` and `workbench resume`. Returns the process exit code: 0 finished, 1
/// failed, 130 interrupted.
int run_command(const RunArgs& args);

/// `workbench run --nproc N`: starts `rank_argv` N times with the torchrun environment (RANK, WORLD_SIZE,
/// LOCAL_RANK, MASTER_ADDR = 127.0.0.1, a free MASTER_PORT), forwards Ctrl-C, and stops the others when
/// one fails. Returns the first failing rank's exit code (128 + signal), 130 after Ctrl-C, else 0.
int launch_local_ranks(int nproc, const std::vector<std::string>& rank_argv);

/// The sha256 of the configuration `experiment` with `overrides` resolves to: the runs table's config_hash of
/// a run of it. Throws ConfigError as `workbench run` would.
std::string resolved_config_hash(const std::string& experiment, const std::vector<std::string>& overrides);

struct SweepArgs {
  std::string file;
  std::string db = "results/workbench.db";
  /// --list: print every (stage, seed, point) and its run, run nothing.
  bool list = false;
  /// --tag: added to every run the sweep starts.
  std::vector<std::pair<std::string, std::string>> tags;
};
/// `workbench sweep EXP.toml` (app/sweep_plan.h): runs what is not finished yet. Returns 0 when every run
/// finished, 1 when one failed (its point's later stages are skipped, the other points still run), 130
/// when interrupted.
int sweep_command(const SweepArgs& args);

struct CompareArgs {
  std::string db = "results/workbench.db";
  std::string sweep;                 ///< --sweep ID: its runs, one row per (stage, point) over seeds
  std::string stage;                 ///< --stage NAME: only that stage of the sweep
  std::vector<std::int64_t> runs;    ///< RUN...: one row per run
  std::vector<std::string> metrics;  ///< --metrics: default, the runs' headline metrics
  std::string agg = "last";          ///< last, best, min or max
  std::string format = "table";      ///< table, csv, markdown or json
  bool per_run = false;              ///< --per-run: a sweep's runs one by one, not over seeds
};
/// `workbench compare`: the params that differ between the runs and the chosen metrics, per run or as
/// mean +- std over a sweep point's seeds. Throws ConfigError for no runs, an unknown run or sweep.
int compare_command(const CompareArgs& args);

struct PlotArgs {
  std::string db = "results/workbench.db";
  std::vector<std::int64_t> runs;
  std::string metric;         ///< --metric KEY
  std::string x = "step";     ///< step, or time (minutes since the run's first value)
  double smooth = 0;          ///< exponential moving average weight in [0, 1); 0 = none
  std::string output;         ///< -o FILE.svg|png|pdf
};
/// `workbench plot`: one line per run of `metric` against step or time, with labelled axes and a legend,
/// drawn with cairo. Throws ConfigError for an unknown run, a metric a run lacks, a bad extension.
int plot_command(const PlotArgs& args);

/// `workbench runs [--db D] [--limit N]`: recent runs, newest first, with their headline metric.
int runs_command(const std::string& db, std::size_t limit);

struct InspectArgs {
  std::string file;
  std::string npy;
  long sample_rate = 16000;
  long num_mel_bins = 80;
};
int inspect_audio_command(const InspectArgs& args);

/// `workbench plugins [--describe NAME]`.
int plugins_command(const std::string& describe, const std::vector<std::string>& extra_dirs);

/// `workbench new-plugin KIND NAME [--dir D]`: a buildable out-of-tree plugin project.
int new_plugin_command(const std::string& kind, const std::string& name, const std::string& dir);

}  // namespace workbench::app
