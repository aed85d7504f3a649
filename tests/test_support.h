#pragma once
// Helpers the end-to-end style tests share: a temporary folder, whole-file I/O, running the built
// `workbench` executable, and the message of an expected exception. Include before catch.hpp; failures
// are exceptions, which Catch2 reports as the test's failure.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <vector>

namespace workbench::testing {

/// A fresh folder under the system temp dir, removed at the end of the scope unless WORKBENCH_KEEP_E2E is
/// set (then its path is printed, for inspection).
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "wbtest_") {
    path = std::filesystem::temp_directory_path() /
           (prefix + std::to_string(::getpid()) + "_" + std::to_string(std::random_device{}()));
    std::filesystem::create_directories(path);
  }
  ~TempDir() {
    if (std::getenv("WORKBENCH_KEEP_E2E")) {
      std::fprintf(stderr, "kept %s\n", path.c_str());
      return;
    }
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path / name).string(); }
};

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

/// Writes `text` to `path`, creating its folders.
inline void write_file(const std::string& path, const std::string& text) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::ofstream out(path, std::ios::binary);
  out << text;
}

/// `s` as one single-quoted word for /bin/sh.
inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

struct CommandResult {
  int exit_code = -1;
  std::string out, err;
};

/// Runs the built `workbench <args>` with stdout and stderr captured to files in `dir`.
inline CommandResult run_workbench(const TempDir& dir, const std::vector<std::string>& args) {
  static int counter = 0;
  const std::string tag = std::to_string(++counter);
  const std::string out_path = dir.file("stdout" + tag + ".txt"), err_path = dir.file("stderr" + tag + ".txt");
  std::string cmd = shell_quote(WORKBENCH_BINARY_DIR "/bin/workbench");
  for (const auto& a : args) cmd += " " + shell_quote(a);
  cmd += " > " + shell_quote(out_path) + " 2> " + shell_quote(err_path) + " < /dev/null";
  const int status = std::system(cmd.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_file(out_path);
  r.err = read_file(err_path);
  return r;
}

/// The message of the `E` that `f` throws; throws std::runtime_error when `f` throws nothing or
/// something else.
template <typename E, typename F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("expected a ") + typeid(E).name() + ", got: " + e.what());
  }
  throw std::runtime_error(std::string("expected a ") + typeid(E).name() + ", nothing was thrown");
}

}  // namespace workbench::testing
