#include "workbench/run_store.h"

#include "workbench/failpoint.h"

#include <sqlite3.h>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <limits>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace workbench::results {

StoreError::~StoreError() = default;

namespace {

constexpr int kBusyTimeoutMs = 10'000;

// ---- RAII wrappers ---------------------------------------------------------------------------

struct DbCloser {
  void operator()(sqlite3* db) const { sqlite3_close_v2(db); }
};
using DbPtr = std::unique_ptr<sqlite3, DbCloser>;

struct StmtFinalizer {
  void operator()(sqlite3_stmt* stmt) const { sqlite3_finalize(stmt); }
};
using StmtPtr = std::unique_ptr<sqlite3_stmt, StmtFinalizer>;

// Resets a (cached) statement when the scope ends, so that it never keeps a read transaction open
// and never carries bindings into its next use.
class StmtUse {
 public:
  explicit StmtUse(sqlite3_stmt* stmt) : stmt_(stmt) {}
  ~StmtUse() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  StmtUse(const StmtUse&) = delete;
  StmtUse& operator=(const StmtUse&) = delete;
  sqlite3_stmt* get() const { return stmt_; }

 private:
  sqlite3_stmt* stmt_;
};

// ---- time ------------------------------------------------------------------------------------

std::string iso_utc_now() {
  const auto now = std::chrono::system_clock::now();
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  const std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                     tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms % 1000));
}

double unix_now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// ---- column access ---------------------------------------------------------------------------

std::string column_text(sqlite3_stmt* stmt, int col) {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, col));
  if (text == nullptr) return {};
  return std::string(text, static_cast<std::size_t>(sqlite3_column_bytes(stmt, col)));
}

std::optional<double> column_optional_double(sqlite3_stmt* stmt, int col) {
  if (sqlite3_column_type(stmt, col) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_double(stmt, col);
}

std::optional<std::int64_t> column_optional_int64(sqlite3_stmt* stmt, int col) {
  if (sqlite3_column_type(stmt, col) == SQLITE_NULL) return std::nullopt;
  return sqlite3_column_int64(stmt, col);
}

std::optional<std::string> column_optional_text(sqlite3_stmt* stmt, int col) {
  if (sqlite3_column_type(stmt, col) == SQLITE_NULL) return std::nullopt;
  return column_text(stmt, col);
}

constexpr const char* kRunColumns =
    "id, experiment_name, status, config_toml, config_hash, error_message, started_at, ended_at, host, "
    "git_revision, torch_version, device, kind, seed, parent_run_id";

RunRow read_run_row(sqlite3_stmt* stmt) {
  RunRow row;
  row.id = sqlite3_column_int64(stmt, 0);
  row.experiment_name = column_text(stmt, 1);
  row.status = column_text(stmt, 2);
  row.config_toml = column_text(stmt, 3);
  row.config_hash = column_text(stmt, 4);
  row.error_message = column_text(stmt, 5);
  row.started_at = column_text(stmt, 6);
  row.ended_at = column_text(stmt, 7);
  row.host = column_text(stmt, 8);
  row.git_revision = column_text(stmt, 9);
  row.torch_version = column_text(stmt, 10);
  row.device = column_text(stmt, 11);
  row.kind = column_text(stmt, 12);
  row.seed = sqlite3_column_int64(stmt, 13);
  row.parent_run_id = column_optional_int64(stmt, 14);
  return row;
}

}  // namespace

// ---- RunStore::Impl --------------------------------------------------------------------------

struct RunStore::Impl {
  std::string path;
  DbPtr db;
  // Prepared statements, keyed by their SQL text; declared after `db` so they are finalized first.
  std::unordered_map<std::string, StmtPtr> cache;
  std::mutex mutex;

  [[noreturn]] void fail(std::string_view what) const {
    throw StoreError(fmt::format("run store {}: {}: {}", path, what, sqlite3_errmsg(db.get())));
  }

  void exec(const std::string& sql, std::string_view what) { exec(sql.c_str(), what); }
  void exec(const char* sql, std::string_view what) {
    char* message = nullptr;
    if (sqlite3_exec(db.get(), sql, nullptr, nullptr, &message) != SQLITE_OK) {
      std::string text = message != nullptr ? message : sqlite3_errmsg(db.get());
      sqlite3_free(message);
      throw StoreError(fmt::format("run store {}: {}: {}", path, what, text));
    }
  }

  // A cached prepared statement; use it through StmtUse so it is reset afterwards.
  sqlite3_stmt* cached(const std::string& sql) {
    auto it = cache.find(sql);
    if (it != cache.end()) return it->second.get();
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v3(db.get(), sql.c_str(), -1, SQLITE_PREPARE_PERSISTENT, &raw, nullptr) != SQLITE_OK) {
      sqlite3_finalize(raw);
      fail(fmt::format("prepare \"{}\"", sql));
    }
    return cache.emplace(sql, StmtPtr(raw)).first->second.get();
  }

  void bind(sqlite3_stmt* stmt, int index, std::int64_t value) {
    if (sqlite3_bind_int64(stmt, index, value) != SQLITE_OK) fail("bind");
  }
  // NaN binds as NULL (SQLite would do the same; explicit here because it is documented behaviour).
  void bind(sqlite3_stmt* stmt, int index, double value) {
    const int rc = std::isnan(value) ? sqlite3_bind_null(stmt, index) : sqlite3_bind_double(stmt, index, value);
    if (rc != SQLITE_OK) fail("bind");
  }
  void bind(sqlite3_stmt* stmt, int index, const std::string& value) {
    if (sqlite3_bind_text(stmt, index, value.data(), static_cast<int>(value.size()), SQLITE_TRANSIENT) != SQLITE_OK)
      fail("bind");
  }
  // An empty optional binds as NULL.
  template <typename T>
  void bind(sqlite3_stmt* stmt, int index, const std::optional<T>& value) {
    if (value) {
      bind(stmt, index, *value);
    } else {
      bind_null(stmt, index);
    }
  }
  void bind_null(sqlite3_stmt* stmt, int index) {
    if (sqlite3_bind_null(stmt, index) != SQLITE_OK) fail("bind");
  }

  // Steps a statement that returns no rows.
  void run(sqlite3_stmt* stmt, std::string_view what) {
    const int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) fail(what);
  }
  // Steps a query; true while there is a row.
  bool next(sqlite3_stmt* stmt, std::string_view what) {
    const int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(what);
  }

  std::int64_t pragma_int(const char* sql) {
    sqlite3_stmt* raw = nullptr;
    if (sqlite3_prepare_v2(db.get(), sql, -1, &raw, nullptr) != SQLITE_OK) {
      sqlite3_finalize(raw);
      fail(sql);
    }
    StmtPtr stmt(raw);
    std::int64_t value = 0;
    if (next(stmt.get(), sql)) value = sqlite3_column_int64(stmt.get(), 0);
    return value;
  }

  // BEGIN IMMEDIATE ... COMMIT; rolls back if the scope ends without commit(). IMMEDIATE takes the write
  // lock up front, so waiting for another writer goes through the busy timeout (a deferred transaction
  // that upgrades from read to write can fail with SQLITE_BUSY without waiting).
  class Transaction {
   public:
    Transaction(Impl& impl, std::string_view what) : impl_(impl), what_(what) {
      impl_.exec("BEGIN IMMEDIATE", fmt::format("{}: begin transaction", what_));
    }
    ~Transaction() {
      if (!done_) sqlite3_exec(impl_.db.get(), "ROLLBACK", nullptr, nullptr, nullptr);
    }
    Transaction(const Transaction&) = delete;
    Transaction& operator=(const Transaction&) = delete;
    void commit() {
      impl_.exec("COMMIT", fmt::format("{}: commit", what_));
      done_ = true;
    }

   private:
    Impl& impl_;
    std::string what_;
    bool done_ = false;
  };

  bool run_exists(std::int64_t id) {
    sqlite3_stmt* stmt = cached("SELECT 1 FROM runs WHERE id = ?1");
    StmtUse use(stmt);
    bind(stmt, 1, id);
    return next(stmt, fmt::format("look up run {}", id));
  }

  void upsert_tag(std::int64_t run_id, const std::string& key, const std::string& value, std::string_view what) {
    sqlite3_stmt* stmt = cached(
        "INSERT INTO tags (run_id, key, value) VALUES (?1, ?2, ?3) "
        "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value");
    StmtUse use(stmt);
    bind(stmt, 1, run_id);
    bind(stmt, 2, key);
    bind(stmt, 3, value);
    run(stmt, fmt::format("{}: tag '{}' of run {}", what, key, run_id));
  }

  // Switching a file from its rollback journal to WAL needs an exclusive lock, and SQLite answers
  // SQLITE_BUSY at once, without the busy handler, when another connection holds or wants one (it would
  // deadlock otherwise). Several processes opening the same new or version-1 file at once (a sweep
  // launching its runs) meet exactly that, so the switch is retried here within the busy timeout.
  void enable_wal() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kBusyTimeoutMs);
    for (;;) {
      const int rc = sqlite3_exec(db.get(), "PRAGMA journal_mode = WAL", nullptr, nullptr, nullptr);
      if (rc == SQLITE_OK) return;
      if ((rc & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= deadline) fail("enable WAL");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }

  [[noreturn]] void newer_schema(std::int64_t version) const {
    throw StoreError(fmt::format("run store {}: database schema version {} is newer than this build supports ({})",
                                 path, version, kSchemaVersion));
  }

  // Brings the file to kSchemaVersion, one transaction per version step. The version read before the
  // loop only decides whether to take the write lock: a file that is current is never written to (and
  // opening it never waits for a writer). Under the lock the version is read again, because another
  // process may have migrated the file in between; then it is this read that counts.
  void migrate() {
    std::int64_t version = pragma_int("PRAGMA user_version");
    while (version != kSchemaVersion) {
      if (version > kSchemaVersion) newer_schema(version);
      if (version < 0)
        throw StoreError(fmt::format("run store {}: database schema version {} is not one this build knows", path,
                                     version));
      Transaction txn(*this, "migrate schema");
      version = pragma_int("PRAGMA user_version");
      if (version >= kSchemaVersion || version < 0) continue;  // rolls back the empty transaction
      const int target = static_cast<int>(version) + 1;
      const std::string what = fmt::format("migrate schema from version {} to {}", version, target);
      if (target == 1) {
        exec(std::string(schema_sql()), what);
      } else {
        const Migration& m = migrations().at(static_cast<std::size_t>(target - 2));
        if (m.version != target)
          throw StoreError(fmt::format("run store {}: {}: migration {} is {}", path, what, target, m.name));
        exec(std::string(m.sql), fmt::format("{} ({})", what, m.name));
      }
      exec(fmt::format("PRAGMA user_version = {}", target), what);
      txn.commit();
      version = target;
    }
    add_views();
  }

  // views.sql's views, when one is missing: read first, so that a current file is not written to.
  void add_views() {
    const std::string sql(views_sql());
    std::vector<std::string> names;
    const std::string marker = "CREATE VIEW IF NOT EXISTS ";
    for (auto pos = sql.find(marker); pos != std::string::npos; pos = sql.find(marker, pos + 1)) {
      const auto start = pos + marker.size();
      names.push_back(sql.substr(start, sql.find_first_of(" \n", start) - start));
    }
    std::string list;
    for (const auto& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
    auto count = [&] {
      const std::string q = "SELECT count(*) FROM sqlite_master WHERE type = 'view' AND name IN (" + list + ")";
      return pragma_int(q.c_str());
    };
    if (names.empty() || count() == static_cast<std::int64_t>(names.size())) return;
    Transaction txn(*this, "add views");
    if (count() == static_cast<std::int64_t>(names.size())) return;  // another process added them
    exec(sql, "add the views of results/views.sql");
    txn.commit();
  }

  void insert_metric(std::int64_t run_id, const std::string& key, std::int64_t step, double value, double wall,
                     std::string_view what) {
    sqlite3_stmt* stmt = cached(
        "INSERT INTO metrics (run_id, key, step, value, wall_time) VALUES (?1, ?2, ?3, ?4, ?5) "
        "ON CONFLICT (run_id, key, step) DO UPDATE SET value = excluded.value, wall_time = excluded.wall_time");
    StmtUse use(stmt);
    bind(stmt, 1, run_id);
    bind(stmt, 2, key);
    bind(stmt, 3, step);
    bind(stmt, 4, value);
    bind(stmt, 5, wall);
    run(stmt, fmt::format("{} '{}' step {} of run {}", what, key, step, run_id));
  }
};

// ---- RunStore --------------------------------------------------------------------------------

RunStore::RunStore(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.path = path;
  if (path.empty()) throw StoreError("run store: empty database path");

  if (path != ":memory:") {
    const std::filesystem::path parent = std::filesystem::path(path).parent_path();
    std::error_code ec;
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    if (ec) throw StoreError(fmt::format("run store {}: cannot create directory {}: {}", path, parent.string(), ec.message()));
  }

  sqlite3* raw = nullptr;
  // NOMUTEX: the connection is only used under Impl::mutex.
  const int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 nullptr);
  s.db.reset(raw);
  if (rc != SQLITE_OK) {
    const char* message = raw != nullptr ? sqlite3_errmsg(raw) : sqlite3_errstr(rc);
    throw StoreError(fmt::format("run store {}: cannot open: {}", path, message));
  }
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, kBusyTimeoutMs);

  // SQLite opens lazily: the first statement that touches the file is where an unusable path (a
  // directory, a file that is not a database) shows up.
  s.exec("PRAGMA foreign_keys = ON", "enable foreign keys");
  s.enable_wal();
  // With WAL, NORMAL never corrupts the database; a power loss may drop the last commits. A training
  // step should not wait for an fsync per metric.
  s.exec("PRAGMA synchronous = NORMAL", "set synchronous");

  s.migrate();
}

RunStore::~RunStore() = default;
RunStore::RunStore(RunStore&&) noexcept = default;
RunStore& RunStore::operator=(RunStore&&) noexcept = default;

RunStore::Impl& RunStore::impl() const {
  if (!impl_) throw StoreError("run store: use of a moved-from RunStore");
  return *impl_;
}

const std::string& RunStore::path() const {
  static const std::string kEmpty;
  return impl_ ? impl_->path : kEmpty;
}

std::int64_t RunStore::begin_run(const RunInfo& info) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  const std::string what = fmt::format("begin_run '{}'", info.experiment_name);
  Impl::Transaction txn(s, what);
  // The foreign key would refuse an unknown parent too, but without saying which id it was.
  if (info.parent_run && !s.run_exists(*info.parent_run))
    throw StoreError(fmt::format("run store {}: {}: no parent run with id {}", s.path, what, *info.parent_run));
  std::int64_t id = 0;
  {
    sqlite3_stmt* stmt = s.cached(
        "INSERT INTO runs (experiment_name, experiment_path, config_toml, config_hash, status, started_at, host, "
        "git_revision, seed, torch_version, device, kind, parent_run_id, pid, process_start) "
        "VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)");
    StmtUse use(stmt);
    s.bind(stmt, 1, info.experiment_name);
    s.bind(stmt, 2, info.experiment_path);
    s.bind(stmt, 3, info.config_toml);
    s.bind(stmt, 4, info.config_hash);
    s.bind(stmt, 5, iso_utc_now());
    s.bind(stmt, 6, info.host);
    s.bind(stmt, 7, info.git_revision);
    s.bind(stmt, 8, info.seed);
    s.bind(stmt, 9, info.torch_version);
    s.bind(stmt, 10, info.device);
    s.bind(stmt, 11, info.kind);
    s.bind(stmt, 12, info.parent_run);
    s.bind(stmt, 13, info.pid);
    if (info.process_start.empty())
      s.bind_null(stmt, 14);
    else
      s.bind(stmt, 14, info.process_start);
    s.run(stmt, what);
    id = sqlite3_last_insert_rowid(s.db.get());
  }
  for (const auto& [key, value] : info.tags) s.upsert_tag(id, key, value, what);
  txn.commit();
  return id;
}

void RunStore::add_params(std::int64_t run, const std::vector<Param>& params) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  Impl::Transaction txn(s, "add_params");
  sqlite3_stmt* stmt = s.cached(
      "INSERT INTO params (run_id, key, value_text, value_num) VALUES (?1, ?2, ?3, ?4) "
      "ON CONFLICT (run_id, key) DO UPDATE SET value_text = excluded.value_text, value_num = excluded.value_num");
  for (const Param& p : params) {
    StmtUse use(stmt);
    s.bind(stmt, 1, run);
    s.bind(stmt, 2, p.key);
    s.bind(stmt, 3, p.text);
    s.bind(stmt, 4, p.number);
    s.run(stmt, fmt::format("add_params '{}' of run {}", p.key, run));
  }
  txn.commit();
}

void RunStore::add_plugin(std::int64_t run, const PluginRecord& plugin) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(
      "INSERT INTO plugins (run_id, kind, name, version, path, sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT (run_id, kind, name) DO UPDATE SET version = excluded.version, path = excluded.path, "
      "sha256 = excluded.sha256");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  s.bind(stmt, 2, plugin.kind);
  s.bind(stmt, 3, plugin.name);
  s.bind(stmt, 4, plugin.version);
  s.bind(stmt, 5, plugin.path);
  s.bind(stmt, 6, plugin.sha256);
  s.run(stmt, fmt::format("add_plugin {} '{}' of run {}", plugin.kind, plugin.name, run));
}

void RunStore::log_metric(std::int64_t run, const std::string& key, std::int64_t step, double value) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  s.insert_metric(run, key, step, value, unix_now(), "log_metric");
}

void RunStore::log_metrics(std::int64_t run, std::int64_t step,
                           const std::vector<std::pair<std::string, double>>& values) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  if (values.empty()) return;
  const double wall = unix_now();
  Impl::Transaction txn(s, "log_metrics");
  for (const auto& [key, value] : values) s.insert_metric(run, key, step, value, wall, "log_metrics");
  failpoint("metrics.before_commit");
  txn.commit();
}

void RunStore::finish_run(std::int64_t run, RunStatus status, const std::string& error_message) {
  if (status == RunStatus::Running) throw std::invalid_argument("finish_run: status must not be 'running'");
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached("UPDATE runs SET status = ?1, ended_at = ?2, error_message = ?3 WHERE id = ?4");
  StmtUse use(stmt);
  s.bind(stmt, 1, to_string(status));
  s.bind(stmt, 2, iso_utc_now());
  if (error_message.empty()) {
    s.bind_null(stmt, 3);
  } else {
    s.bind(stmt, 3, error_message);
  }
  s.bind(stmt, 4, run);
  s.run(stmt, fmt::format("finish_run {}", run));
  if (sqlite3_changes(s.db.get()) == 0)
    throw StoreError(fmt::format("run store {}: finish_run: no run with id {}", s.path, run));
}

void RunStore::reopen_run(std::int64_t run, std::optional<std::int64_t> pid, const std::string& process_start) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(
      "UPDATE runs SET status = 'running', ended_at = NULL, error_message = NULL, pid = ?1, process_start = ?2 "
      "WHERE id = ?3");
  StmtUse use(stmt);
  if (pid)
    s.bind(stmt, 1, *pid);
  else
    s.bind_null(stmt, 1);
  if (process_start.empty())
    s.bind_null(stmt, 2);
  else
    s.bind(stmt, 2, process_start);
  s.bind(stmt, 3, run);
  s.run(stmt, fmt::format("reopen_run {}", run));
  if (sqlite3_changes(s.db.get()) == 0)
    throw StoreError(fmt::format("run store {}: reopen_run: no run with id {}", s.path, run));
}

void RunStore::add_tags(std::int64_t run, const std::vector<std::pair<std::string, std::string>>& tags) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  Impl::Transaction txn(s, "add_tags");
  for (const auto& [key, value] : tags) s.upsert_tag(run, key, value, "add_tags");
  txn.commit();
}

void RunStore::add_checkpoint(std::int64_t run, const CheckpointRecord& checkpoint) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(
      "INSERT INTO checkpoints (run_id, step, path, sha256, kind, metric_key, metric_value, created_at) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
      "ON CONFLICT (run_id, path) DO UPDATE SET step = excluded.step, sha256 = excluded.sha256, "
      "kind = excluded.kind, metric_key = excluded.metric_key, metric_value = excluded.metric_value, "
      "created_at = excluded.created_at");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  s.bind(stmt, 2, checkpoint.step);
  s.bind(stmt, 3, checkpoint.path);
  s.bind(stmt, 4, checkpoint.sha256);
  s.bind(stmt, 5, checkpoint.kind);
  s.bind(stmt, 6, checkpoint.metric_key);
  s.bind(stmt, 7, checkpoint.metric_value);
  s.bind(stmt, 8, checkpoint.created_at.empty() ? iso_utc_now() : checkpoint.created_at);
  s.run(stmt, fmt::format("add_checkpoint '{}' ({}, step {}) of run {}", checkpoint.path, checkpoint.kind,
                          checkpoint.step, run));
}

void RunStore::add_examples(std::int64_t run, std::int64_t step, const std::vector<ExampleRecord>& examples) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  if (examples.empty()) return;
  Impl::Transaction txn(s, "add_examples");
  sqlite3_stmt* stmt = s.cached(
      "INSERT INTO examples (run_id, step, task, utt_id, reference, hypothesis) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
      "ON CONFLICT (run_id, step, task, utt_id) DO UPDATE SET reference = excluded.reference, "
      "hypothesis = excluded.hypothesis");
  for (const auto& e : examples) {
    StmtUse use(stmt);
    s.bind(stmt, 1, run);
    s.bind(stmt, 2, step);
    s.bind(stmt, 3, e.task);
    s.bind(stmt, 4, e.utt_id);
    s.bind(stmt, 5, e.reference);
    s.bind(stmt, 6, e.hypothesis);
    s.run(stmt, fmt::format("add_examples '{}' of run {} at step {}", e.task, run, step));
  }
  txn.commit();
}

void RunStore::remove_checkpoint(std::int64_t run, const std::string& path) {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached("DELETE FROM checkpoints WHERE run_id = ?1 AND path = ?2");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  s.bind(stmt, 2, path);
  s.run(stmt, fmt::format("remove_checkpoint '{}' of run {}", path, run));
}

RunRow RunStore::run(std::int64_t id) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(fmt::format("SELECT {} FROM runs WHERE id = ?1", kRunColumns));
  StmtUse use(stmt);
  s.bind(stmt, 1, id);
  if (!s.next(stmt, fmt::format("run {}", id)))
    throw StoreError(fmt::format("run store {}: no run with id {}", s.path, id));
  return read_run_row(stmt);
}

std::vector<RunRow> RunStore::runs() const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(fmt::format("SELECT {} FROM runs ORDER BY id", kRunColumns));
  StmtUse use(stmt);
  std::vector<RunRow> out;
  while (s.next(stmt, "runs")) out.push_back(read_run_row(stmt));
  return out;
}

std::vector<Param> RunStore::params(std::int64_t run) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached("SELECT key, value_text, value_num FROM params WHERE run_id = ?1 ORDER BY key");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  std::vector<Param> out;
  while (s.next(stmt, fmt::format("params of run {}", run)))
    out.push_back(Param{column_text(stmt, 0), column_text(stmt, 1), column_optional_double(stmt, 2)});
  return out;
}

std::vector<MetricRow> RunStore::metrics(std::int64_t run, const std::string& key) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(
      "SELECT key, step, value, wall_time FROM metrics WHERE run_id = ?1 AND (?2 = '' OR key = ?2) "
      "ORDER BY key, step");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  s.bind(stmt, 2, key);
  std::vector<MetricRow> out;
  while (s.next(stmt, fmt::format("metrics of run {}", run))) {
    out.push_back(MetricRow{column_text(stmt, 0), sqlite3_column_int64(stmt, 1),
                            column_optional_double(stmt, 2).value_or(std::numeric_limits<double>::quiet_NaN()),
                            sqlite3_column_double(stmt, 3)});
  }
  return out;
}

std::vector<PluginRecord> RunStore::plugins(std::int64_t run) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(
      "SELECT kind, name, version, path, sha256 FROM plugins WHERE run_id = ?1 ORDER BY kind, name");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  std::vector<PluginRecord> out;
  while (s.next(stmt, fmt::format("plugins of run {}", run))) {
    out.push_back(PluginRecord{column_text(stmt, 0), column_text(stmt, 1), column_text(stmt, 2),
                               column_text(stmt, 3), column_text(stmt, 4)});
  }
  return out;
}

std::vector<std::pair<std::string, std::string>> RunStore::tags(std::int64_t run) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached("SELECT key, value FROM tags WHERE run_id = ?1 ORDER BY key");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  std::vector<std::pair<std::string, std::string>> out;
  while (s.next(stmt, fmt::format("tags of run {}", run))) out.emplace_back(column_text(stmt, 0), column_text(stmt, 1));
  return out;
}

std::vector<ExampleRecord> RunStore::examples(std::int64_t run, std::int64_t step) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(
      "SELECT task, utt_id, reference, hypothesis FROM examples WHERE run_id = ?1 AND step = "
      "CASE WHEN ?2 >= 0 THEN ?2 ELSE (SELECT max(step) FROM examples WHERE run_id = ?1) END "
      "ORDER BY task, utt_id");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  s.bind(stmt, 2, step);
  std::vector<ExampleRecord> out;
  while (s.next(stmt, fmt::format("examples of run {}", run)))
    out.push_back(ExampleRecord{column_text(stmt, 0), column_text(stmt, 1), column_text(stmt, 2), column_text(stmt, 3)});
  return out;
}

std::vector<CheckpointRecord> RunStore::checkpoints(std::int64_t run) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  sqlite3_stmt* stmt = s.cached(
      "SELECT step, path, sha256, kind, metric_key, metric_value, created_at FROM checkpoints WHERE run_id = ?1 "
      "ORDER BY step, path");
  StmtUse use(stmt);
  s.bind(stmt, 1, run);
  std::vector<CheckpointRecord> out;
  while (s.next(stmt, fmt::format("checkpoints of run {}", run))) {
    out.push_back(CheckpointRecord{sqlite3_column_int64(stmt, 0), column_text(stmt, 1), column_text(stmt, 2),
                                   column_text(stmt, 3), column_optional_text(stmt, 4),
                                   column_optional_double(stmt, 5), column_text(stmt, 6)});
  }
  return out;
}

std::vector<RunListing> RunStore::recent_runs(std::size_t limit) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  // The headline metric's row is joined at its highest step through the metrics primary key, so the
  // cost is a few index lookups per listed run however long the runs are.
  sqlite3_stmt* stmt = s.cached(
      "SELECT r.id, r.experiment_name, r.kind, r.status, r.started_at, "
      "(julianday(r.ended_at) - julianday(r.started_at)) * 86400.0, h.value_text, m.step IS NOT NULL, m.value, "
      "r.parent_run_id, r.host, r.pid, r.process_start "
      "FROM runs AS r "
      "LEFT JOIN params AS h ON h.run_id = r.id AND h.key = 'derived.headline_metric' "
      "LEFT JOIN metrics AS m ON m.run_id = r.id AND m.key = h.value_text "
      "AND m.step = (SELECT max(step) FROM metrics WHERE run_id = r.id AND key = h.value_text) "
      "ORDER BY r.id DESC LIMIT ?1");
  StmtUse use(stmt);
  const auto max_limit = static_cast<std::size_t>(std::numeric_limits<std::int64_t>::max());
  s.bind(stmt, 1, static_cast<std::int64_t>(std::min(limit, max_limit)));
  std::vector<RunListing> out;
  while (s.next(stmt, "recent_runs")) {
    RunListing row;
    row.id = sqlite3_column_int64(stmt, 0);
    row.experiment_name = column_text(stmt, 1);
    row.kind = column_text(stmt, 2);
    row.status = column_text(stmt, 3);
    row.started_at = column_text(stmt, 4);
    row.duration_s = column_optional_double(stmt, 5);
    row.headline_key = column_text(stmt, 6);
    if (sqlite3_column_int(stmt, 7) != 0)
      row.headline_value = column_optional_double(stmt, 8).value_or(std::numeric_limits<double>::quiet_NaN());
    row.parent_run_id = column_optional_int64(stmt, 9);
    row.host = column_text(stmt, 10);
    row.pid = column_optional_int64(stmt, 11);
    row.process_start = column_text(stmt, 12);
    out.push_back(std::move(row));
  }
  return out;
}

QueryResult RunStore::query_rows(const std::string& sql) const {
  Impl& s = impl();
  std::lock_guard lock(s.mutex);
  QueryResult result;
  const char* cursor = sql.c_str();
  const char* const end = cursor + sql.size();
  while (cursor < end) {
    sqlite3_stmt* raw = nullptr;
    const char* tail = nullptr;
    if (sqlite3_prepare_v2(s.db.get(), cursor, static_cast<int>(end - cursor), &raw, &tail) != SQLITE_OK) {
      sqlite3_finalize(raw);
      s.fail("query_rows");
    }
    cursor = tail;
    if (raw == nullptr) continue;  // only whitespace or comments left
    StmtPtr stmt(raw);
    const int columns = sqlite3_column_count(raw);
    QueryResult current;
    for (int c = 0; c < columns; ++c) current.columns.emplace_back(sqlite3_column_name(raw, c));
    while (s.next(raw, "query_rows")) {
      std::vector<std::optional<std::string>> row;
      row.reserve(static_cast<std::size_t>(columns));
      for (int c = 0; c < columns; ++c) {
        if (sqlite3_column_type(raw, c) == SQLITE_NULL) {
          row.emplace_back(std::nullopt);
        } else {
          row.emplace_back(column_text(raw, c));
        }
      }
      current.rows.push_back(std::move(row));
    }
    if (columns > 0) result = std::move(current);
  }
  return result;
}

// ---- free functions --------------------------------------------------------------------------

std::string to_string(RunStatus status) {
  switch (status) {
    case RunStatus::Running: return "running";
    case RunStatus::Finished: return "finished";
    case RunStatus::Failed: return "failed";
    case RunStatus::Interrupted: return "interrupted";
  }
  throw std::invalid_argument("to_string: invalid RunStatus");
}

RunStatus parse_run_status(const std::string& text) {
  if (text == "running") return RunStatus::Running;
  if (text == "finished") return RunStatus::Finished;
  if (text == "failed") return RunStatus::Failed;
  if (text == "interrupted") return RunStatus::Interrupted;
  throw std::invalid_argument(fmt::format("unknown run status '{}'", text));
}

Param param_text(std::string key, std::string value) { return Param{std::move(key), std::move(value), std::nullopt}; }

Param param_number(std::string key, double value) {
  std::optional<double> number;
  if (!std::isnan(value)) number = value;
  return Param{std::move(key), fmt::format("{}", value), number};
}

Param param_integer(std::string key, std::int64_t value) {
  return Param{std::move(key), std::to_string(value), static_cast<double>(value)};
}

Param param_bool(std::string key, bool value) {
  return Param{std::move(key), value ? "true" : "false", value ? 1.0 : 0.0};
}

}  // namespace workbench::results
