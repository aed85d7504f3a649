#pragma once
// A sweep: the [sweep] table of an experiment file, expanded into the runs it asks for.
//
//   [sweep]
//   name = "tlm-ctc"                 # the sweep's id in the run store (default: the experiment's name)
//   seeds = [1, 2, 3]                # experiment.seed of each repeat (default: the file's own seed)
//   stage = "pretrain"               # this file's stage name, for ${pretrain} below (default "main")
//
//   [sweep.grid]                     # every combination of these values, keys as --set takes them
//   objectives.tlm.weight = [0.0, 0.3]
//   objectives.ctc.weight = [0.0, 0.3]
//
//   [[sweep.point]]                  # named variants, each crossed with the grid
//   name = "speech_only"
//   objectives.tlm.weight = 0.0
//
//   [[sweep.then]]                   # a later stage of every point and seed, in order
//   name = "asr"
//   experiment = "finetune/asr_ctc.toml"   # relative to this file
//   init.from_run = "${pretrain}"         # the run id of this point and seed's "pretrain" stage
//   trainer.steps = 200
//
// With neither grid nor points the sweep has one point, the file as it is (its seeds are still repeats).
// The grid and the points change the file's own stage; a later stage gets its own keys and the seed.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace workbench::app {

/// One stage of every point: an experiment file and its overrides ("key=<TOML value>"), in which
/// "${stage}" stands for the run id of an earlier stage of the same point and seed.
struct SweepStage {
  std::string name;
  std::string experiment;
  std::vector<std::string> overrides;
};

/// One point: its label in the run store (the point's name, then the grid's key=value pairs) and the
/// overrides of the file's own stage.
struct SweepPoint {
  std::string label;
  std::vector<std::string> overrides;
};

struct SweepPlan {
  std::string id;
  std::string file;
  std::vector<std::int64_t> seeds;
  std::vector<SweepPoint> points;
  /// stages[0] is the file itself; the rest are [[sweep.then]] in order.
  std::vector<SweepStage> stages;
};

/// Reads the [sweep] table of `path`. Throws ConfigError with file:line for a file without one, an
/// unknown key, a grid value that is not a non-empty list, a point without keys, a stage without
/// experiment, a duplicate stage name, or a ${name} that names no earlier stage.
SweepPlan read_sweep_plan(const std::string& path);

/// `overrides` with every ${stage} replaced by its run id: a whole string "${pretrain}" becomes the bare
/// integer (init.from_run = 12), one inside a longer string the digits. Throws ConfigError for a name
/// missing from `run_ids`.
std::vector<std::string> substitute_runs(const std::vector<std::string>& overrides,
                                         const std::map<std::string, std::int64_t>& run_ids);

}  // namespace workbench::app
