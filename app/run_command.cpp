// `workbench run`: the runner's phases, with plugins from the registry and every fact recorded in the run
// store, and the outcome (finished, failed or interrupted) recorded whatever happens.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <optional>
#include <sstream>

#include <fmt/format.h>

#include "commands.h"
#include "run_adapters.h"
#include "workbench/distributed.h"
#include "workbench/error.h"
#include "workbench/experiment.h"
#include "workbench/runner.h"
#include "workbench/runtime.h"
#include "workbench/sha256.h"

namespace workbench::app {

namespace fs = std::filesystem;
using results::RunStatus;
using results::RunStore;

namespace {

std::string raw_file_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Run ids are per database, so two databases would share run-<id>: claim a folder no other run has, by
// creating it (create_directory is atomic: of two runs racing for one name, one gets it).
std::string checkpoint_folder(const std::string& root, std::int64_t run) {
  fs::create_directories(root);
  fs::path dir = fs::path(root) / fmt::format("run-{}", run);
  for (int n = 2; !fs::create_directory(dir); ++n) dir = fs::path(root) / fmt::format("run-{}-{}", run, n);
  return dir.string();
}

// The run that wrote `checkpoint`, when this store recorded it.
std::optional<std::int64_t> run_of_checkpoint(const RunStore& store, const std::string& checkpoint) {
  const std::string absolute = fs::absolute(checkpoint).lexically_normal().string();
  auto rows = store.query_rows("SELECT run_id FROM checkpoints WHERE path IN (" + sql_literal(checkpoint) + ", " +
                               sql_literal(absolute) + ") ORDER BY run_id DESC LIMIT 1").rows;
  if (rows.empty() || !rows[0][0]) return std::nullopt;
  return std::stoll(*rows[0][0]);
}

// [init] from_run: the path of run `id`'s checkpoint of kind `which` ("last": its newest of any kind).
// Throws ConfigError naming the run and what it does have.
std::string checkpoint_of_run(const RunStore& store, std::int64_t id, const std::string& which,
                              const std::string& db) {
  const std::string sid = std::to_string(id);
  auto status = store.query_rows("SELECT status FROM runs WHERE id = " + sid).rows;
  if (status.empty()) throw ConfigError(fmt::format("[init] from_run = {}: there is no run {} in {}", id, id, db));
  const std::string where = which == "last" ? "" : " AND kind = '" + which + "'";
  auto rows = store.query_rows("SELECT path FROM checkpoints WHERE run_id = " + sid + where +
                               " ORDER BY step DESC, created_at DESC LIMIT 1").rows;
  if (rows.empty() || !rows[0][0]) {
    auto have = store.query_rows("SELECT kind || ' (step ' || step || ')' FROM checkpoints WHERE run_id = " + sid +
                                 " ORDER BY step").rows;
    std::string list;
    for (const auto& r : have) list += (list.empty() ? "" : ", ") + r[0].value_or("");
    throw ConfigError(fmt::format("[init] from_run = {}: run {} ({}) has no {} checkpoint{}", id, id,
                                  status[0][0].value_or("?"), which == "last" ? "" : which,
                                  list.empty() ? "" : "; it has: " + list + " (set [init] which)"));
  }
  const std::string path = *rows[0][0];
  if (!fs::exists(path))
    throw DataError(fmt::format("[init] from_run = {}: its {} checkpoint {} is no longer on disk", id, which, path));
  return path;
}

// What `workbench resume` continues: the run's row and the newest of its checkpoints that is still on
// disk and intact (a crash can leave the store naming a file it did not finish; the trainer's atomic
// rename means that is only ever a missing file, but a copied or damaged one is checked by its sha256).
struct ResumePoint {
  results::RunRow row;
  std::string experiment_path;
  results::CheckpointRecord checkpoint;
};

ResumePoint find_resume_point(const RunStore& store, std::int64_t id, const std::string& db) {
  ResumePoint p;
  try {
    p.row = store.run(id);
  } catch (const results::StoreError&) {
    throw ConfigError(fmt::format("workbench resume {}: there is no run {} in {}", id, id, db));
  }
  if (p.row.kind != "train")
    throw ConfigError(fmt::format("workbench resume {}: run {} is a {} run; only training runs resume", id, id,
                                  p.row.kind));
  if (p.row.status == "finished")
    throw ConfigError(fmt::format("workbench resume {}: run {} finished; there is nothing left to train", id, id));
  if (p.row.status == "running") {
    bool gone = false;
    for (const auto& r : store.recent_runs(1u << 30))
      if (r.id == id) gone = run_process_gone(r);
    if (!gone)
      throw ConfigError(fmt::format("workbench resume {}: run {} is still running (or runs on another host, or "
                                    "was recorded without its process); stop it first",
                                    id, id));
  }
  auto path = store.query_rows("SELECT experiment_path FROM runs WHERE id = " + std::to_string(id)).rows;
  p.experiment_path = path.empty() ? "" : path[0][0].value_or("");
  auto checkpoints = store.checkpoints(id);
  std::stable_sort(checkpoints.begin(), checkpoints.end(),
                   [](const auto& a, const auto& b) { return a.step > b.step; });
  std::string passed;
  for (const auto& c : checkpoints) {
    if (c.kind == "final") continue;
    std::string why;
    if (!fs::exists(c.path))
      why = "no longer on disk";
    else if (sha256_file(c.path) != c.sha256)
      why = "its bytes do not match the sha256 recorded when it was written";
    if (why.empty()) {
      p.checkpoint = c;
      return p;
    }
    std::fprintf(stderr, "  WARNING: checkpoint %s (step %lld) of run %lld is %s; trying an older one\n",
                 c.path.c_str(), static_cast<long long>(c.step), static_cast<long long>(id), why.c_str());
    passed += fmt::format("{}{} ({})", passed.empty() ? "" : ", ", c.path, why);
  }
  throw ConfigError(fmt::format("workbench resume {}: run {} ({}) has no checkpoint to resume from{}{}", id, id,
                                p.row.status, passed.empty() ? "" : ": ", passed.empty() ? " (set trainer.checkpoint_every)" : passed));
}

// Rank 0's error, led by the failure another rank reported: when rank 1 dies, rank 0 only sees its
// all-reduce lose a peer, and the cause is what rank 1 (or the launcher) left in the store.
std::string with_peer_failure(const std::shared_ptr<DataParallel>& group, const std::string& own) {
  if (!group) return own;
  if (auto peer = group->peer_failure(std::chrono::seconds(5)))
    return fmt::format("{} (rank 0 stopped with: {})", *peer, own);
  return own;
}

int fail(RunStore& store, std::int64_t run, const std::string& message, const std::string& db) {
  store.finish_run(run, RunStatus::Failed, message);
  std::fprintf(stderr, "\nerror: %s\n(recorded as failed run %lld in %s)\n", message.c_str(),
               static_cast<long long>(run), db.c_str());
  return 1;
}

// Ranks other than 0 write nothing: rank 0 records the run.
class NullRecorder final : public RunRecorder {
 public:
  void record(std::int64_t, const Metrics&) override {}
  void record_params(const std::vector<std::pair<std::string, OptionValue>>&) override {}
  void record_checkpoint(const CheckpointInfo&) override {}
  void remove_checkpoint(const std::string&) override {}
};

// Runs `body` (which records the run's end itself when it succeeds) and records how else it ended:
// interrupted (130) or failed (1), with the message, after `cleanup`.
int with_outcome(RunStore& store, std::int64_t run, const std::string& db, const std::shared_ptr<DataParallel>& group,
                 const std::function<void()>& cleanup, const std::function<int()>& body) {
  try {
    return body();
  } catch (const Interrupted& e) {
    cleanup();
    store.finish_run(run, RunStatus::Interrupted, e.what());
    std::fprintf(stderr, "\nrun %lld interrupted (recorded in %s)\n", static_cast<long long>(run), db.c_str());
    return 130;
  } catch (const c10::Error& e) {
    cleanup();
    return fail(store, run, with_peer_failure(group, e.what_without_backtrace()), db);
  } catch (const std::exception& e) {
    cleanup();
    return fail(store, run, with_peer_failure(group, e.what()), db);
  }
}

void print_finished(const TrainResult& result, std::int64_t run, const std::string& ckpt_dir, const std::string& db,
                    double total_s) {
  std::fprintf(stderr, "run %lld finished: %lld steps, %.1f s training, %.1f s in all; checkpoint %s/final.pt\n",
               static_cast<long long>(run), static_cast<long long>(result.steps), result.train_seconds, total_s,
               ckpt_dir.c_str());
  for (const auto& [k, v] : result.final_metrics)
    if (is_summary_metric(k)) std::fprintf(stderr, "  %-32s %.4f\n", k.c_str(), v);
  std::fprintf(stderr, "  sqlite3 %s \"SELECT key, step, value FROM metrics WHERE run_id = %lld\"\n", db.c_str(),
               static_cast<long long>(run));
}

// `workbench resume`: the same run, continued in its checkpoint folder from `p.checkpoint`. What the run
// had ended with is kept in its tags (resume.<n>), since reopening it clears its error message.
int resume_recorded_run(RunStore& store, const ResumePoint& p, Runner& runner, const Registry& registry,
                        const std::string& db, results::RunInfo info) {
  const auto t_start = std::chrono::steady_clock::now();
  const std::int64_t run = p.row.id;
  const ExperimentConfig& cfg = runner.config();
  describe_config(info, cfg);
  if (info.config_hash != p.row.config_hash)
    std::fprintf(stderr,
                 "  WARNING: run %lld's config resolves differently with this build (a plugin's new option or "
                 "default?); it continues with what it recorded\n",
                 static_cast<long long>(run));
  int resumes = 0;
  for (const auto& [k, v] : store.tags(run))
    if (k == "resumed") resumes = std::stoi(v);
  store.reopen_run(run, info.pid, info.process_start);
  store.add_tags(run, {{"resumed", std::to_string(resumes + 1)},
                       {fmt::format("resume.{}", resumes + 1),
                        fmt::format("at step {} from {}; it had ended {}{}{}", p.checkpoint.step, p.checkpoint.path,
                                    p.row.status, p.row.error_message.empty() ? "" : ": ", p.row.error_message)}});
  const std::string ckpt_dir = fs::path(p.checkpoint.path).parent_path().string();
  std::fprintf(stderr, "workbench resume %lld: %s at step %lld (%s)\n", static_cast<long long>(run), cfg.name.c_str(),
               static_cast<long long>(p.checkpoint.step), p.checkpoint.path.c_str());
  return with_outcome(store, run, db, nullptr, [] {}, [&] {
    runner.configure_runtime();
    StoreRecorder recorder(store, run);
    record_plugins(store, run, registry, runner);
    TrainResult result = runner.run(recorder, ckpt_dir);
    store.finish_run(run, RunStatus::Finished);
    print_finished(result, run, ckpt_dir, db,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
    return 0;
  });
}

// Rank r > 0 of a data-parallel run: the same runner, quiet, with no run store writes and no checkpoints.
// What goes wrong is left in the group's store for rank 0 to record.
int run_worker_rank(const RunArgs& args, const DistributedOptions& dist) {
  std::shared_ptr<DataParallel> group;
  auto failed = [&](const std::string& message) {
    if (group)
      group->report_failure(message);
    else
      DataParallel::report_failure_for(dist, dist.rank(), message);
    std::fprintf(stderr, "rank %d: error: %s\n", dist.rank(), message.c_str());
    return 1;
  };
  try {
    Registry registry;
    RegistryFactory factory(registry);
    std::vector<std::string> overrides = args.overrides;
    overrides.push_back("trainer.progress=\"none\"");
    Runner runner(factory, RunnerOptions().overrides(overrides).verbose(false));
    ExperimentFile file = ExperimentFile::parse(args.experiment, overrides);
    for (const auto& d : Registry::default_search_paths()) registry.load_directory(d);
    for (const auto& d : file.plugin_paths()) registry.load_directory(d);
    runner.resolve(file);
    if (runner.config().init.from_run() > 0) {
      // Read only: rank 0 owns the store. The weights come from rank 0 anyway; the vocabulary may not.
      const RunStore store(args.db);
      ExperimentConfig cfg = runner.config();
      cfg.init.checkpoint(checkpoint_of_run(store, cfg.init.from_run(), cfg.init.which(), args.db));
      runner.adopt(std::move(cfg));
    }
    runner.configure_runtime();
    group = std::make_shared<DataParallel>(dist, runner.runtime().device);
    runner.join(group);
    NullRecorder recorder;
    runner.run(recorder, "");
    return 0;
  } catch (const Interrupted&) {
    return 130;
  } catch (const c10::Error& e) {
    return failed(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return failed(e.what());
  }
}

}  // namespace

std::string resolved_config_hash(const std::string& experiment, const std::vector<std::string>& overrides) {
  Registry registry;
  RegistryFactory factory(registry);
  Runner runner(factory, RunnerOptions().overrides(overrides).verbose(false));
  ExperimentFile file = ExperimentFile::parse(experiment, overrides);
  for (const auto& d : Registry::default_search_paths()) registry.load_directory(d);
  for (const auto& d : file.plugin_paths()) registry.load_directory(d);
  runner.resolve(file);
  return sha256_text(runner.config().resolved_toml);
}

int run_command(const RunArgs& args) {
  std::optional<ResumePoint> resume;
  if (args.resume_run) {
    if (DistributedOptions::from_environment().world_size() > 1)
      throw ConfigError("workbench resume continues a run in one process; it does not run as a rank");
    const RunStore store(args.db);
    resume = find_resume_point(store, *args.resume_run, args.db);
  }
  if (args.nproc > 0) {
    if (args.dump_config || args.dry_run || args.eval_from_run)
      throw ConfigError("--nproc starts training ranks; it does not combine with --dump-config or --dry-run");
    return launch_local_ranks(args.nproc, args.rank_argv);
  }
  install_interrupt_handler();
  const auto t_start = std::chrono::steady_clock::now();
  // torchrun's environment (or --nproc's) makes this process one rank of a data-parallel run.
  DistributedOptions dist = args.eval_from_run || args.dry_run || args.dump_config ? DistributedOptions()
                                                                                    : DistributedOptions::from_environment();
  if (!args.backend.empty()) dist.backend(args.backend);
  if (!args.gloo_interface.empty()) dist.interface(args.gloo_interface);
  if (dist.world_size() > 1 && dist.rank() > 0) return run_worker_rank(args, dist);
  std::shared_ptr<DataParallel> group;

  // Resolve the configuration first: --dump-config must not touch the database.
  Registry registry;
  RegistryFactory factory(registry);
  std::vector<std::string> overrides = args.overrides;
  if (args.eval_from_run) {
    // Evaluation loads everything the run trained, heads included, with its vocabulary.
    overrides.push_back("init.checkpoint=\"\"");
    overrides.push_back("init.from_run=" + std::to_string(*args.eval_from_run));
    overrides.push_back("init.which=\"" + args.eval_which + "\"");
    overrides.push_back("init.components=[\"all\"]");
    // Nothing is trained, so no best checkpoint is kept: the experiment's keep_best may name data that this
    // evaluation does not read (the dev split, when its evaluator is pointed at test).
    overrides.push_back("trainer.keep_best=\"\"");
  }
  Runner runner(factory, RunnerOptions()
                             .overrides(overrides)
                             .dry_run(args.dry_run)
                             .evaluate_only(args.eval_from_run.has_value())
                             .resume_from(resume ? resume->checkpoint.path : ""));
  std::string config_error;
  try {
    // A resumed run is built from the config it recorded, which resolves to itself.
    ExperimentFile file = resume ? ExperimentFile::parse_text(resume->row.config_toml, resume->experiment_path)
                                 : ExperimentFile::parse(args.experiment, overrides);
    for (const auto& d : Registry::default_search_paths()) registry.load_directory(d);
    for (const auto& d : file.plugin_paths()) registry.load_directory(d);
    runner.resolve(file);
  } catch (const Error& e) {
    if (args.dump_config) throw;
    config_error = e.what();
  }
  if (args.dump_config) {
    std::fputs(runner.config().resolved_toml.c_str(), stdout);
    return 0;
  }

  RunStore store(args.db);
  results::RunInfo info = base_run_info(args.experiment);
  info.kind = args.dry_run ? "dry-run" : args.eval_from_run ? "eval" : "train";
  info.tags = args.tags;
  if (resume) {
    if (!config_error.empty()) throw ConfigError(fmt::format("run {}'s recorded config: {}", *args.resume_run, config_error));
    return resume_recorded_run(store, *resume, runner, registry, args.db, info);
  }
  // [init] from_run names a run of this store: find its checkpoint before anything else needs it.
  if (config_error.empty() && runner.config().init.from_run() > 0) {
    try {
      ExperimentConfig cfg = runner.config();
      cfg.init.checkpoint(
          checkpoint_of_run(store, cfg.init.from_run(), cfg.init.which(), args.db));
      runner.adopt(std::move(cfg));
    } catch (const Error& e) {
      config_error = e.what();
    }
  }
  if (!config_error.empty()) {
    // Nothing is lost: even a run whose file does not parse is recorded, with the text it had.
    info.experiment_name = fs::path(args.experiment).stem().string();
    info.config_toml = raw_file_text(args.experiment);
    info.device = "none";
    const auto run = store.begin_run(info);
    return fail(store, run, config_error, args.db);
  }
  const ExperimentConfig& cfg = runner.config();
  describe_config(info, cfg);
  // A run that starts from another's weights is its child.
  info.parent_run = args.parent;
  if (!info.parent_run && cfg.init.from_run() > 0) info.parent_run = cfg.init.from_run();
  if (!info.parent_run && !cfg.init.checkpoint().empty())
    info.parent_run = run_of_checkpoint(store, cfg.init.checkpoint());

  std::string device_error;
  try {
    runner.configure_runtime();
  } catch (const Error& e) {
    device_error = e.what();
  }
  info.device = device_error.empty() ? runner.runtime().device.str() : cfg.trainer.device() + " (unavailable)";
  const std::int64_t run = store.begin_run(info);
  if (!device_error.empty()) return fail(store, run, device_error, args.db);
  const RuntimeInfo& rt = runner.runtime();

  std::fprintf(stderr, "workbench run %lld: %s (%s)\n", static_cast<long long>(run), cfg.name.c_str(),
               args.experiment.c_str());
  std::fprintf(stderr, "  LibTorch %s, device %s, %d intra-op threads; BLAS: %s%s%s\n", info.torch_version.c_str(),
               info.device.c_str(), rt.threads, rt.blas.c_str(), rt.blas_path.empty() ? "" : " at ", rt.blas_path.c_str());
  if (rt.reference_blas)
    std::fprintf(stderr,
                 "  WARNING: LibTorch is using the reference BLAS, about 17x slower than OpenBLAS here. Install "
                 "libopenblas0-pthread (scripts/install-deps.sh does) or select it with update-alternatives "
                 "--config libblas.so.3-$(dpkg-architecture -qDEB_HOST_MULTIARCH).\n");

  StoreRecorder recorder(store, run);
  std::string ckpt_dir;
  // A run that ends before writing a checkpoint leaves no empty folder behind (nor an empty root).
  auto drop_empty_folders = [&] {
    if (ckpt_dir.empty()) return;
    std::error_code ec;
    fs::remove(ckpt_dir, ec);
    fs::remove(fs::path(ckpt_dir).parent_path(), ec);
  };
  return with_outcome(store, run, args.db, group, drop_empty_folders, [&] {
    store.add_params(run, to_params(cfg.flat));
    record_plugins(store, run, registry, runner);
    if (args.eval_from_run) {
      TrainResult result = runner.run(recorder, "");
      store.finish_run(run, RunStatus::Finished);
      std::fprintf(stderr, "eval run %lld of run %lld finished\n", static_cast<long long>(run),
                   static_cast<long long>(*args.eval_from_run));
      for (const auto& [k, v] : result.final_metrics)
        if (is_summary_metric(k)) std::fprintf(stderr, "  %-32s %.4f\n", k.c_str(), v);
      return 0;
    }
    if (!args.dry_run) ckpt_dir = checkpoint_folder(cfg.trainer.checkpoint_dir(), run);
    if (dist.world_size() > 1) {
      std::fprintf(stderr, "  rank 0 of %d: waiting for the others at %s:%d\n", dist.world_size(),
                   dist.master_addr().c_str(), dist.master_port());
      group = std::make_shared<DataParallel>(dist, rt.device);
      runner.join(group);
      std::fprintf(stderr, "  %d ranks joined (%s); each trains on its shard of every global batch\n",
                   dist.world_size(), group->backend().c_str());
    }
    TrainResult result = runner.run(recorder, ckpt_dir);
    store.finish_run(run, RunStatus::Finished);
    if (args.dry_run) {
      std::fprintf(stderr, "dry run %lld recorded in %s\n", static_cast<long long>(run), args.db.c_str());
      return 0;
    }
    print_finished(result, run, ckpt_dir, args.db,
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count());
    return 0;
  });
}

}  // namespace workbench::app
