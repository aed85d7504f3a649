#pragma once
// The run store: every training run (and dry run) recorded in one SQLite database.
//
// What is stored (schema in results/schema.sql and results/migrations/*.sql, compiled into this library):
//   runs         one row per run: experiment, resolved config TOML + its sha256, status, start/end time
//                (ISO-8601 UTC), host, git revision, seed, torch version, device, error message, kind,
//                and the parent run (a fine-tuning run's pre-training run).
//   params       flattened hyper-parameters of a run, typed: value_text always, value_num for numbers
//                and booleans, so `WHERE key = 'trainer.lr' AND value_num < 1e-3` works.
//   metrics      scalar metrics, one row per (run, key, step), with wall-clock time.
//   plugins      the plugin .so files a run loaded, with version and sha256.
//   tags         free-form key = value labels of a run.
//   checkpoints  the checkpoint files a run wrote and still has, with step, sha256 and kind.
// Canned queries for researchers live in results/queries/*.sql.
//
// Design choices (several are lessons from MLflow's SQL tracking store):
//   * Typed params. MLflow keeps params as strings only, which makes "all runs with lr < 1e-3"
//     impossible in SQL; here a param keeps its text and, when numeric, a REAL next to it.
//   * One row per (run, key, step). MLflow appends metric rows, so a resumed or repeated step gives
//     duplicates that every query must deduplicate; here a second write of the same (run, key, step)
//     replaces the value (an upsert), and "latest value" is a plain max(step) lookup (view
//     latest_metrics).
//   * WAL journal + 10 s busy timeout. Several processes (a training run, a dry run, a researcher's
//     sqlite3 shell, `workbench runs`) may have the database open at once; WAL lets readers run
//     beside the single writer, and the busy timeout makes a writer wait for the lock instead of
//     failing with "database is locked". Write transactions start with BEGIN IMMEDIATE so that waiting
//     goes through the busy timeout too.
//   * Schema embedded in the library and versioned by PRAGMA user_version: schema.sql is version 1,
//     migrations/NNN_*.sql takes a database from NNN-1 to NNN. On open, a fresh file gets schema.sql
//     and then every migration, an older file the migrations it lacks; each migration commits in one
//     BEGIN IMMEDIATE transaction together with its user_version, so a crash leaves the file at the
//     old version or the new one, never between, and two processes opening an old file at once do not
//     both migrate it (the version is read again under the write lock). A fresh path just works, the
//     binary does not need the source tree, old databases keep their runs, and a database written by a
//     newer schema version is refused instead of being misread.
//   * Foreign keys with ON DELETE CASCADE: deleting a run deletes its params, metrics, plugins, tags and
//     checkpoints; its child runs stay, with parent_run_id set to NULL.
//
// Threads and processes: a RunStore owns one SQLite connection. Its calls are serialized by an
// internal mutex, so one RunStore may be shared between threads (calls then wait for each other), but
// the simplest and fastest pattern is one RunStore per thread or process; any number of RunStores,
// in one process or many, may have the same file open at the same time.
//
// Errors: every failure of SQLite throws StoreError whose message names the database path and carries
// sqlite3_errmsg, e.g.
//   run store results/workbench.db: log_metric 'dev/cer' step 100 of run 7: FOREIGN KEY constraint failed
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace workbench::results {

/// Schema version this build writes (PRAGMA user_version of the database): schema.sql is version 1 and
/// results/migrations/NNN_*.sql version NNN, up to this one.
inline constexpr int kSchemaVersion = 4;

/// The text of results/schema.sql (schema version 1), embedded at build time.
std::string_view schema_sql();

/// The text of results/views.sql (sweep_runs, metric_final, metric_best, run_pairs), embedded at build
/// time: CREATE VIEW IF NOT EXISTS statements that RunStore applies to a database lacking one of them.
std::string_view views_sql();

/// One embedded migration: `sql` takes a database from schema version `version - 1` to `version`.
/// `name` is its file name in results/migrations ("002_parents_tags_checkpoints.sql").
struct Migration {
  int version;
  std::string_view name;
  std::string_view sql;
};
/// Every embedded migration in order, versions 2 to kSchemaVersion (checked when the library is built).
const std::vector<Migration>& migrations();

/// A run-store failure (cannot open/create the file, SQL error, constraint violation, unknown run).
/// The message names the database path.
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
  ~StoreError() override;
};

enum class RunStatus { Running, Finished, Failed, Interrupted };

/// "running", "finished", "failed", "interrupted": the strings stored in runs.status.
std::string to_string(RunStatus status);
/// Inverse of to_string; throws std::invalid_argument for any other string.
RunStatus parse_run_status(const std::string& text);

/// What is known about a run when it starts.
struct RunInfo {
  std::string experiment_name, experiment_path, config_toml, config_hash, host, git_revision, torch_version, device;
  std::int64_t seed = 0;
  std::string kind = "train";  ///< "train", "eval" or "dry-run"
  /// The run this one continues from, e.g. the pre-training run whose checkpoint a fine-tuning run
  /// starts from (runs.parent_run_id); empty for none.
  std::optional<std::int64_t> parent_run;
  /// Tags recorded with the run (see RunStore::add_tags); a key given twice keeps the last value.
  std::vector<std::pair<std::string, std::string>> tags;
  /// The process that runs it, on `host`: its pid and start time (runs.pid, runs.process_start), so that
  /// a run whose process died can be told from a live one. Empty: not recorded.
  std::optional<std::int64_t> pid;
  std::string process_start;
};

/// One hyper-parameter. `text` is the value as written (always stored); `number` is its numeric value
/// for numbers and booleans (true = 1, false = 0) and empty for strings and lists. The helpers below
/// build the usual cases with consistent text.
struct Param {
  std::string key;
  std::string text;
  std::optional<double> number;
};
/// A string value: no number.
Param param_text(std::string key, std::string value);
/// A floating-point value; text is the shortest representation that round-trips ("0.0001").
Param param_number(std::string key, double value);
/// An integer value; text is the decimal integer.
Param param_integer(std::string key, std::int64_t value);
/// A boolean value: text "true"/"false", number 1/0.
Param param_bool(std::string key, bool value);

/// A plugin a run loaded. sha256 is the hex digest of the .so file (workbench::sha256_file).
struct PluginRecord {
  std::string kind, name, version, path, sha256;
};

/// One metric sample. A NaN value is stored as NULL and read back as NaN.
struct MetricRow {
  std::string key;
  std::int64_t step;
  double value;
  double wall_time;  ///< seconds since the Unix epoch
};

/// One row of `runs`. NULL columns read as empty strings (ended_at while running, error_message
/// unless failed/interrupted).
struct RunRow {
  std::int64_t id;
  std::string experiment_name, status, config_toml, config_hash, error_message, started_at, ended_at, host,
      git_revision, torch_version, device, kind;
  std::int64_t seed;
  std::optional<std::int64_t> parent_run_id;  ///< empty for none (or a parent that was deleted)
};

/// A checkpoint file of a run (table checkpoints).
struct CheckpointRecord {
  std::int64_t step;
  std::string path;
  std::string sha256;  ///< hex digest of the file's bytes (workbench::sha256_file)
  std::string kind;    ///< "periodic", "best", "final" or "interrupted"
  std::optional<std::string> metric_key;  ///< for "best": the metric it is best by ("dev/cer")
  std::optional<double> metric_value;     ///< and its value at `step` (NaN is stored as NULL: reads empty)
  std::string created_at;                 ///< ISO-8601 UTC; add_checkpoint fills in now when empty
};

/// One decoded example of an evaluation (the `examples` table).
struct ExampleRecord {
  std::string task;  ///< "dev/st/fr-en": data name, task, direction
  std::string utt_id;
  std::string reference;
  std::string hypothesis;
};

/// One line of RunStore::recent_runs: a run and its headline number.
struct RunListing {
  std::int64_t id;
  std::string experiment_name, kind, status, started_at;
  std::optional<double> duration_s;  ///< ended_at - started_at in seconds; empty while running
  /// The metric named by the run's param `derived.headline_metric` (empty if the run has none) and its
  /// value at the highest step logged; empty if the metric was never logged, NaN if that value is NaN.
  std::string headline_key;
  std::optional<double> headline_value;
  std::optional<std::int64_t> parent_run_id;
  /// Where and by which process it runs (RunInfo::host, pid, process_start).
  std::string host, process_start;
  std::optional<std::int64_t> pid;
};

/// The result of RunStore::query_rows: column names and rows; a NULL cell is an empty optional and
/// every other cell is SQLite's text rendering of the value.
struct QueryResult {
  std::vector<std::string> columns;
  std::vector<std::vector<std::optional<std::string>>> rows;
};

class RunStore {
 public:
  /// Opens or creates the database at `path` (creating missing parent directories; ":memory:" also
  /// works), enables WAL, a 10 s busy timeout and foreign keys, and brings the file's schema up to
  /// kSchemaVersion: schema.sql and every migration for a fresh file, the missing migrations for an
  /// older one, one transaction per migration; then results/views.sql's views, if one is missing. A file
  /// already at kSchemaVersion with every view is not written to.
  /// Throws StoreError naming the path and SQLite's message if the file cannot be opened or created
  /// (e.g. the path is a directory), is not a SQLite database, a migration fails (the file then stays
  /// at the last version that committed), or has a newer schema version (the message names both).
  explicit RunStore(const std::string& path);
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;
  /// Movable; a moved-from RunStore throws StoreError from every call except path() and the destructor.
  RunStore(RunStore&&) noexcept;
  RunStore& operator=(RunStore&&) noexcept;

  /// Inserts a run with status 'running' and started_at = now, with its parent and tags, in one
  /// transaction; returns its id. Throws StoreError naming the id if info.parent_run is not a run.
  std::int64_t begin_run(const RunInfo& info);
  /// Records params of a run in one transaction (all or none). A key recorded again for the same run
  /// replaces the earlier value. Throws StoreError for an unknown run.
  void add_params(std::int64_t run, const std::vector<Param>& params);
  /// Records a plugin of a run; the same (kind, name) again replaces the earlier record.
  void add_plugin(std::int64_t run, const PluginRecord& plugin);
  /// Records one metric value with wall_time = now. The same (run, key, step) again replaces the value.
  /// Throws StoreError for an unknown run.
  void log_metric(std::int64_t run, const std::string& key, std::int64_t step, double value);
  /// Records several metrics of one step in one transaction (all or none), same rules as log_metric.
  void log_metrics(std::int64_t run, std::int64_t step, const std::vector<std::pair<std::string, double>>& values);
  /// Ends a run: sets status, ended_at = now, and error_message (NULL when empty). Calling it again
  /// overwrites the earlier end. Throws std::invalid_argument for RunStatus::Running and StoreError for
  /// an unknown run.
  void finish_run(std::int64_t run, RunStatus status, const std::string& error_message = "");
  /// Marks an ended run running again, for `workbench resume`: status 'running', no ended_at or
  /// error_message, and the process that continues it (RunInfo::pid, process_start). Its params, metrics
  /// and checkpoints stay; a metric logged again at a step it already has replaces the value. Throws
  /// StoreError for an unknown run.
  void reopen_run(std::int64_t run, std::optional<std::int64_t> pid, const std::string& process_start);
  /// Records tags of a run in one transaction (all or none); a key recorded again for the same run
  /// replaces its value. Throws StoreError for an unknown run.
  void add_tags(std::int64_t run, const std::vector<std::pair<std::string, std::string>>& tags);
  /// Records a checkpoint file of a run, created_at = now if it is empty. The same path again replaces
  /// the earlier record. Throws StoreError for an unknown run or a kind other than "periodic", "best",
  /// "final", "interrupted" (the CHECK constraint).
  void add_checkpoint(std::int64_t run, const CheckpointRecord& checkpoint);
  /// Records decoded examples of one evaluation step in one transaction; the same (task, utt_id) at the
  /// same step again replaces the row. Throws StoreError for an unknown run.
  void add_examples(std::int64_t run, std::int64_t step, const std::vector<ExampleRecord>& examples);
  /// Forgets a checkpoint file of a run (e.g. a periodic checkpoint the trainer deleted). A path with no
  /// record is not an error: there is nothing left to forget.
  void remove_checkpoint(std::int64_t run, const std::string& path);

  /// One run; throws StoreError if there is no run with that id.
  RunRow run(std::int64_t id) const;
  /// All runs, oldest first (ascending id).
  std::vector<RunRow> runs() const;
  /// A run's params, ordered by key.
  std::vector<Param> params(std::int64_t run) const;
  /// A run's metrics ordered by key, step; only `key`'s if it is not empty.
  std::vector<MetricRow> metrics(std::int64_t run, const std::string& key = "") const;
  /// A run's plugins, ordered by kind, name.
  std::vector<PluginRecord> plugins(std::int64_t run) const;
  /// A run's tags, ordered by key.
  std::vector<std::pair<std::string, std::string>> tags(std::int64_t run) const;
  /// A run's examples at `step` (-1 = its last step with any), ordered by task, then utt_id.
  std::vector<ExampleRecord> examples(std::int64_t run, std::int64_t step = -1) const;
  /// A run's checkpoints, ordered by step, then path.
  std::vector<CheckpointRecord> checkpoints(std::int64_t run) const;
  /// The `limit` newest runs (highest id first: ids grow with begin_run, while started_at follows the
  /// host's clock), with duration and headline metric. limit 0 gives none.
  std::vector<RunListing> recent_runs(std::size_t limit) const;

  /// Runs arbitrary SQL (one or more statements, e.g. a file from results/queries) and returns the rows
  /// of the last statement that returned columns. Throws StoreError with SQLite's message on error.
  QueryResult query_rows(const std::string& sql) const;

  /// The path the store was opened with.
  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Impl& impl() const;
};

}  // namespace workbench::results
