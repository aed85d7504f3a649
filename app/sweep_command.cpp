// `workbench sweep`: every point, seed and stage of a [sweep] table, run in order in this process through
// run_command (so each is an ordinary run, recorded as one), tagged in the run store with
//   sweep = <id>, sweep.point = <label>, sweep.seed = <seed>, sweep.stage = <stage>.
// Those tags are how a sweep run again knows what is done: a finished run of a (point, seed, stage) is
// kept; an interrupted, failed or crashed one resumes from its newest checkpoint as the same run, or,
// without one, is run anew (the old run stays on record, tagged sweep.superseded_by). So a killed sweep,
// run again, finishes without duplicating or losing a run.
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "run_adapters.h"
#include "sweep_plan.h"
#include "workbench/error.h"
#include "workbench/run_store.h"

namespace workbench::app {

namespace {

using results::RunStore;

struct Existing {
  std::int64_t id = 0;
  std::string status;  ///< "crashed" for a run left running by a process that is gone
  std::string config_hash;
  std::string pid;
};

// The newest run of this sweep's (stage, point, seed), if any.
std::optional<Existing> find_run(const RunStore& store, const std::string& sweep, const std::string& stage,
                                 const std::string& point, std::int64_t seed) {
  const std::string sql = fmt::format(
      "SELECT r.id, r.status, r.config_hash, r.pid FROM runs AS r "
      "JOIN tags AS a ON a.run_id = r.id AND a.key = 'sweep' AND a.value = {} "
      "JOIN tags AS b ON b.run_id = r.id AND b.key = 'sweep.stage' AND b.value = {} "
      "JOIN tags AS c ON c.run_id = r.id AND c.key = 'sweep.point' AND c.value = {} "
      "JOIN tags AS d ON d.run_id = r.id AND d.key = 'sweep.seed' AND d.value = {} "
      "ORDER BY r.id DESC LIMIT 1",
      sql_literal(sweep), sql_literal(stage), sql_literal(point), sql_literal(std::to_string(seed)));
  auto rows = store.query_rows(sql).rows;
  if (rows.empty()) return std::nullopt;
  Existing e;
  e.id = std::stoll(rows[0][0].value_or("0"));
  e.status = rows[0][1].value_or("");
  e.config_hash = rows[0][2].value_or("");
  e.pid = rows[0][3].value_or("");
  if (e.status == "running")
    for (const auto& r : store.recent_runs(1u << 30))
      if (r.id == e.id && run_process_gone(r)) e.status = "crashed";
  return e;
}

}  // namespace

int sweep_command(const SweepArgs& args) {
  const SweepPlan plan = read_sweep_plan(args.file);
  const std::size_t total = plan.points.size() * plan.seeds.size() * plan.stages.size();
  std::fprintf(stderr, "sweep %s: %zu point%s x %zu seed%s x %zu stage%s = %zu runs (%s)\n", plan.id.c_str(),
               plan.points.size(), plan.points.size() == 1 ? "" : "s", plan.seeds.size(),
               plan.seeds.size() == 1 ? "" : "s", plan.stages.size(), plan.stages.size() == 1 ? "" : "s", total,
               args.db.c_str());
  if (args.list) {
    const RunStore store(args.db);
    for (auto seed : plan.seeds)
      for (const auto& point : plan.points)
        for (const auto& stage : plan.stages) {
          auto e = find_run(store, plan.id, stage.name, point.label, seed);
          std::printf("%-10s seed %-4lld %-40s %s\n", stage.name.c_str(), static_cast<long long>(seed),
                      point.label.c_str(),
                      e ? fmt::format("run {} ({})", e->id, e->status).c_str() : "to run");
        }
    return 0;
  }

  std::size_t kept = 0, ran = 0, resumed = 0, failed = 0, busy = 0;
  // Seeds outermost: a sweep stopped part way has every point at least once.
  for (auto seed : plan.seeds) {
    for (const auto& point : plan.points) {
      std::map<std::string, std::int64_t> ids;  // this point and seed's run of each stage so far
      for (std::size_t s = 0; s < plan.stages.size(); ++s) {
        const SweepStage& stage = plan.stages[s];
        std::vector<std::string> overrides = s == 0 ? point.overrides : substitute_runs(stage.overrides, ids);
        overrides.push_back("experiment.seed=" + std::to_string(seed));
        const std::vector<std::pair<std::string, std::string>> tags = {{"sweep", plan.id},
                                                                      {"sweep.stage", stage.name},
                                                                      {"sweep.point", point.label},
                                                                      {"sweep.seed", std::to_string(seed)}};
        const std::string what = fmt::format("{} / seed {} / {}", point.label, seed, stage.name);
        std::optional<Existing> existing;
        {
          const RunStore store(args.db);
          existing = find_run(store, plan.id, stage.name, point.label, seed);
        }
        if (existing && existing->status == "finished") {
          // Kept only if it is the run this file asks for now: an edited sweep is a new sweep.
          const std::string hash = resolved_config_hash(stage.experiment, overrides);
          if (hash != existing->config_hash)
            throw ConfigError(fmt::format("sweep {}: {}: finished run {} was recorded with another configuration "
                                          "(the sweep's files changed since); give the sweep a new [sweep] name, "
                                          "or delete run {}",
                                          plan.id, what, existing->id, existing->id));
          std::fprintf(stderr, "sweep %s: %s: run %lld finished; kept\n", plan.id.c_str(), what.c_str(),
                       static_cast<long long>(existing->id));
          ids[stage.name] = existing->id;
          ++kept;
          continue;
        }
        if (existing && existing->status == "running") {
          std::fprintf(stderr, "sweep %s: %s: run %lld is running in another process (pid %s); left to it\n",
                       plan.id.c_str(), what.c_str(), static_cast<long long>(existing->id), existing->pid.c_str());
          ++busy;
          break;
        }
        int rc = -1;
        std::int64_t id = 0;
        if (existing) {
          RunArgs resume;
          resume.db = args.db;
          resume.resume_run = existing->id;
          try {
            std::fprintf(stderr, "sweep %s: %s: run %lld %s; resuming it\n", plan.id.c_str(), what.c_str(),
                         static_cast<long long>(existing->id), existing->status.c_str());
            rc = run_command(resume);
            id = existing->id;
            ++resumed;
          } catch (const ConfigError& e) {
            // No checkpoint to resume from: the point starts again, as a new run.
            std::fprintf(stderr, "sweep %s: %s: %s; running it again\n", plan.id.c_str(), what.c_str(), e.what());
          }
        }
        if (rc < 0) {
          RunArgs run;
          run.experiment = stage.experiment;
          run.overrides = overrides;
          run.db = args.db;
          run.tags = tags;
          run.tags.insert(run.tags.end(), args.tags.begin(), args.tags.end());
          std::fprintf(stderr, "sweep %s: %s: starting\n", plan.id.c_str(), what.c_str());
          rc = run_command(run);
          RunStore store(args.db);
          auto made = find_run(store, plan.id, stage.name, point.label, seed);
          id = made ? made->id : 0;
          if (existing && id != existing->id) store.add_tags(existing->id, {{"sweep.superseded_by", std::to_string(id)}});
          ++ran;
        }
        if (rc == 130) {
          std::fprintf(stderr, "sweep %s interrupted at %s; run it again to go on from there\n", plan.id.c_str(),
                       what.c_str());
          return 130;
        }
        if (rc != 0) {
          ++failed;
          std::fprintf(stderr, "sweep %s: %s: run %lld failed; the point's later stages are skipped\n",
                       plan.id.c_str(), what.c_str(), static_cast<long long>(id));
          break;
        }
        ids[stage.name] = id;
      }
    }
  }
  std::fprintf(stderr,
               "sweep %s: %zu runs kept, %zu run, %zu resumed, %zu failed, %zu running elsewhere\n"
               "  workbench compare --sweep %s --db %s\n",
               plan.id.c_str(), kept, ran, resumed, failed, busy, plan.id.c_str(), args.db.c_str());
  return failed || busy ? 1 : 0;
}

}  // namespace workbench::app
