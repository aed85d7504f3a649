#pragma once
// Helpers for the tests that run the real `workbench` executable against a run store: one cell of a
// query, a run started in the background, and waiting until its store shows something. Include before
// catch.hpp, as test_support.h; failures are exceptions, which Catch2 reports as the test's failure.
#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <torch/serialize/input-archive.h>
#include <torch/types.h>

#include "workbench/run_store.h"

namespace workbench::testing {

/// The one cell of a query that returns exactly one row of one column; throws std::runtime_error naming
/// the query otherwise.
inline std::optional<std::string> scalar(const results::RunStore& store, const std::string& sql) {
  auto q = store.query_rows(sql);
  if (q.rows.size() != 1 || q.rows[0].size() != 1)
    throw std::runtime_error("expected one cell from: " + sql + " (got " + std::to_string(q.rows.size()) + " rows)");
  return q.rows[0][0];
}

/// Starts `workbench <args...>` in the background, its stderr going to `err`; returns its pid.
inline pid_t start_workbench(const std::vector<std::string>& args, const std::string& err) {
  std::vector<std::string> argv_strings = {"workbench"};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  const pid_t child = ::fork();
  if (child == 0) {
    std::freopen(err.c_str(), "w", stderr);
    std::vector<char*> argv;
    for (auto& a : argv_strings) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(WORKBENCH_BINARY_DIR "/bin/workbench", argv.data());
    std::_Exit(127);
  }
  return child;
}

/// Starts `workbench run <exp> --db <db> <extra...>` in the background, its stderr going to `err`.
inline pid_t start_run(const std::string& exp, const std::string& db, const std::string& err,
                       const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {"run", exp, "--db", db};
  args.insert(args.end(), extra.begin(), extra.end());
  return start_workbench(args, err);
}

/// Waits up to 60 s until the first run in `db` satisfies `ready` (the store may not exist yet).
inline bool wait_for_run(const std::string& db,
                         const std::function<bool(const results::RunStore&, std::int64_t run)>& ready) {
  for (int i = 0; i < 600; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    if (!std::filesystem::exists(db)) continue;
    try {
      results::RunStore peek(db);
      auto runs = peek.runs();
      if (!runs.empty() && ready(peek, runs[0].id)) return true;
    } catch (const std::exception&) {
      // a store being created or migrated by the run: look again
    }
  }
  return false;
}

/// The step a checkpoint file says it was written at; throws (c10::Error) when the file does not load.
inline std::int64_t checkpoint_step(const std::string& path) {
  torch::serialize::InputArchive archive;
  archive.load_from(path);
  torch::Tensor step;
  archive.read("step", step);
  return step.item<std::int64_t>();
}

}  // namespace workbench::testing
