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
};
/// `workbench run` and `workbench eval`. Returns the process exit code: 0 finished, 1 failed, 130
/// interrupted.
int run_command(const RunArgs& args);

/// `workbench run --nproc N`: starts `rank_argv` N times with the torchrun environment (RANK, WORLD_SIZE,
/// LOCAL_RANK, MASTER_ADDR = 127.0.0.1, a free MASTER_PORT), forwards Ctrl-C, and stops the others when
/// one fails. Returns the first failing rank's exit code (128 + signal), 130 after Ctrl-C, else 0.
int launch_local_ranks(int nproc, const std::vector<std::string>& rank_argv);

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
