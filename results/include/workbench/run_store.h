#pragma once
// The run store: every training run (and dry run) recorded in one SQLite database.
//
// What is stored (schema in results/schema.sql, compiled into this library):
//   runs     one row per run: experiment, resolved config TOML + its sha256, status, start/end time
//            (ISO-8601 UTC), host, git revision, seed, torch version, device, error message, kind.
//   params   flattened hyper-parameters of a run, typed: value_text always, value_num for numbers
//            and booleans, so `WHERE key = 'trainer.lr' AND value_num < 1e-3` works.
//   metrics  scalar metrics, one row per (run, key, step), with wall-clock time.
//   plugins  the plugin .so files a run loaded, with version and sha256.
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
//   * Schema embedded in the library and applied idempotently on open (CREATE ... IF NOT EXISTS,
//     PRAGMA user_version = 1): a fresh path just works, the binary does not need the source tree, and
//     a database written by a newer schema version is refused instead of being misread.
//   * Foreign keys with ON DELETE CASCADE: deleting a run deletes its params, metrics and plugins.
//
// Threads and processes: a RunStore owns one SQLite connection. Its calls are serialized by an
// internal mutex, so one RunStore may be shared between threads (calls then wait for each other), but
// the simplest and fastest pattern is one RunStore per thread or process; any number of RunStores,
// in one process or many, may have the same file open at the same time.
//
// Errors: every failure of SQLite throws StoreError whose message names the database path and carries
// sqlite3_errmsg, e.g.
//   run store results/workbench.db: log_metric 'dev/cer' step 100 of run 7: FOREIGN KEY constraint failed
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace workbench::results {

/// Schema version this build writes (PRAGMA user_version of the database).
inline constexpr int kSchemaVersion = 1;

/// The text of results/schema.sql, embedded at build time.
std::string_view schema_sql();

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
  std::string kind = "train";  ///< "train" or "dry-run"
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

/// A plugin a run loaded. sha256 is the hex digest of the .so file (see sha256_file).
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
  /// works), enables WAL, a 10 s busy timeout and foreign keys, and applies the schema if the file's
  /// schema version is older than kSchemaVersion.
  /// Throws StoreError naming the path and SQLite's message if the file cannot be opened or created
  /// (e.g. the path is a directory), is not a SQLite database, or has a newer schema version.
  explicit RunStore(const std::string& path);
  ~RunStore();
  RunStore(const RunStore&) = delete;
  RunStore& operator=(const RunStore&) = delete;
  /// Movable; a moved-from RunStore throws StoreError from every call except path() and the destructor.
  RunStore(RunStore&&) noexcept;
  RunStore& operator=(RunStore&&) noexcept;

  /// Inserts a run with status 'running' and started_at = now; returns its id.
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

/// Hex (lowercase) sha256 of a file's bytes. Throws std::runtime_error naming the path if the file
/// cannot be opened or read.
std::string sha256_file(const std::string& path);
/// Hex (lowercase) sha256 of a string (used for runs.config_hash).
std::string sha256_text(const std::string& text);

}  // namespace workbench::results
