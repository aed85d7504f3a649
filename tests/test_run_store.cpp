// Tests of the run store (results/): behaviour checked through real SQL on temporary database files,
// read back over a separate raw SQLite connection where possible.
//
// Set WORKBENCH_KEEP_TEST_DB=/some/path.db to keep the database the canned-query test populates, e.g.
// to try results/queries/*.sql on it with the sqlite3 CLI.
//
// tests/data/run_store_v1.db is a database written by the schema-version-1 run store (made by
// tests/data/run_store_v1_generator.cpp, whose header says how); the migration tests open copies of it.
#include <catch2/catch.hpp>

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "workbench/run_store.h"

namespace fs = std::filesystem;
using namespace workbench::results;

namespace {

// A fresh directory under the system temp dir, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "wb_run_store_XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A raw SQLite connection for checking what the store wrote, independent of RunStore's code.
class RawDb {
 public:
  explicit RawDb(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
      std::string message = sqlite3_errmsg(db_);
      sqlite3_close_v2(db_);
      throw std::runtime_error("RawDb: " + message);
    }
    sqlite3_busy_timeout(db_, 10000);
  }
  ~RawDb() { sqlite3_close_v2(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  // All rows of one statement, NULL rendered as "NULL".
  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK)
      throw std::runtime_error("RawDb prepare: " + std::string(sqlite3_errmsg(db_)) + " in " + sql);
    std::vector<std::vector<std::string>> out;
    int rc = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int c = 0; c < sqlite3_column_count(stmt); ++c) {
        const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt, c));
        row.emplace_back(text != nullptr ? text : "NULL");
      }
      out.push_back(std::move(row));
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) throw std::runtime_error("RawDb step: " + std::string(sqlite3_errmsg(db_)));
    return out;
  }
  std::string text(const std::string& sql) {
    auto r = rows(sql);
    if (r.empty() || r[0].empty()) throw std::runtime_error("RawDb: no row for " + sql);
    return r[0][0];
  }
  long long integer(const std::string& sql) { return std::stoll(text(sql)); }
  double real(const std::string& sql) { return std::stod(text(sql)); }
  std::vector<std::string> column(const std::string& sql) {
    std::vector<std::string> out;
    for (auto& row : rows(sql)) out.push_back(row.at(0));
    return out;
  }
  // Runs a script (several statements allowed); returns SQLITE_OK or the error message.
  std::string exec(const std::string& sql) {
    char* message = nullptr;
    if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &message) == SQLITE_OK) return "ok";
    std::string text = message != nullptr ? message : "unknown error";
    sqlite3_free(message);
    return text;
  }

 private:
  sqlite3* db_ = nullptr;
};

// Digests are data here (workbench::sha256_* has its own tests in test_sha256.cpp).
const std::string kConfigHash = "5f4c0a8e1d2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5";
const std::string kConformerHash = "c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0c0f0";
const std::string kBpeHash = "b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0b0e0";
const std::string kCheckpointHash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

RunInfo sample_info(const std::string& experiment = "ctc_baseline", std::int64_t seed = 7) {
  RunInfo info;
  info.experiment_name = experiment;
  info.experiment_path = "experiments/" + experiment + ".toml";
  info.config_toml = "[trainer]\nlr = 0.0001\n";
  info.config_hash = kConfigHash;
  info.host = "testhost";
  info.git_revision = "0123abcd";
  info.seed = seed;
  info.torch_version = "1.13.1";
  info.device = "cpu";
  return info;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// True if `text` matches `pattern`, where 'd' stands for any digit and every other character for itself.
bool matches_pattern(const std::string& text, const std::string& pattern) {
  if (text.size() != pattern.size()) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool ok = pattern[i] == 'd' ? (text[i] >= '0' && text[i] <= '9') : text[i] == pattern[i];
    if (!ok) return false;
  }
  return true;
}

int column_index(const QueryResult& result, const std::string& name) {
  auto it = std::find(result.columns.begin(), result.columns.end(), name);
  if (it == result.columns.end()) throw std::runtime_error("no column " + name);
  return static_cast<int>(it - result.columns.begin());
}

const std::optional<std::string>& cell(const QueryResult& result, std::size_t row, const std::string& column) {
  return result.rows.at(row).at(static_cast<std::size_t>(column_index(result, column)));
}

// A copy of the checked-in version-1 database, so that no test ever writes to tests/data.
std::string copy_v1_database(const TempDir& dir, const std::string& name = "v1.db") {
  const std::string path = dir.file(name);
  fs::copy_file(fs::path(WORKBENCH_TEST_DATA_DIR) / "run_store_v1.db", path);
  return path;
}

// SQL text without `--` comments and with every run of whitespace as one space: CREATE TABLE text
// keeps the comments inside its parentheses, and those may change without changing the schema.
std::string normalise_sql(const std::string& sql) {
  std::string out;
  bool in_quote = false;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    const char c = sql[i];
    if (!in_quote && c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
      continue;
    }
    if (c == '\'') in_quote = !in_quote;
    if (!in_quote && std::isspace(static_cast<unsigned char>(c))) {
      if (!out.empty() && out.back() != ' ') out.push_back(' ');
      continue;
    }
    out.push_back(c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

// Everything about a database's schema that queries can see: each object's normalised SQL, every
// table's columns, foreign keys and indexes (with their columns), one line each.
std::vector<std::string> schema_of(RawDb& db) {
  std::vector<std::string> out;
  for (const auto& row : db.rows("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"))
    out.push_back(row[0] + " " + row[1] + " on " + row[2] + ": " + normalise_sql(row[3]));
  for (const auto& table : db.column("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")) {
    for (const auto& c : db.rows("SELECT cid, name, type, \"notnull\", dflt_value, pk FROM pragma_table_info('" +
                                 table + "')"))
      out.push_back("column " + table + "." + c[1] + ": #" + c[0] + " " + c[2] + " notnull=" + c[3] +
                    " default=" + c[4] + " pk=" + c[5]);
    for (const auto& f : db.rows("SELECT \"from\", \"table\", \"to\", on_delete FROM pragma_foreign_key_list('" +
                                 table + "')"))
      out.push_back("foreign key " + table + "." + f[0] + " -> " + f[1] + "." + f[2] + " on delete " + f[3]);
    for (const auto& i : db.rows("SELECT name, \"unique\", origin FROM pragma_index_list('" + table + "')")) {
      const auto columns = db.text("SELECT group_concat(coalesce(name, '<expr>')) FROM pragma_index_info('" + i[0] + "')");
      out.push_back("index " + table + "." + i[0] + " unique=" + i[1] + " origin=" + i[2] + " (" + columns + ")");
    }
  }
  return out;
}

}  // namespace

TEST_CASE("opening a new path creates the schema", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("nested/dirs/workbench.db");
  {
    RunStore store(path);
    CHECK(store.path() == path);
  }
  REQUIRE(fs::exists(path));

  RawDb db(path);
  const auto tables = db.column("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name");
  CHECK(tables == std::vector<std::string>{"checkpoints", "examples", "metrics", "params", "plugins", "runs", "tags"});
  const auto views = db.column("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name");
  // The schema's views, then results/views.sql's.
  CHECK(views == std::vector<std::string>{"latest_metrics", "metric_best", "metric_final", "run_pairs", "run_parents",
                                          "run_summary", "sweep_runs"});
  CHECK(db.text("SELECT group_concat(name) FROM pragma_index_info('metrics_run_key')") == "run_id,key");
  CHECK(db.text("SELECT group_concat(name) FROM pragma_index_info('params_key_num')") == "key,value_num");
  CHECK(db.text("SELECT group_concat(name) FROM pragma_index_info('runs_parent')") == "parent_run_id");
  CHECK(db.text("SELECT group_concat(name) FROM pragma_index_info('tags_key_value')") == "key,value");
  CHECK(db.integer("PRAGMA user_version") == kSchemaVersion);
  CHECK(kSchemaVersion == 4);
  CHECK(db.text("PRAGMA journal_mode") == "wal");
  // Foreign keys with cascade from every child table; a child run only loses its parent.
  for (const char* t : {"params", "metrics", "plugins", "tags", "checkpoints"}) {
    INFO(t);
    CHECK(db.text(std::string("SELECT \"table\" || ':' || on_delete FROM pragma_foreign_key_list('") + t + "')") ==
          "runs:CASCADE");
  }
  CHECK(db.text("SELECT \"from\" || ':' || \"table\" || ':' || on_delete FROM pragma_foreign_key_list('runs')") ==
        "parent_run_id:runs:SET NULL");
  CHECK(db.column("SELECT name FROM pragma_table_info('run_summary') ORDER BY cid") ==
        std::vector<std::string>{"id", "experiment_name", "status", "started_at", "ended_at", "seed", "device",
                                 "duration_s", "kind", "parent_run_id"});

  SECTION("reopening does not change it") {
    const auto before = schema_of(db);
    { RunStore again(path); }
    CHECK(schema_of(db) == before);
    CHECK(db.integer("PRAGMA user_version") == kSchemaVersion);
  }
}

TEST_CASE("the embedded schema is schema.sql", "[run_store]") {
  const std::string on_disk = read_file(fs::path(WORKBENCH_SOURCE_DIR) / "results" / "schema.sql");
  CHECK(std::string(schema_sql()) == on_disk);
}

TEST_CASE("the embedded migrations are results/migrations, versions 2 to kSchemaVersion", "[run_store][migration]") {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(fs::path(WORKBENCH_SOURCE_DIR) / "results" / "migrations"))
    if (entry.path().extension() == ".sql") files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  const auto& embedded = migrations();
  REQUIRE(embedded.size() == files.size());
  REQUIRE(embedded.size() == static_cast<std::size_t>(kSchemaVersion - 1));
  for (std::size_t i = 0; i < files.size(); ++i) {
    INFO(files[i]);
    CHECK(embedded[i].version == static_cast<int>(i) + 2);
    CHECK(std::string(embedded[i].name) == files[i].filename().string());
    CHECK(std::string(embedded[i].sql) == read_file(files[i]));
    // The runner sets user_version and owns the transaction.
    CHECK(normalise_sql(std::string(embedded[i].sql)).find("PRAGMA user_version") == std::string::npos);
    CHECK(normalise_sql(std::string(embedded[i].sql)).find("BEGIN") == std::string::npos);
    CHECK(normalise_sql(std::string(embedded[i].sql)).find("COMMIT") == std::string::npos);
  }
}

TEST_CASE("a run goes from running to finished", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore store(path);
  RunInfo info = sample_info();
  info.kind = "dry-run";
  const std::int64_t id = store.begin_run(info);
  REQUIRE(id > 0);

  RawDb db(path);
  const std::string where = " FROM runs WHERE id = " + std::to_string(id);
  CHECK(db.text("SELECT status" + where) == "running");
  CHECK(db.text("SELECT ended_at IS NULL" + where) == "1");
  CHECK(db.text("SELECT kind" + where) == "dry-run");
  CHECK(db.text("SELECT experiment_path" + where) == "experiments/ctc_baseline.toml");
  CHECK(db.text("SELECT config_hash" + where) == kConfigHash);
  CHECK(db.text("SELECT parent_run_id IS NULL" + where) == "1");
  CHECK(db.text("SELECT typeof(seed) || seed" + where) == "integer7");
  const std::string started = db.text("SELECT started_at" + where);
  CHECK(matches_pattern(started, "dddd-dd-ddTdd:dd:dd.dddZ"));
  CHECK(db.text("SELECT julianday(started_at) IS NOT NULL" + where) == "1");
  CHECK(db.text("SELECT duration_s IS NULL FROM run_summary WHERE id = " + std::to_string(id)) == "1");

  store.finish_run(id, RunStatus::Finished);
  CHECK(db.text("SELECT status" + where) == "finished");
  CHECK(db.text("SELECT ended_at IS NOT NULL AND ended_at >= started_at" + where) == "1");
  CHECK(db.text("SELECT error_message IS NULL" + where) == "1");
  CHECK(db.real("SELECT duration_s FROM run_summary WHERE id = " + std::to_string(id)) >= 0.0);

  const RunRow row = store.run(id);
  CHECK(row.id == id);
  CHECK(row.status == "finished");
  CHECK(row.experiment_name == "ctc_baseline");
  CHECK(row.config_toml == info.config_toml);
  CHECK(row.host == "testhost");
  CHECK(row.git_revision == "0123abcd");
  CHECK(row.torch_version == "1.13.1");
  CHECK(row.device == "cpu");
  CHECK(row.kind == "dry-run");
  CHECK(row.seed == 7);
  CHECK(row.started_at == started);
  CHECK_FALSE(row.ended_at.empty());
  CHECK(row.error_message.empty());
  CHECK_FALSE(row.parent_run_id.has_value());
  CHECK(RunInfo{}.kind == "train");
}

TEST_CASE("failed and interrupted runs keep their error message", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore store(path);
  const auto failed = store.begin_run(sample_info());
  const auto interrupted = store.begin_run(sample_info());
  store.finish_run(failed, RunStatus::Failed, "DataError: data/x.wav: cannot decode");
  store.finish_run(interrupted, RunStatus::Interrupted, "interrupted by signal");

  RawDb db(path);
  CHECK(db.rows("SELECT id, status, error_message FROM runs WHERE ended_at IS NOT NULL ORDER BY id") ==
        std::vector<std::vector<std::string>>{
            {std::to_string(failed), "failed", "DataError: data/x.wav: cannot decode"},
            {std::to_string(interrupted), "interrupted", "interrupted by signal"}});
  CHECK(store.run(failed).error_message == "DataError: data/x.wav: cannot decode");

  // The CHECK constraint rejects any other status.
  CHECK(db.exec("UPDATE runs SET status = 'exploded' WHERE id = 1") != "ok");

  CHECK_THROWS_AS(store.finish_run(failed, RunStatus::Running), std::invalid_argument);
  CHECK_THROWS_AS(store.finish_run(9999, RunStatus::Finished), StoreError);
  CHECK_THROWS_WITH(store.run(9999), Catch::Contains(path) && Catch::Contains("9999"));
  CHECK(store.runs().size() == 2);
}

TEST_CASE("run status strings", "[run_store]") {
  for (auto s : {RunStatus::Running, RunStatus::Finished, RunStatus::Failed, RunStatus::Interrupted})
    CHECK(parse_run_status(to_string(s)) == s);
  CHECK(to_string(RunStatus::Interrupted) == "interrupted");
  CHECK_THROWS_AS(parse_run_status("done"), std::invalid_argument);
}

TEST_CASE("params are typed", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore store(path);
  const auto id = store.begin_run(sample_info());
  store.add_params(id, {param_number("trainer.lr", 1e-4),
                        param_integer("trainer.batch_size", 32),
                        param_bool("trainer.spec_augment", true),
                        param_text("trainer.optimizer", "adam"),
                        param_text("model.note", "0.00001"),  // a string that looks like a number
                        Param{"model.dropout", "0.1", 0.1}});

  RawDb db(path);
  CHECK(db.column("SELECT key FROM params WHERE value_num < 1e-3") == std::vector<std::string>{"trainer.lr"});
  CHECK(db.column("SELECT key FROM params WHERE value_num IS NULL ORDER BY key") ==
        std::vector<std::string>{"model.note", "trainer.optimizer"});
  CHECK(db.text("SELECT typeof(value_num) FROM params WHERE key = 'trainer.lr'") == "real");
  CHECK(db.text("SELECT value_text FROM params WHERE key = 'trainer.lr'") == "0.0001");
  CHECK(db.text("SELECT value_text || '=' || value_num FROM params WHERE key = 'trainer.spec_augment'") ==
        "true=1.0");
  CHECK(db.real("SELECT value_num FROM params WHERE key = 'trainer.batch_size'") == 32.0);

  // The same key again replaces the value; still one row.
  store.add_params(id, {param_number("trainer.lr", 3e-3), param_bool("trainer.spec_augment", false)});
  CHECK(db.integer("SELECT count(*) FROM params WHERE run_id = " + std::to_string(id)) == 6);
  CHECK(db.column("SELECT key FROM params WHERE value_num < 1e-3") ==
        std::vector<std::string>{"trainer.spec_augment"});

  const auto params = store.params(id);
  REQUIRE(params.size() == 6);
  CHECK(params[0].key == "model.dropout");  // ordered by key
  CHECK(params[1].key == "model.note");
  CHECK_FALSE(params[1].number.has_value());
  CHECK(params[1].text == "0.00001");
  CHECK(params[3].key == "trainer.lr");
  REQUIRE(params[3].number.has_value());
  CHECK(*params[3].number == Approx(3e-3));

  SECTION("params of an unknown run are rejected as a whole") {
    CHECK_THROWS_AS(store.add_params(4242, {param_number("a", 1), param_number("b", 2)}), StoreError);
    CHECK(db.integer("SELECT count(*) FROM params WHERE run_id = 4242") == 0);
  }
}

TEST_CASE("param helpers", "[run_store]") {
  CHECK(param_number("lr", 1e-4).text == "0.0001");
  CHECK(param_number("lr", 1e-10).text == "1e-10");
  CHECK(param_number("lr", 0.5).number == 0.5);
  CHECK_FALSE(param_number("x", std::numeric_limits<double>::quiet_NaN()).number.has_value());
  CHECK(param_integer("n", -3).text == "-3");
  CHECK(param_integer("n", -3).number == -3.0);
  CHECK(param_bool("b", false).text == "false");
  CHECK(param_bool("b", false).number == 0.0);
  CHECK_FALSE(param_text("s", "x").number.has_value());
}

TEST_CASE("metrics keep one row per run, key and step", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore store(path);
  const auto id = store.begin_run(sample_info());
  const double before = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

  store.log_metric(id, "train/loss", 1, 2.5);
  store.log_metric(id, "train/loss", 2, 2.0);
  store.log_metric(id, "train/loss", 1, 1.5);  // replaces step 1
  store.log_metrics(id, 2, {{"dev/cer", 0.4}, {"dev/loss", 1.9}});
  store.log_metrics(id, 4, {{"dev/cer", 0.3}, {"dev/loss", 1.7}});
  store.log_metrics(id, 4, {{"dev/cer", 0.25}});  // replaces
  store.log_metrics(id, 5, {});

  RawDb db(path);
  const std::string run = std::to_string(id);
  CHECK(db.integer("SELECT count(*) FROM metrics WHERE run_id = " + run) == 6);
  CHECK(db.integer("SELECT count(*) FROM (SELECT 1 FROM metrics GROUP BY run_id, key, step HAVING count(*) > 1)") == 0);
  CHECK(db.real("SELECT value FROM metrics WHERE key = 'train/loss' AND step = 1") == 1.5);
  CHECK(db.real("SELECT value FROM metrics WHERE key = 'dev/cer' AND step = 4") == 0.25);
  CHECK(db.real("SELECT min(wall_time) FROM metrics") >= before - 1.0);
  CHECK(db.rows("SELECT key, step, value FROM latest_metrics WHERE run_id = " + run + " ORDER BY key") ==
        std::vector<std::vector<std::string>>{{"dev/cer", "4", "0.25"}, {"dev/loss", "4", "1.7"}, {"train/loss", "2", "2.0"}});
  // A raw write of a duplicate (run, key, step) violates the primary key.
  CHECK(db.exec("INSERT INTO metrics VALUES (" + run + ", 'dev/cer', 4, 1.0, 0)") != "ok");

  const auto all = store.metrics(id);
  REQUIRE(all.size() == 6);
  CHECK(all[0].key == "dev/cer");
  CHECK(all[0].step == 2);
  CHECK(all[1].step == 4);
  CHECK(all[1].value == 0.25);
  CHECK(all[5].key == "train/loss");
  CHECK(all[5].step == 2);
  const auto loss = store.metrics(id, "train/loss");
  REQUIRE(loss.size() == 2);
  CHECK(loss[0].value == 1.5);
  CHECK(loss[0].wall_time >= before - 1.0);

  SECTION("NaN is stored as NULL and read back as NaN") {
    store.log_metric(id, "train/grad_norm", 3, std::numeric_limits<double>::quiet_NaN());
    CHECK(db.text("SELECT value IS NULL FROM metrics WHERE key = 'train/grad_norm'") == "1");
    const auto rows = store.metrics(id, "train/grad_norm");
    REQUIRE(rows.size() == 1);
    CHECK(std::isnan(rows[0].value));
  }
  SECTION("metrics of an unknown run are rejected") {
    CHECK_THROWS_WITH(store.log_metric(777, "train/loss", 1, 1.0), Catch::Contains(path) && Catch::Contains("FOREIGN KEY"));
    CHECK_THROWS_AS(store.log_metrics(777, 1, {{"a", 1.0}}), StoreError);
    CHECK(db.integer("SELECT count(*) FROM metrics WHERE run_id = 777") == 0);
  }
}

TEST_CASE("plugins are recorded with their sha256", "[run_store]") {
  TempDir dir;
  const std::string so = dir.file("libabc.so");
  const std::string abc_sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

  const std::string path = dir.file("wb.db");
  RunStore store(path);
  const auto id = store.begin_run(sample_info());
  store.add_plugin(id, {"speech_encoder", "conformer", "0.1.0", so, kConformerHash});
  store.add_plugin(id, {"text_encoder", "bpe", "0.2.0", "/x/libbpe.so", kBpeHash});
  store.add_plugin(id, {"speech_encoder", "conformer", "0.1.1", so, abc_sha});  // replaces

  RawDb db(path);
  CHECK(db.rows("SELECT kind, name, version, sha256 FROM plugins ORDER BY kind") ==
        std::vector<std::vector<std::string>>{{"speech_encoder", "conformer", "0.1.1", abc_sha},
                                              {"text_encoder", "bpe", "0.2.0", kBpeHash}});
  const auto plugins = store.plugins(id);
  REQUIRE(plugins.size() == 2);
  CHECK(plugins[0].path == so);
  CHECK(plugins[1].name == "bpe");
}

TEST_CASE("deleting a run cascades to its rows", "[run_store]") {
  TempDir dir;
  RunStore store(dir.file("wb.db"));
  const auto id = store.begin_run(sample_info());
  const auto other = store.begin_run(sample_info("other"));
  for (const auto run : {id, other}) {
    store.add_params(run, {param_number("trainer.lr", 1e-4)});
    store.log_metric(run, "train/loss", 1, 1.0);
    store.add_plugin(run, {"k", "n", "1", "p", "s"});
    store.add_tags(run, {{"paper", "slam"}});
    store.add_checkpoint(run, {1, "ckpt/step-1.pt", kCheckpointHash, "periodic", std::nullopt, std::nullopt, ""});
  }
  const std::string count_sql =
      "SELECT (SELECT count(*) FROM params) + (SELECT count(*) FROM metrics) + (SELECT count(*) FROM plugins) + "
      "(SELECT count(*) FROM tags) + (SELECT count(*) FROM checkpoints) AS n";
  CHECK(store.query_rows(count_sql).rows.at(0).at(0) == std::optional<std::string>("10"));
  store.query_rows("DELETE FROM runs WHERE id = " + std::to_string(id));
  const auto left = store.query_rows(count_sql);
  REQUIRE(left.rows.size() == 1);
  CHECK(left.rows[0][0] == std::optional<std::string>("5"));  // only the other run's
  CHECK(store.tags(id).empty());
  CHECK(store.checkpoints(id).empty());
  CHECK(store.tags(other).size() == 1);
  CHECK(store.checkpoints(other).size() == 1);
}

TEST_CASE("reopening the database keeps the data", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  std::int64_t id = 0;
  {
    RunStore store(path);
    id = store.begin_run(sample_info("keep"));
    store.add_params(id, {param_number("trainer.lr", 1e-4)});
    store.log_metric(id, "train/loss", 10, 0.5);
    store.add_plugin(id, {"k", "n", "1", "p", "s"});
    store.finish_run(id, RunStatus::Finished);
  }
  RunStore store(path);
  const auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].id == id);
  CHECK(runs[0].experiment_name == "keep");
  CHECK(runs[0].status == "finished");
  REQUIRE(store.params(id).size() == 1);
  CHECK(store.params(id)[0].number == 1e-4);
  REQUIRE(store.metrics(id).size() == 1);
  CHECK(store.metrics(id)[0].value == 0.5);
  CHECK(store.plugins(id).size() == 1);
  const auto next = store.begin_run(sample_info("keep"));
  CHECK(next > id);
}

TEST_CASE("several connections write to the same file", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore first(path);
  const auto a = first.begin_run(sample_info("a"));

  SECTION("a second RunStore writes while the first is open") {
    RunStore second(path);
    const auto b = second.begin_run(sample_info("b"));
    second.log_metric(b, "train/loss", 1, 1.0);
    first.log_metric(a, "train/loss", 1, 2.0);
    second.finish_run(b, RunStatus::Finished);
    CHECK(first.run(b).status == "finished");
    CHECK(second.metrics(a).size() == 1);
    CHECK(first.runs().size() == 2);
  }

  SECTION("a writer waits for another connection's write transaction (busy timeout)") {
    RawDb other(path);
    REQUIRE(other.exec("BEGIN IMMEDIATE; INSERT INTO metrics VALUES (" + std::to_string(a) + ", 'other', 1, 1, 0)") ==
            "ok");
    std::thread committer([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      other.exec("COMMIT");
    });
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_NOTHROW(first.log_metrics(a, 1, {{"train/loss", 1.0}, {"lr", 1e-4}}));
    const auto waited = std::chrono::steady_clock::now() - t0;
    committer.join();
    CHECK(waited >= std::chrono::milliseconds(200));
    CHECK(first.metrics(a).size() == 3);
  }

  SECTION("an open reader does not block a writer (WAL)") {
    RawDb reader(path);
    REQUIRE(reader.exec("BEGIN; SELECT count(*) FROM runs;") == "ok");
    const auto t0 = std::chrono::steady_clock::now();
    first.log_metric(a, "train/loss", 1, 1.0);
    first.finish_run(a, RunStatus::Finished);
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    CHECK(reader.text("SELECT status FROM runs") == "running");  // the reader keeps its snapshot
    reader.exec("COMMIT");
    CHECK(reader.text("SELECT status FROM runs") == "finished");
  }

  SECTION("threads with one RunStore each") {
    constexpr int kThreads = 4;
    constexpr int kSteps = 100;
    std::atomic<int> failures{0};
    std::mutex error_mutex;
    std::string first_error;  // Catch2 macros are not thread-safe: collect, then check on this thread
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        try {
          RunStore mine(path);
          for (int step = 0; step < kSteps; ++step) {
            mine.log_metric(a, "thread" + std::to_string(t), step, step);
            if (step % 10 == 0) mine.log_metrics(a, step, {{"batch" + std::to_string(t), 1.0}});
          }
        } catch (const std::exception& e) {
          std::lock_guard lock(error_mutex);
          if (first_error.empty()) first_error = e.what();
          ++failures;
        }
      });
    }
    for (auto& th : threads) th.join();
    INFO(first_error);
    CHECK(failures.load() == 0);
    CHECK(first.metrics(a).size() == static_cast<std::size_t>(kThreads * (kSteps + kSteps / 10)));
  }

  SECTION("one RunStore shared by threads") {
    std::vector<std::thread> threads;
    for (int t = 0; t < 3; ++t)
      threads.emplace_back([&, t] {
        for (int step = 0; step < 50; ++step) first.log_metric(a, "shared" + std::to_string(t), step, 1.0);
      });
    for (auto& th : threads) th.join();
    CHECK(first.metrics(a).size() == 150);
  }
}

TEST_CASE("unusable paths throw StoreError naming the path", "[run_store]") {
  TempDir dir;
  SECTION("a directory") {
    const std::string path = dir.file("a_directory");
    fs::create_directory(path);
    CHECK_THROWS_AS(RunStore(path), StoreError);
    CHECK_THROWS_WITH(RunStore(path), Catch::Contains(path));
  }
  SECTION("a parent that is a regular file") {
    const std::string file = dir.file("plain");
    { std::ofstream(file) << "x"; }
    CHECK_THROWS_WITH(RunStore(file + "/wb.db"), Catch::Contains(file));
  }
  SECTION("a file that is not a database") {
    const std::string path = dir.file("garbage.db");
    { std::ofstream(path) << std::string(4096, 'g'); }
    CHECK_THROWS_WITH(RunStore(path), Catch::Contains(path) && Catch::Contains("not a database"));
  }
  SECTION("a database with a newer schema version") {
    const std::string path = dir.file("future.db");
    { RunStore store(path); }
    { RawDb(path).exec("PRAGMA user_version = 99"); }
    CHECK_THROWS_AS(RunStore(path), StoreError);
    CHECK_THROWS_WITH(RunStore(path), Catch::Contains(path) && Catch::Contains("newer") &&
                                          Catch::Contains("version 99") &&
                                          Catch::Contains("(" + std::to_string(kSchemaVersion) + ")"));
    CHECK(RawDb(path).integer("PRAGMA user_version") == 99);  // refused, not touched
  }
  SECTION("the empty path") { CHECK_THROWS_AS(RunStore(""), StoreError); }
  static_assert(std::is_base_of_v<std::runtime_error, StoreError>);
}

TEST_CASE("RunStore is movable", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore a(path);
  const auto id = a.begin_run(sample_info());
  RunStore b = std::move(a);
  CHECK(b.path() == path);
  CHECK(b.run(id).id == id);
  CHECK(a.path().empty());  // NOLINT(bugprone-use-after-move): documented moved-from state
  CHECK_THROWS_AS(a.runs(), StoreError);
  RunStore c(dir.file("other.db"));
  c = std::move(b);
  CHECK(c.path() == path);
  CHECK(c.runs().size() == 1);
}

TEST_CASE("query_rows runs arbitrary SQL", "[run_store]") {
  RunStore store(":memory:");
  const auto result = store.query_rows(
      "-- a comment\nCREATE TEMP TABLE t(a, b);\nINSERT INTO t VALUES (1, NULL), (2.5, 'x');\n"
      "SELECT a, b AS bee FROM t ORDER BY a;\n-- trailing comment\n");
  CHECK(result.columns == std::vector<std::string>{"a", "bee"});
  REQUIRE(result.rows.size() == 2);
  CHECK(result.rows[0][0] == std::optional<std::string>("1"));
  CHECK_FALSE(result.rows[0][1].has_value());
  CHECK(result.rows[1][1] == std::optional<std::string>("x"));
  CHECK_THROWS_WITH(store.query_rows("SELECT nope FROM nowhere"), Catch::Contains("no such table"));
  CHECK(store.query_rows("").columns.empty());
}

TEST_CASE("canned queries run against a populated database", "[run_store][queries]") {
  TempDir dir;
  const char* keep = std::getenv("WORKBENCH_KEEP_TEST_DB");
  const std::string path = keep != nullptr && *keep != '\0' ? std::string(keep) : dir.file("workbench.db");
  if (keep != nullptr && *keep != '\0') {
    for (const char* suffix : {"", "-wal", "-shm"}) fs::remove(path + suffix);
  }

  // Three runs of one experiment (lr ablation) after an unrelated older run.
  RunStore store(path);
  const auto old = store.begin_run(sample_info("older_experiment", 1));
  store.add_params(old, {param_number("trainer.lr", 1e-3)});
  store.finish_run(old, RunStatus::Finished);

  std::vector<std::int64_t> ids;
  const double lrs[] = {1e-3, 3e-4, 3e-4};
  for (int i = 0; i < 3; ++i) {
    const auto id = store.begin_run(sample_info("ablate_lr", 100 + i));
    ids.push_back(id);
    store.add_params(id, {param_number("trainer.lr", lrs[i]), param_integer("trainer.batch_size", 16),
                          param_integer("model.speech_encoder.d_model", 144),
                          param_text("trainer.optimizer", i == 2 ? "sgd" : "adam"),
                          param_bool("trainer.spec_augment", true)});
    if (i == 1) store.add_params(id, {param_number("trainer.grad_clip", 5.0)});
    if (i == 2) store.add_params(id, {param_number("trainer.warmup", 500)});
    for (int step = 1; step <= 3; ++step) {
      store.log_metrics(id, step * 100, {{"train/loss", 3.0 / step + i}, {"lr", lrs[i]}});
      store.log_metrics(id, step * 100, {{"dev/cer", 0.5 / step + 0.01 * i}, {"dev/loss", 2.0 / step}});
    }
    store.add_plugin(id, {"speech_encoder", "conformer", "0.1.0", "/lib/libconformer.so", kConformerHash});
    store.add_plugin(id, {"text_encoder", "bpe", "0.1.0", "/lib/libbpe.so", kBpeHash});
    store.finish_run(id, i == 1 ? RunStatus::Failed : RunStatus::Finished, i == 1 ? "diverged" : "");
  }

  const fs::path queries = fs::path(WORKBENCH_SOURCE_DIR) / "results" / "queries";
  std::set<std::string> found;
  for (const auto& entry : fs::directory_iterator(queries)) {
    if (entry.path().extension() != ".sql") continue;
    const std::string name = entry.path().filename().string();
    found.insert(name);
    INFO(name);
    const std::string sql = read_file(entry.path());
    CHECK(sql.rfind("-- ", 0) == 0);  // starts with a comment saying what it answers
    // Parses and runs over a raw connection as the sqlite3 CLI would, and through query_rows.
    RawDb raw(path);
    CHECK(raw.exec(sql) == "ok");
    QueryResult result;
    REQUIRE_NOTHROW(result = store.query_rows(sql));
    CHECK_FALSE(result.columns.empty());
    // No fine-tuning, classification, translation or sweep runs here: their own test cases below, and
    // sweep.sql in tests/test_sweep.cpp (on a real sweep's store).
    if (name == "finetune.sql" || name == "confusion.sql" || name == "translation.sql" || name == "examples.sql" ||
        name == "sweep.sql")
      continue;
    CHECK_FALSE(result.rows.empty());

    if (name == "runs.sql") {
      REQUIRE(result.rows.size() == 4);
      CHECK(cell(result, 0, "id") == std::to_string(ids[2]));  // newest first
      CHECK(cell(result, 0, "status") == "finished");
      CHECK(std::stod(*cell(result, 0, "final_dev_cer")) == Approx(0.5 / 3 + 0.02));
      CHECK(std::stod(*cell(result, 0, "best_dev_cer")) == Approx(0.5 / 3 + 0.02));
      CHECK(cell(result, 0, "duration_s").has_value());
      CHECK_FALSE(cell(result, 0, "parent").has_value());
      CHECK(cell(result, 1, "status") == "failed");
      CHECK_FALSE(cell(result, 3, "final_dev_cer").has_value());  // the older run logged no dev CER
    } else if (name == "metrics_of_last_run.sql") {
      CHECK(result.rows.size() == store.metrics(ids[2]).size());
      CHECK(cell(result, 0, "run_id") == std::to_string(ids[2]));
      CHECK(cell(result, 0, "key") == "dev/cer");
      CHECK(cell(result, 0, "step") == "100");
      CHECK(std::stod(*cell(result, 0, "elapsed_s")) > -5.0);
    } else if (name == "ablation.sql") {
      REQUIRE(result.rows.size() == 2);  // finished runs of ablate_lr only
      CHECK(cell(result, 0, "id") == std::to_string(ids[0]));  // sorted by dev CER
      CHECK(cell(result, 0, "lr") == "0.001");
      CHECK(cell(result, 1, "lr") == "0.0003");
      CHECK(cell(result, 0, "d_model") == "144");
      CHECK(std::stod(*cell(result, 0, "dev_cer")) == Approx(0.5 / 3));
      CHECK(cell(result, 0, "last_step") == "300");
    } else if (name == "params_diff.sql") {
      // ids[1] vs ids[2]: same lr, grad_clip only in ids[1], different optimizer, warmup only in ids[2].
      REQUIRE(result.rows.size() == 3);
      CHECK(cell(result, 0, "key") == "trainer.grad_clip");
      CHECK(cell(result, 0, "value_a") == "5");
      CHECK_FALSE(cell(result, 0, "value_b").has_value());
      CHECK(cell(result, 1, "key") == "trainer.optimizer");
      CHECK(cell(result, 1, "run_a") == std::to_string(ids[1]));
      CHECK(cell(result, 1, "run_b") == std::to_string(ids[2]));
      CHECK(cell(result, 1, "value_a") == "adam");
      CHECK(cell(result, 1, "value_b") == "sgd");
      CHECK(cell(result, 2, "key") == "trainer.warmup");
      CHECK_FALSE(cell(result, 2, "value_a").has_value());
      CHECK(cell(result, 2, "value_b") == "500");
    } else if (name == "plugins_of_last_run.sql") {
      REQUIRE(result.rows.size() == 2);
      CHECK(cell(result, 0, "name") == "conformer");
      CHECK(cell(result, 0, "sha256") == kConformerHash);
    }
  }
  for (const char* required :
       {"runs.sql", "metrics_of_last_run.sql", "ablation.sql", "params_diff.sql", "plugins_of_last_run.sql",
        "finetune.sql", "confusion.sql", "translation.sql", "examples.sql", "sweep.sql"})
    CHECK(found.count(required) == 1);
}

TEST_CASE("finetune.sql and confusion.sql: fine-tuning runs beside their start, a matrix per true class",
          "[run_store][queries]") {
  TempDir dir;
  RunStore store(dir.file("workbench.db"));
  const auto pre = store.begin_run(sample_info("mslam-tiny", 1));
  store.log_metrics(pre, 100, {{"dev/cer", 0.9}});
  store.finish_run(pre, RunStatus::Finished);
  RunInfo child = sample_info("finetune-asr-ctc", 1);
  child.parent_run = pre;
  const auto from_pre = store.begin_run(child);
  store.log_metrics(from_pre, 0, {{"dev/cer", 0.95}, {"train/loss", 3.0}});
  store.log_metrics(from_pre, 300, {{"dev/cer", 0.40}, {"dev/cer/en", 0.3}});
  store.finish_run(from_pre, RunStatus::Finished);
  const auto scratch = store.begin_run(sample_info("finetune-asr-ctc", 1));
  store.log_metrics(scratch, 300, {{"dev/cer", 0.70}});
  store.finish_run(scratch, RunStatus::Finished);
  const auto failed = store.begin_run(sample_info("finetune-langid", 1));
  store.log_metrics(failed, 0, {{"dev/langid/accuracy", 0.2}});
  store.finish_run(failed, RunStatus::Failed, "diverged");

  const auto langid = store.begin_run(sample_info("finetune-langid", 1));
  store.log_metrics(langid, 0, {{"dev/langid/confusion/en/en", 1}, {"dev/langid/confusion/en/fr", 3}});
  store.log_metrics(langid, 300, {{"dev/langid/accuracy", 0.8}, {"dev/langid/confusion/en/en", 3},
                                  {"dev/langid/confusion/en/fr", 1}, {"dev/langid/confusion/fr/en", 0},
                                  {"dev/langid/confusion/fr/fr", 4}});
  store.finish_run(langid, RunStatus::Finished);
  const fs::path queries = fs::path(WORKBENCH_SOURCE_DIR) / "results" / "queries";
  auto confusion = store.query_rows(read_file(queries / "confusion.sql"));
  REQUIRE(confusion.rows.size() == 2);  // the last evaluation's matrix, a row per true class
  CHECK(cell(confusion, 0, "run") == std::to_string(langid));
  CHECK(cell(confusion, 0, "task") == "dev/langid");
  CHECK(cell(confusion, 0, "true_class") == "en");
  CHECK(cell(confusion, 0, "predicted") == "en 3  fr 1");
  CHECK(cell(confusion, 1, "predicted") == "en 0  fr 4");
  CHECK(cell(confusion, 1, "total") == "4");

  auto result = store.query_rows(read_file(queries / "finetune.sql"));
  REQUIRE(result.rows.size() == 3);  // the failed run and the breakdowns are left out (no ST run yet)
  CHECK(cell(result, 0, "task") == "asr-ctc");
  CHECK(cell(result, 0, "metric") == "cer");
  CHECK(cell(result, 0, "init") == "random init");
  CHECK(cell(result, 0, "final") == "0.7");
  CHECK(cell(result, 1, "init") == "run " + std::to_string(pre));
  CHECK(cell(result, 1, "run") == std::to_string(from_pre));
  CHECK(cell(result, 1, "final") == "0.4");
  CHECK(cell(result, 1, "step") == "300");
  CHECK(cell(result, 2, "task") == "langid");
  CHECK(cell(result, 2, "metric") == "langid/accuracy");
}

// ---- schema migrations -------------------------------------------------------------------------

TEST_CASE("a version-1 database is migrated in place", "[run_store][migration]") {
  TempDir dir;
  const std::string path = copy_v1_database(dir);
  // The version-1 rows as the version-1 columns show them, read before any migration.
  const std::string runs_v1 =
      "SELECT id, experiment_name, experiment_path, config_toml, config_hash, status, started_at, ended_at, host, "
      "git_revision, seed, torch_version, device, error_message, kind FROM runs ORDER BY id";
  const std::string params_v1 = "SELECT run_id, key, value_text, value_num FROM params ORDER BY run_id, key";
  const std::string metrics_v1 = "SELECT run_id, key, step, value, wall_time FROM metrics ORDER BY run_id, key, step";
  const std::string plugins_v1 = "SELECT run_id, kind, name, version, path, sha256 FROM plugins ORDER BY run_id, kind";
  std::vector<std::vector<std::string>> runs, params, metrics, plugins;
  {
    RawDb db(path);
    REQUIRE(db.integer("PRAGMA user_version") == 1);
    REQUIRE(db.integer("SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'parent_run_id'") == 0);
    runs = db.rows(runs_v1);
    params = db.rows(params_v1);
    metrics = db.rows(metrics_v1);
    plugins = db.rows(plugins_v1);
  }
  REQUIRE(runs.size() == 2);

  RunStore store(path);
  RawDb db(path);
  CHECK(db.integer("PRAGMA user_version") == kSchemaVersion);
  CHECK(db.rows(runs_v1) == runs);
  CHECK(db.rows(params_v1) == params);
  CHECK(db.rows(metrics_v1) == metrics);
  CHECK(db.rows(plugins_v1) == plugins);
  CHECK(db.column("SELECT parent_run_id FROM runs ORDER BY id") == std::vector<std::string>{"NULL", "NULL"});
  CHECK(db.integer("SELECT count(*) FROM run_parents") == 0);
  CHECK(db.integer("SELECT count(*) FROM tags") + db.integer("SELECT count(*) FROM checkpoints") == 0);

  // What tests/data/run_store_v1_generator.cpp wrote, through the current API.
  const RunRow train = store.run(1);
  CHECK(train.experiment_name == "quickstart");
  CHECK(train.kind == "train");
  CHECK(train.status == "finished");
  CHECK(train.host == "v1host");
  CHECK(train.seed == 1);
  CHECK(train.config_toml.find("lr = 0.002") != std::string::npos);
  CHECK_FALSE(train.parent_run_id.has_value());
  const auto train_params = store.params(1);
  const auto param = [&](const std::string& key) {
    auto it = std::find_if(train_params.begin(), train_params.end(), [&](const Param& p) { return p.key == key; });
    if (it == train_params.end()) throw std::runtime_error("no param " + key);
    return *it;
  };
  CHECK(param("trainer.lr").number == 0.002);
  CHECK(param("model.speech_encoder.plugin").text == "conformer");
  CHECK_FALSE(param("model.speech_encoder.plugin").number.has_value());
  const auto cer = store.metrics(1, "dev/cer");
  REQUIRE(cer.size() == 3);
  CHECK(cer[0].step == 0);
  CHECK(cer[2].step == 40);
  CHECK(cer[2].value == 0.5);
  CHECK(store.metrics(1, "train/loss").size() == 3);
  const auto train_plugins = store.plugins(1);
  REQUIRE(train_plugins.size() == 2);
  CHECK(train_plugins[0].name == "conformer");
  CHECK(train_plugins[1].name == "ctc");
  const RunRow dry = store.run(2);
  CHECK(dry.kind == "dry-run");
  CHECK(dry.status == "failed");
  CHECK(dry.error_message.find("d_model") != std::string::npos);

  // The new tables work for the old runs.
  store.add_tags(1, {{"baseline", "yes"}});
  store.add_checkpoint(1, {40, "checkpoints/run-1/final.pt", kCheckpointHash, "final", std::nullopt, std::nullopt, ""});
  CHECK(store.tags(1) == std::vector<std::pair<std::string, std::string>>{{"baseline", "yes"}});
  REQUIRE(store.checkpoints(1).size() == 1);
  CHECK(store.checkpoints(1)[0].step == 40);
  const auto child_info = [] {
    RunInfo info = sample_info("quickstart_finetune");
    info.parent_run = 1;
    return info;
  }();
  const auto child = store.begin_run(child_info);
  CHECK(db.rows("SELECT child_id, parent_id, parent_name FROM run_parents") ==
        std::vector<std::vector<std::string>>{{std::to_string(child), "1", "quickstart"}});
  const auto listing = store.recent_runs(10);
  REQUIRE(listing.size() == 3);
  CHECK(listing[2].id == 1);
  CHECK(listing[2].headline_key.empty());  // version-1 runs have no derived.headline_metric
  CHECK_FALSE(listing[2].headline_value.has_value());

  SECTION("opening it again changes nothing") {
    const auto schema = schema_of(db);
    const auto all_runs = db.rows("SELECT * FROM runs ORDER BY id");
    { RunStore again(path); }
    CHECK(db.integer("PRAGMA user_version") == kSchemaVersion);
    CHECK(schema_of(db) == schema);
    CHECK(db.rows("SELECT * FROM runs ORDER BY id") == all_runs);
    CHECK(db.rows(params_v1) == params);
  }
  SECTION("a current database opens while another connection holds the write lock") {
    // Nothing to migrate, so no write transaction, so no wait for the busy timeout.
    RawDb writer(path);
    REQUIRE(writer.exec("BEGIN IMMEDIATE; INSERT INTO tags VALUES (2, 'held', '')") == "ok");
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_NOTHROW(RunStore(path));
    CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(2));
    writer.exec("ROLLBACK");
  }
}

TEST_CASE("a fresh database and a migrated version-1 database have the same schema", "[run_store][migration]") {
  TempDir dir;
  const std::string fresh = dir.file("fresh.db");
  const std::string migrated = copy_v1_database(dir);
  { RunStore a(fresh); }
  { RunStore b(migrated); }
  RawDb fresh_db(fresh);
  RawDb migrated_db(migrated);
  const auto a = schema_of(fresh_db);
  const auto b = schema_of(migrated_db);
  CHECK(a == b);
  // The comparison sees what it should: every table's columns, e.g. the migrated-in column.
  CHECK(std::count(a.begin(), a.end(), "foreign key runs.parent_run_id -> runs.id on delete SET NULL") == 1);
  CHECK(std::count_if(a.begin(), a.end(), [](const std::string& line) { return line.rfind("column checkpoints.", 0) == 0; }) ==
        8);
  CHECK(fresh_db.integer("PRAGMA user_version") == migrated_db.integer("PRAGMA user_version"));
}

TEST_CASE("a migration that fails leaves the database at its old version", "[run_store][migration]") {
  TempDir dir;
  const std::string path = copy_v1_database(dir);
  // A table of the researcher's own that migration 2 collides with.
  REQUIRE(RawDb(path).exec("CREATE TABLE checkpoints (mine TEXT)") == "ok");
  CHECK_THROWS_WITH(RunStore(path), Catch::Contains(path) && Catch::Contains("from version 1 to 2") &&
                                        Catch::Contains("002_parents_tags_checkpoints.sql") &&
                                        Catch::Contains("already exists"));
  RawDb db(path);
  CHECK(db.integer("PRAGMA user_version") == 1);
  // Nothing of migration 2 stayed, though its first statements ran before the one that failed.
  CHECK(db.integer("SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'parent_run_id'") == 0);
  CHECK(db.integer("SELECT count(*) FROM sqlite_master WHERE name IN ('tags', 'runs_parent', 'run_parents')") == 0);
  CHECK(db.integer("SELECT count(*) FROM runs") == 2);
  // Once the obstacle is gone the migration goes through.
  REQUIRE(db.exec("DROP TABLE checkpoints") == "ok");
  CHECK_NOTHROW(RunStore(path));
  CHECK(db.integer("PRAGMA user_version") == kSchemaVersion);
}

TEST_CASE("several connections opening an old or a new database at once migrate it once", "[run_store][migration]") {
  TempDir dir;
  const bool from_v1 = GENERATE(true, false);
  for (int round = 0; round < 5; ++round) {
    const std::string name = (from_v1 ? "v1_" : "new_") + std::to_string(round) + ".db";
    const std::string path = from_v1 ? copy_v1_database(dir, name) : dir.file(name);
    constexpr int kThreads = 4;
    std::atomic<int> ready{0};
    std::mutex error_mutex;
    std::vector<std::string> errors;  // Catch2 macros are not thread-safe: collect, then check
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        ++ready;
        while (ready.load() < kThreads) std::this_thread::yield();
        try {
          RunStore store(path);
          RunInfo info = sample_info("thread" + std::to_string(t));
          info.tags = {{"thread", std::to_string(t)}};
          store.begin_run(info);
        } catch (const std::exception& e) {
          std::lock_guard lock(error_mutex);
          errors.emplace_back(e.what());
        }
      });
    }
    for (auto& th : threads) th.join();
    INFO((from_v1 ? "version-1 file, round " : "new file, round ")
         << round << ": " << (errors.empty() ? std::string() : errors.front()));
    CHECK(errors.empty());
    RawDb db(path);
    CHECK(db.integer("PRAGMA user_version") == kSchemaVersion);
    CHECK(db.text("PRAGMA journal_mode") == "wal");
    CHECK(db.integer("SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'parent_run_id'") == 1);
    CHECK(db.integer("SELECT count(*) FROM runs") == (from_v1 ? 2 : 0) + kThreads);
    CHECK(db.integer("SELECT count(*) FROM tags WHERE key = 'thread'") == kThreads);
  }
}

// ---- parents, tags, checkpoints, listings ------------------------------------------------------

TEST_CASE("a run records its parent run", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore store(path);
  RunInfo pretrain_info = sample_info("slam_pretrain");
  pretrain_info.config_toml = "[objectives.w2v_bert]\nplugin = \"w2v_bert\"\n";
  const auto pretrain = store.begin_run(pretrain_info);
  RunInfo finetune_info = sample_info("slam_finetune");
  finetune_info.parent_run = pretrain;
  const auto finetune = store.begin_run(finetune_info);
  const auto unrelated = store.begin_run(sample_info("unrelated"));

  CHECK(store.run(finetune).parent_run_id == pretrain);
  CHECK_FALSE(store.run(pretrain).parent_run_id.has_value());
  CHECK(store.runs().at(1).parent_run_id == pretrain);
  RawDb db(path);
  CHECK(db.integer("SELECT parent_run_id FROM runs WHERE id = " + std::to_string(finetune)) == pretrain);
  CHECK(db.rows("SELECT child_id, child_name, parent_id, parent_name, parent_config_toml FROM run_parents") ==
        std::vector<std::vector<std::string>>{{std::to_string(finetune), "slam_finetune", std::to_string(pretrain),
                                               "slam_pretrain", pretrain_info.config_toml}});
  CHECK(db.text("SELECT parent_run_id FROM run_summary WHERE id = " + std::to_string(finetune)) ==
        std::to_string(pretrain));
  CHECK_FALSE(store.run(unrelated).parent_run_id.has_value());

  SECTION("an unknown parent is refused, naming it, and no run is recorded") {
    RunInfo orphan = sample_info("orphan");
    orphan.parent_run = 4242;
    orphan.tags = {{"a", "b"}};
    CHECK_THROWS_AS(store.begin_run(orphan), StoreError);
    CHECK_THROWS_WITH(store.begin_run(orphan), Catch::Contains(path) && Catch::Contains("4242") &&
                                                   Catch::Contains("parent"));
    CHECK(db.integer("SELECT count(*) FROM runs") == 3);
    CHECK(db.integer("SELECT count(*) FROM tags") == 0);
  }
  SECTION("deleting the parent keeps the child and forgets the link") {
    store.query_rows("DELETE FROM runs WHERE id = " + std::to_string(pretrain));
    CHECK_FALSE(store.run(finetune).parent_run_id.has_value());
    CHECK(db.integer("SELECT count(*) FROM run_parents") == 0);
    CHECK(db.integer("SELECT count(*) FROM runs") == 2);
  }
}

TEST_CASE("tags are recorded with the run and added later", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore store(path);
  RunInfo info = sample_info();
  info.tags = {{"paper", "mslam"}, {"ablation", "lr"}, {"paper", "slam"}, {"note", ""}};
  const auto id = store.begin_run(info);
  const auto other = store.begin_run(sample_info("other"));

  using Tags = std::vector<std::pair<std::string, std::string>>;
  CHECK(store.tags(id) == Tags{{"ablation", "lr"}, {"note", ""}, {"paper", "slam"}});  // by key; last value wins
  CHECK(store.tags(other).empty());

  store.add_tags(id, {{"ablation", "warmup"}, {"seed_group", "3"}});
  CHECK(store.tags(id) == Tags{{"ablation", "warmup"}, {"note", ""}, {"paper", "slam"}, {"seed_group", "3"}});
  store.add_tags(id, {});
  RawDb db(path);
  CHECK(db.integer("SELECT count(*) FROM tags WHERE run_id = " + std::to_string(id)) == 4);
  CHECK(db.column("SELECT run_id FROM tags WHERE key = 'ablation' AND value = 'warmup'") ==
        std::vector<std::string>{std::to_string(id)});
  CHECK(db.text("SELECT value FROM tags WHERE key = 'note'") == "");
  // A raw insert without a value gets the empty default, not NULL.
  REQUIRE(db.exec("INSERT INTO tags (run_id, key) VALUES (" + std::to_string(other) + ", 'bare')") == "ok");
  CHECK(store.tags(other) == Tags{{"bare", ""}});

  CHECK_THROWS_WITH(store.add_tags(777, {{"a", "1"}, {"b", "2"}}), Catch::Contains(path) && Catch::Contains("FOREIGN KEY"));
  CHECK(db.integer("SELECT count(*) FROM tags WHERE run_id = 777") == 0);
}

TEST_CASE("checkpoints are added, replaced, removed and listed", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore store(path);
  const auto id = store.begin_run(sample_info());
  const auto other = store.begin_run(sample_info("other"));

  store.add_checkpoint(id, {300, "ckpt/step-300.pt", kCheckpointHash, "periodic", std::nullopt, std::nullopt, ""});
  store.add_checkpoint(id, {100, "ckpt/step-100.pt", kCheckpointHash, "periodic", std::nullopt, std::nullopt, ""});
  store.add_checkpoint(id, {200, "ckpt/step-200.pt", kCheckpointHash, "periodic", std::nullopt, std::nullopt, ""});
  store.add_checkpoint(id, {200, "ckpt/best.pt", kConformerHash, "best", std::string("dev/cer"), 0.25,
                            "2024-05-01T12:34:56.789Z"});
  store.add_checkpoint(other, {100, "ckpt/step-100.pt", kBpeHash, "interrupted", std::nullopt, std::nullopt, ""});

  auto list = store.checkpoints(id);
  REQUIRE(list.size() == 4);
  CHECK(list[0].step == 100);
  CHECK(list[1].path == "ckpt/best.pt");  // step 200: by path
  CHECK(list[2].path == "ckpt/step-200.pt");
  CHECK(list[3].step == 300);
  CHECK(list[1].kind == "best");
  CHECK(list[1].sha256 == kConformerHash);
  CHECK(list[1].metric_key == std::optional<std::string>("dev/cer"));
  CHECK(list[1].metric_value == 0.25);
  CHECK(list[1].created_at == "2024-05-01T12:34:56.789Z");  // given: kept
  CHECK_FALSE(list[0].metric_key.has_value());
  CHECK_FALSE(list[0].metric_value.has_value());
  CHECK(matches_pattern(list[0].created_at, "dddd-dd-ddTdd:dd:dd.dddZ"));  // empty: now, as runs.started_at
  RawDb db(path);
  CHECK(db.text("SELECT julianday(created_at) IS NOT NULL FROM checkpoints LIMIT 1") == "1");
  CHECK(db.text("SELECT metric_key IS NULL AND metric_value IS NULL FROM checkpoints WHERE path = 'ckpt/step-100.pt' "
                "AND run_id = " + std::to_string(id)) == "1");

  SECTION("the same path again replaces the record") {
    store.add_checkpoint(id, {400, "ckpt/best.pt", kBpeHash, "best", std::string("dev/cer"), 0.2, ""});
    list = store.checkpoints(id);
    REQUIRE(list.size() == 4);
    CHECK(list[3].path == "ckpt/best.pt");
    CHECK(list[3].step == 400);
    CHECK(list[3].sha256 == kBpeHash);
    CHECK(list[3].metric_value == 0.2);
    CHECK(list[3].created_at != "2024-05-01T12:34:56.789Z");
  }
  SECTION("removing keeps the others, and only the named run's") {
    store.remove_checkpoint(id, "ckpt/step-100.pt");
    store.remove_checkpoint(id, "ckpt/step-200.pt");
    list = store.checkpoints(id);
    REQUIRE(list.size() == 2);
    CHECK(list[0].path == "ckpt/best.pt");
    CHECK(list[1].path == "ckpt/step-300.pt");
    REQUIRE(store.checkpoints(other).size() == 1);  // same path, other run
    CHECK(store.checkpoints(other)[0].kind == "interrupted");
    CHECK_NOTHROW(store.remove_checkpoint(id, "ckpt/never-written.pt"));
    CHECK(store.checkpoints(id).size() == 2);
  }
  SECTION("a kind outside the four and an unknown run are refused") {
    CHECK_THROWS_WITH(store.add_checkpoint(id, {1, "x.pt", kCheckpointHash, "latest", std::nullopt, std::nullopt, ""}),
                      Catch::Contains(path) && Catch::Contains("CHECK constraint") && Catch::Contains("latest"));
    CHECK_THROWS_WITH(store.add_checkpoint(777, {1, "x.pt", kCheckpointHash, "final", std::nullopt, std::nullopt, ""}),
                      Catch::Contains("FOREIGN KEY"));
    CHECK(db.integer("SELECT count(*) FROM checkpoints WHERE path = 'x.pt'") == 0);
    for (const char* kind : {"periodic", "best", "final", "interrupted"})
      CHECK_NOTHROW(store.add_checkpoint(id, {5, std::string("k_") + kind, kCheckpointHash, kind, std::nullopt,
                                              std::nullopt, ""}));
  }
}

TEST_CASE("recent_runs lists the newest runs with duration and headline metric", "[run_store]") {
  TempDir dir;
  const std::string path = dir.file("wb.db");
  RunStore store(path);
  RawDb db(path);
  const auto set_times = [&](std::int64_t run, const std::string& start, const std::string& end) {
    REQUIRE(db.exec("UPDATE runs SET started_at = '" + start + "', ended_at = '" + end + "' WHERE id = " +
                    std::to_string(run)) == "ok");
  };

  // 1: finished, headline dev/cer logged out of step order.
  const auto cer_run = store.begin_run(sample_info("cer_run"));
  store.add_params(cer_run, {param_text("derived.headline_metric", "dev/cer")});
  store.log_metric(cer_run, "dev/cer", 40, 0.5);
  store.log_metric(cer_run, "dev/cer", 100, 0.3);
  store.log_metric(cer_run, "dev/cer", 60, 0.4);
  store.log_metric(cer_run, "train/loss", 200, 9.0);  // not the headline, later step
  store.finish_run(cer_run, RunStatus::Finished);
  set_times(cer_run, "2024-05-01T12:00:00.000Z", "2024-05-01T12:01:30.500Z");
  // 2: no headline param.
  const auto plain = store.begin_run(sample_info("plain"));
  store.log_metric(plain, "dev/cer", 10, 0.9);
  store.finish_run(plain, RunStatus::Failed, "boom");
  // 3: headline named but never logged, child of 1.
  RunInfo child_info = sample_info("child");
  child_info.parent_run = cer_run;
  const auto child = store.begin_run(child_info);
  store.add_params(child, {param_text("derived.headline_metric", "dev/wer")});
  store.log_metric(child, "dev/cer", 10, 0.2);
  // 4: the headline's last value is NaN; still running.
  RunInfo dry_info = sample_info("nan_run");
  dry_info.kind = "dry-run";
  const auto nan_run = store.begin_run(dry_info);
  store.add_params(nan_run, {param_text("derived.headline_metric", "train/loss")});
  store.log_metric(nan_run, "train/loss", 1, 2.0);
  store.log_metric(nan_run, "train/loss", 2, std::numeric_limits<double>::quiet_NaN());

  const auto all = store.recent_runs(100);
  REQUIRE(all.size() == 4);
  CHECK(all[0].id == nan_run);  // newest first
  CHECK(all[1].id == child);
  CHECK(all[2].id == plain);
  CHECK(all[3].id == cer_run);

  CHECK(all[3].experiment_name == "cer_run");
  CHECK(all[3].kind == "train");
  CHECK(all[3].status == "finished");
  CHECK(all[3].started_at == "2024-05-01T12:00:00.000Z");
  REQUIRE(all[3].duration_s.has_value());
  CHECK(*all[3].duration_s == Approx(90.5).margin(1e-3));
  CHECK(all[3].headline_key == "dev/cer");
  CHECK(all[3].headline_value == 0.3);  // at the highest step, not the last written or the best
  CHECK_FALSE(all[3].parent_run_id.has_value());

  CHECK(all[2].status == "failed");
  CHECK(all[2].headline_key.empty());
  CHECK_FALSE(all[2].headline_value.has_value());
  CHECK(all[2].duration_s.has_value());

  CHECK(all[1].headline_key == "dev/wer");
  CHECK_FALSE(all[1].headline_value.has_value());
  CHECK(all[1].parent_run_id == cer_run);
  CHECK(all[1].status == "running");
  CHECK_FALSE(all[1].duration_s.has_value());  // running

  CHECK(all[0].kind == "dry-run");
  CHECK(all[0].headline_key == "train/loss");
  REQUIRE(all[0].headline_value.has_value());
  CHECK(std::isnan(*all[0].headline_value));

  const auto two = store.recent_runs(2);
  REQUIRE(two.size() == 2);
  CHECK(two[0].id == nan_run);
  CHECK(two[1].id == child);
  CHECK(store.recent_runs(0).empty());
  CHECK(store.recent_runs(std::numeric_limits<std::size_t>::max()).size() == 4);
  CHECK(RunStore(dir.file("empty.db")).recent_runs(10).empty());
}

TEST_CASE("decoded examples are added per step, replaced, listed and deleted with their run", "[run_store]") {
  TempDir dir;
  RunStore store(dir.file("wb.db"));
  const auto id = store.begin_run(sample_info());
  store.add_examples(id, 100, {{"dev/st/fr-en", "fr/b", "ref b", "hyp b"}, {"dev/st/fr-en", "fr/a", "ref a", "hyp a"}});
  store.add_examples(id, 200, {{"dev/st/fr-en", "fr/a", "ref a", "better a"}});
  store.add_examples(id, 200, {{"dev/st/fr-en", "fr/a", "ref a", "best a"}});  // the same step again: replaced
  auto last = store.examples(id);  // the last step with examples
  REQUIRE(last.size() == 1);
  CHECK(last[0].hypothesis == "best a");
  auto first = store.examples(id, 100);
  REQUIRE(first.size() == 2);
  CHECK(first[0].utt_id == "fr/a");  // ordered by task, then id
  CHECK(first[1].reference == "ref b");
  CHECK(store.examples(id, 300).empty());
  CHECK_THROWS_AS(store.add_examples(id + 7, 1, {{"dev/st/fr-en", "x", "r", "h"}}), StoreError);
  store.add_examples(id, 1, {});  // nothing to add: no transaction, no error
  store.query_rows("DELETE FROM runs WHERE id = " + std::to_string(id));
  CHECK(store.query_rows("SELECT count(*) FROM examples").rows.at(0).at(0) == std::optional<std::string>("0"));
}

TEST_CASE("translation.sql and examples.sql: ST runs by start and input, the newest run's last examples",
          "[run_store][queries]") {
  TempDir dir;
  RunStore store(dir.file("workbench.db"));
  const auto pre = store.begin_run(sample_info("mslam-tiny", 1));
  store.finish_run(pre, RunStatus::Finished);
  RunInfo child = sample_info("finetune-st", 1);
  child.parent_run = pre;
  child.tags = {{"init", "mslam"}};
  const auto speech = store.begin_run(child);
  store.log_metrics(speech, 400, {{"dev/st/bleu", 1.0}, {"dev/mt_zeroshot/bleu", 0.5}});
  store.log_metrics(speech, 1200, {{"dev/st/bleu", 2.345}, {"dev/st/chrf", 20.0}, {"dev/mt_zeroshot/bleu", 0.25},
                                   {"dev/mt_zeroshot/chrf", 10.0}, {"dev/st/bleu/fr-en", 3.0}});
  store.add_examples(speech, 400, {{"dev/st/fr-en", "fr/a", "ref", "early"}});
  store.add_examples(speech, 1200, {{"dev/st/fr-en", "fr/b", "ref b", "hyp b"}, {"dev/mt_zeroshot/fr-en", "fr/b", "ref b", "text b"}});
  store.finish_run(speech, RunStatus::Finished);
  const auto multimodal = store.begin_run(child);
  store.log_metrics(multimodal, 1200, {{"dev/st/bleu", 3.0}, {"dev/mt/bleu", 4.0}, {"dev/mt/chrf", 30.0}});
  store.finish_run(multimodal, RunStatus::Finished);
  const auto scratch = store.begin_run(sample_info("finetune-st", 1));
  store.log_metrics(scratch, 1200, {{"dev/st/bleu", 0.5}});
  store.finish_run(scratch, RunStatus::Finished);
  const auto failed = store.begin_run(sample_info("finetune-st", 1));
  store.finish_run(failed, RunStatus::Failed, "diverged");

  const fs::path queries = fs::path(WORKBENCH_SOURCE_DIR) / "results" / "queries";
  auto st = store.query_rows(read_file(queries / "translation.sql"));
  REQUIRE(st.rows.size() == 3);
  CHECK(st.columns == std::vector<std::string>{"run", "init", "init_tag", "trained_on", "step", "st_bleu", "st_chrf",
                                               "text_bleu", "text_chrf"});
  CHECK(cell(st, 0, "init") == "run " + std::to_string(pre));
  CHECK(cell(st, 0, "init_tag") == "mslam");
  CHECK(cell(st, 0, "trained_on") == "speech");
  CHECK(cell(st, 0, "step") == "1200");
  CHECK(cell(st, 0, "st_bleu") == "2.35");
  CHECK(cell(st, 0, "text_bleu") == "0.25");
  CHECK(cell(st, 1, "trained_on") == "speech+text");
  CHECK(cell(st, 1, "text_bleu") == "4.0");
  CHECK(cell(st, 2, "init") == "random init");
  CHECK(cell(st, 2, "text_bleu") == std::nullopt);

  auto ex = store.query_rows(read_file(queries / "examples.sql"));
  REQUIRE(ex.rows.size() == 2);  // the newest run with examples, at its last step
  CHECK(cell(ex, 0, "run") == std::to_string(speech));
  CHECK(cell(ex, 0, "step") == "1200");
  CHECK(cell(ex, 0, "task") == "dev/mt_zeroshot/fr-en");
  CHECK(cell(ex, 0, "hypothesis") == "text b");
  CHECK(cell(ex, 1, "reference") == "ref b");

  auto ft = store.query_rows(read_file(queries / "finetune.sql"));
  CHECK(ft.rows.size() == 6);  // BLEU and chrF from speech + zero-shot BLEU; BLEU + text BLEU; BLEU
}
