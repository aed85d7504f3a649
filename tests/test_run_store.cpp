// Tests of the run store (results/): behaviour checked through real SQL on temporary database files,
// read back over a separate raw SQLite connection where possible.
//
// Set WORKBENCH_KEEP_TEST_DB=/some/path.db to keep the database the canned-query test populates, e.g.
// to try results/queries/*.sql on it with the sqlite3 CLI.
#include <catch2/catch.hpp>

#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
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

RunInfo sample_info(const std::string& experiment = "ctc_baseline", std::int64_t seed = 7) {
  RunInfo info;
  info.experiment_name = experiment;
  info.experiment_path = "experiments/" + experiment + ".toml";
  info.config_toml = "[trainer]\nlr = 0.0001\n";
  info.config_hash = sha256_text(info.config_toml);
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
  for (const char* t : {"metrics", "params", "plugins", "runs"})
    CHECK(std::count(tables.begin(), tables.end(), t) == 1);
  const auto views = db.column("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name");
  CHECK(views == std::vector<std::string>{"latest_metrics", "run_summary"});
  CHECK(db.text("SELECT group_concat(name) FROM pragma_index_info('metrics_run_key')") == "run_id,key");
  CHECK(db.text("SELECT group_concat(name) FROM pragma_index_info('params_key_num')") == "key,value_num");
  CHECK(db.integer("PRAGMA user_version") == kSchemaVersion);
  CHECK(db.text("PRAGMA journal_mode") == "wal");
  // Foreign keys with cascade from every child table.
  for (const char* t : {"params", "metrics", "plugins"}) {
    INFO(t);
    CHECK(db.text(std::string("SELECT \"table\" || ':' || on_delete FROM pragma_foreign_key_list('") + t + "')") ==
          "runs:CASCADE");
  }

  SECTION("the schema is idempotent and reopening does not change it") {
    const std::string before = db.text("SELECT group_concat(sql, ';') FROM sqlite_master");
    { RunStore again(path); }
    CHECK(db.exec(std::string(schema_sql())) == "ok");
    CHECK(db.text("SELECT group_concat(sql, ';') FROM sqlite_master") == before);
  }
}

TEST_CASE("the embedded schema is schema.sql", "[run_store]") {
  const std::string on_disk = read_file(fs::path(WORKBENCH_SOURCE_DIR) / "results" / "schema.sql");
  CHECK(std::string(schema_sql()) == on_disk);
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
  CHECK(db.text("SELECT config_hash" + where) == sha256_text(info.config_toml));
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
  { std::ofstream(so, std::ios::binary) << "abc"; }
  const std::string abc_sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
  CHECK(sha256_file(so) == abc_sha);
  CHECK(sha256_text("abc") == abc_sha);
  CHECK(sha256_text("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  {  // more than one read buffer
    std::string big(200000, 'x');
    std::ofstream(dir.file("big.bin"), std::ios::binary) << big;
    CHECK(sha256_file(dir.file("big.bin")) == sha256_text(big));
  }
  CHECK_THROWS_WITH(sha256_file(dir.file("missing.so")), Catch::Contains("missing.so"));
  CHECK_THROWS_AS(sha256_file(dir.path().string()), std::runtime_error);

  const std::string path = dir.file("wb.db");
  RunStore store(path);
  const auto id = store.begin_run(sample_info());
  store.add_plugin(id, {"speech_encoder", "conformer", "0.1.0", so, sha256_file(so)});
  store.add_plugin(id, {"text_encoder", "bpe", "0.2.0", "/x/libbpe.so", sha256_text("bpe")});
  store.add_plugin(id, {"speech_encoder", "conformer", "0.1.1", so, abc_sha});  // replaces

  RawDb db(path);
  CHECK(db.rows("SELECT kind, name, version, sha256 FROM plugins ORDER BY kind") ==
        std::vector<std::vector<std::string>>{{"speech_encoder", "conformer", "0.1.1", abc_sha},
                                              {"text_encoder", "bpe", "0.2.0", sha256_text("bpe")}});
  const auto plugins = store.plugins(id);
  REQUIRE(plugins.size() == 2);
  CHECK(plugins[0].path == so);
  CHECK(plugins[1].name == "bpe");
}

TEST_CASE("deleting a run cascades to its rows", "[run_store]") {
  TempDir dir;
  RunStore store(dir.file("wb.db"));
  const auto id = store.begin_run(sample_info());
  store.add_params(id, {param_number("trainer.lr", 1e-4)});
  store.log_metric(id, "train/loss", 1, 1.0);
  store.add_plugin(id, {"k", "n", "1", "p", "s"});
  store.query_rows("DELETE FROM runs WHERE id = " + std::to_string(id));
  const auto left = store.query_rows(
      "SELECT (SELECT count(*) FROM params) + (SELECT count(*) FROM metrics) + (SELECT count(*) FROM plugins) AS n");
  REQUIRE(left.rows.size() == 1);
  CHECK(left.rows[0][0] == std::optional<std::string>("0"));
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
    { RawDb(path).exec("PRAGMA user_version = 2"); }
    CHECK_THROWS_WITH(RunStore(path), Catch::Contains(path) && Catch::Contains("newer"));
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
    store.add_plugin(id, {"speech_encoder", "conformer", "0.1.0", "/lib/libconformer.so", sha256_text("conformer")});
    store.add_plugin(id, {"text_encoder", "bpe", "0.1.0", "/lib/libbpe.so", sha256_text("bpe")});
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
    CHECK_FALSE(result.rows.empty());

    if (name == "runs.sql") {
      REQUIRE(result.rows.size() == 4);
      CHECK(cell(result, 0, "id") == std::to_string(ids[2]));  // newest first
      CHECK(cell(result, 0, "status") == "finished");
      CHECK(std::stod(*cell(result, 0, "final_dev_cer")) == Approx(0.5 / 3 + 0.02));
      CHECK(std::stod(*cell(result, 0, "best_dev_cer")) == Approx(0.5 / 3 + 0.02));
      CHECK(cell(result, 0, "duration_s").has_value());
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
      CHECK(cell(result, 0, "sha256") == sha256_text("conformer"));
    }
  }
  for (const char* required :
       {"runs.sql", "metrics_of_last_run.sql", "ablation.sql", "params_diff.sql", "plugins_of_last_run.sql"})
    CHECK(found.count(required) == 1);
}
