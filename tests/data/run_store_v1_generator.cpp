// Made tests/data/run_store_v1.db: a run store written by the schema-version-1 run store, for the
// migration test in tests/test_run_store.cpp ("a version-1 database is migrated in place").
//
// Documentation only: it is compiled against the run store of git revision
// 33d7f23699d187f91a1f03b0108acf98fd464aa2 (the last one with kSchemaVersion = 1), not against the
// current tree, and tests/CMakeLists.txt does not build it (it globs tests/test_*.cpp only). It was
// built and run with exactly these commands, from the repository root (Debian 12: g++ 12, SQLite 3.40.1,
// fmt 9.1):
//
//   mkdir -p /tmp/v1/include/workbench /tmp/v1/src /tmp/v1/gen
//   git show 33d7f23:results/include/workbench/run_store.h > /tmp/v1/include/workbench/run_store.h
//   git show 33d7f23:results/src/run_store.cpp > /tmp/v1/src/run_store.cpp
//   git show 33d7f23:results/schema.sql > /tmp/v1/schema.sql
//   git show 33d7f23:results/src/schema.cpp.in > /tmp/v1/src/schema.cpp.in
//   python3 -c "t=open('/tmp/v1/src/schema.cpp.in').read(); s=open('/tmp/v1/schema.sql').read(); open('/tmp/v1/gen/workbench_results_schema.cpp','w').write(t.replace('@WORKBENCH_RESULTS_SCHEMA_SQL@', s))"
//   g++ -std=c++17 -O0 -Wall -Wextra -I /tmp/v1/include tests/data/run_store_v1_generator.cpp /tmp/v1/src/run_store.cpp /tmp/v1/gen/workbench_results_schema.cpp -lsqlite3 -lfmt -lcrypto -o /tmp/v1/generator
//   rm -f tests/data/run_store_v1.db && /tmp/v1/generator tests/data/run_store_v1.db
//
// The calls follow core/app/run_command.cpp of that revision: begin_run, add_params (the flattened
// config, then runtime.* and derived.*), add_plugin per plugin used, log_metrics per step, finish_run.
// The test checks the values written here; change both together if this file is ever re-run.
#include <sqlite3.h>

#include <cstdio>
#include <stdexcept>
#include <string>

#include "workbench/run_store.h"

using namespace workbench::results;

namespace {

constexpr const char* kConfig =
    "[experiment]\nname = \"quickstart\"\nseed = 1\n\n"
    "[model.speech_encoder]\nplugin = \"conformer\"\nd_model = 240\nlayers = 4\n\n"
    "[objectives.ctc]\nplugin = \"ctc\"\ndata = \"train\"\nweight = 1.0\n\n"
    "[trainer]\nlr = 0.002\nsteps = 40\n";

RunInfo info(const std::string& kind) {
  RunInfo i;
  i.experiment_name = "quickstart";
  i.experiment_path = "experiments/quickstart.toml";
  i.config_toml = kConfig;
  i.config_hash = sha256_text(kConfig);
  i.host = "v1host";
  i.git_revision = "33d7f23";
  i.seed = 1;
  i.torch_version = "1.13.1";
  i.device = "cpu";
  i.kind = kind;
  return i;
}

// One file, no -wal/-shm beside it, compact: what is checked into git.
void make_single_file(const char* path) {
  sqlite3* db = nullptr;
  if (sqlite3_open(path, &db) != SQLITE_OK) throw std::runtime_error(sqlite3_errmsg(db));
  for (const char* sql : {"PRAGMA wal_checkpoint(TRUNCATE)", "PRAGMA journal_mode = DELETE", "VACUUM"}) {
    char* message = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &message) != SQLITE_OK)
      throw std::runtime_error(std::string(sql) + ": " + (message != nullptr ? message : "?"));
  }
  sqlite3_close(db);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT.db\n", argv[0]);
    return 2;
  }
  {
    RunStore store(argv[1]);

    const auto train = store.begin_run(info("train"));
    store.add_params(train, {param_text("experiment.name", "quickstart"), param_integer("experiment.seed", 1),
                             param_text("model.speech_encoder.plugin", "conformer"),
                             param_integer("model.speech_encoder.d_model", 240),
                             param_integer("model.speech_encoder.layers", 4),
                             param_text("objectives.ctc.plugin", "ctc"), param_number("objectives.ctc.weight", 1.0),
                             param_number("trainer.lr", 0.002), param_integer("trainer.steps", 40),
                             param_bool("trainer.sortagrad", true), param_integer("runtime.threads", 2),
                             param_text("runtime.blas", "openblas")});
    store.add_plugin(train, {"encoder", "conformer", "0.3.0", "/opt/workbench/plugins/libconformer.so",
                             sha256_text("libconformer.so")});
    store.add_plugin(train, {"loss", "ctc", "0.2.0", "/opt/workbench/plugins/libctc.so", sha256_text("libctc.so")});
    store.add_params(train, {param_integer("derived.parameters.model", 5400000),
                             param_integer("derived.vocabulary_size", 97)});
    const double loss[] = {4.5, 3.25, 2.5};
    const double cer[] = {1.0, 0.75, 0.5};
    for (int i = 0; i < 3; ++i) {
      store.log_metrics(train, i * 20, {{"train/loss", loss[i]}, {"lr", 0.002}});
      store.log_metrics(train, i * 20, {{"dev/cer", cer[i]}});
    }
    store.add_params(train, {param_text("derived.checkpoint", "checkpoints/run-1/final.pt"),
                             param_integer("derived.steps_done", 40)});
    store.finish_run(train, RunStatus::Finished);

    const auto dry = store.begin_run(info("dry-run"));
    store.add_params(dry, {param_text("model.speech_encoder.plugin", "conformer"), param_number("trainer.lr", 0.002)});
    store.finish_run(dry, RunStatus::Failed, "ConfigError: [model.speech_encoder] d_model: must be a multiple of heads");
  }
  make_single_file(argv[1]);
  std::printf("wrote %s\n", argv[1]);
  return 0;
}
