// The plugin SDK as a third party sees it: `cmake --install` of this build, an out-of-tree plugin built
// against the installed package with find_package(workbench) + workbench_add_plugin, a `workbench run`
// that uses it (checked in the run store), `new-plugin` output that builds and loads, `--describe`, and
// the loader's error for a plugin whose dependency is missing.
//
// These tests run CMake and the compiler, so they take a minute or two on 2 cores.
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>

#include "workbench/error.h"
#include "workbench/registry.h"
#include "workbench/run_store.h"
#include "workbench/sha256.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

struct Shell {
  int code;
  std::string output;
};

// Runs a shell command, capturing stdout and stderr together.
Shell sh(const std::string& command) {
  std::string out;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  int status = pclose(p);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() / ("wbtest_sdk_" + std::to_string(::getpid()) + "_" +
                                        std::to_string(std::random_device{}()));
    fs::create_directories(path);
  }
  ~TempDir() {
    if (std::getenv("WORKBENCH_KEEP_SDK")) return;
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

bool have_asterisk() { return fs::exists("/usr/share/asterisk/sounds/en") && fs::exists("/usr/share/asterisk/sounds/es"); }

// Installs this build once per test process.
const fs::path& installed_sdk() {
  static TempDir dir;
  static fs::path prefix = [] {
    fs::path p = dir.path / "sdk";
    auto r = sh("cmake --install '" WORKBENCH_BINARY_DIR "' --prefix '" + p.string() + "'");
    INFO(r.output);
    REQUIRE(r.code == 0);
    return p;
  }();
  return prefix;
}

// Configures and builds an out-of-tree project against the installed SDK. No build type (no -O, no -g):
// what is tested is that the project builds, loads and runs, and an optimised LibTorch file costs the
// suite twice the time to compile.
void build_against_sdk(const fs::path& source, const fs::path& build) {
  auto configure = sh("cmake -S '" + source.string() + "' -B '" + build.string() + "' -DCMAKE_PREFIX_PATH='" +
                      installed_sdk().string() + "' -DCMAKE_BUILD_TYPE=");
  INFO(configure.output);
  REQUIRE(configure.code == 0);
  auto compile = sh("cmake --build '" + build.string() + "' -j2");
  INFO(compile.output);
  REQUIRE(compile.code == 0);
}

// Runs `command` (a shell line ending in `workbench run ... --db <db>`), checks that it exits 0 and that
// the store then holds one finished run; returns that run's id.
std::int64_t run_once(const std::string& command, const fs::path& db) {
  auto run = sh(command);
  INFO(run.output);
  REQUIRE(run.code == 0);
  workbench::results::RunStore store(db.string());
  auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].status == "finished");
  return runs[0].id;
}

}  // namespace

TEST_CASE("sdk: the install holds the executable, headers, core library, plugins and CMake package", "[sdk]") {
  const fs::path& p = installed_sdk();
  CHECK(fs::exists(p / "bin/workbench"));
  CHECK(fs::exists(p / "include/workbench/plugin.h"));
  CHECK(fs::exists(p / "include/workbench/loss.h"));
  CHECK(fs::exists(p / "include/workbench/capabilities.h"));
  // Engine internals stay private: a plugin author never sees them, so they can change freely.
  for (const char* internal : {"experiment.h", "trainer.h", "runner.h", "progress.h", "run_store.h", "registry.h",
                               "data.h", "trainer_options.h"})
    CHECK_FALSE(fs::exists(p / "include/workbench" / internal));
  CHECK(fs::exists(p / "lib/libworkbench_core.so"));
  CHECK(fs::exists(p / "lib/cmake/workbench/workbenchConfig.cmake"));
  CHECK(fs::exists(p / "lib/cmake/workbench/WorkbenchPlugin.cmake"));
  for (const char* plugin : {"conformer", "ctc", "asterisk", "manifest", "asr"})
    CHECK(fs::exists(p / "lib/workbench/plugins" / (std::string(plugin) + ".so")));
  // The installed executable finds its installed plugins by itself.
  auto r = sh("env -u WORKBENCH_PLUGIN_PATH '" + (p / "bin/workbench").string() + "' plugins");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Contains((p / "lib/workbench/plugins/conformer.so").string()));
}

TEST_CASE("sdk: an out-of-tree loss built against the installed SDK runs and is recorded", "[sdk]") {
  if (!have_asterisk()) {
    WARN("Asterisk prompts not installed (scripts/install-deps.sh); skipping");
    return;
  }
  TempDir tmp;
  const fs::path build = tmp.path / "third_party";
  build_against_sdk(WORKBENCH_SOURCE_DIR "/examples/third_party_loss", build);
  const fs::path so = build / "speech_text_infonce.so";
  REQUIRE(fs::exists(so));

  const fs::path db = tmp.path / "runs.db";
  const auto id = run_once("cd '" + tmp.path.string() + "' && WORKBENCH_PLUGIN_PATH='" + build.string() + "' '" +
                               (installed_sdk() / "bin/workbench").string() + "' run '" WORKBENCH_SOURCE_DIR
                               "/examples/third_party_loss/experiment.toml' --db '" + db.string() +
                               "' --set trainer.progress=none",
                           db);
  workbench::results::RunStore store(db.string());
  bool found = false;
  for (const auto& p : store.plugins(id)) {
    if (p.name != "speech_text_infonce") continue;
    found = true;
    CHECK(p.kind == "loss");
    CHECK(p.version == "0.1.0");
    CHECK(fs::equivalent(p.path, so));
    CHECK(p.sha256 == workbench::sha256_file(so.string()));
  }
  CHECK(found);
  auto recall = store.metrics(id, "align/recall_at_1");
  CHECK(recall.size() == 6);
  auto loss = store.metrics(id, "align/loss");
  REQUIRE(!loss.empty());
  CHECK(std::isfinite(loss.back().value));
}

TEST_CASE("sdk: new-plugin writes a project that builds, loads and runs", "[sdk]") {
  TempDir tmp;
  const fs::path dir = tmp.path / "my_lid";
  const std::string wb = (installed_sdk() / "bin/workbench").string();
  auto made = sh("'" + wb + "' new-plugin loss my_lid --dir '" + dir.string() + "'");
  INFO(made.output);
  REQUIRE(made.code == 0);
  CHECK(fs::exists(dir / "CMakeLists.txt"));
  CHECK(fs::exists(dir / "my_lid.cpp"));
  CHECK(fs::exists(dir / "experiment.toml"));
  // It names the prefix it runs from, not a placeholder.
  CHECK_THAT(made.output, Contains("-DCMAKE_PREFIX_PATH=" + fs::absolute(installed_sdk()).lexically_normal().string()));
  // It refuses to overwrite, and refuses a name that is no identifier.
  CHECK(sh("'" + wb + "' new-plugin loss my_lid --dir '" + dir.string() + "'").code != 0);
  auto bad = sh("'" + wb + "' new-plugin loss 9lives --dir '" + (tmp.path / "x").string() + "'");
  CHECK(bad.code != 0);
  CHECK_THAT(bad.output, Contains("not a valid name"));

  build_against_sdk(dir, dir / "build");
  auto listed = sh("'" + wb + "' plugins --path '" + (dir / "build").string() + "' --describe my_lid");
  INFO(listed.output);
  REQUIRE(listed.code == 0);
  CHECK_THAT(listed.output, Contains("loss plugin 'my_lid' 0.1.0"));
  CHECK_THAT(listed.output, Contains("languages"));

  if (!have_asterisk()) {
    WARN("Asterisk prompts not installed; not running the generated experiment");
    return;
  }
  const fs::path db = tmp.path / "runs.db";
  const auto id = run_once("cd '" + dir.string() + "' && '" + wb + "' run experiment.toml --db '" + db.string() +
                               "' --set trainer.progress=none --set 'data.train.languages=[\"en\", \"es\"]' "
                               "--set 'objectives.my_lid.languages=[\"en\", \"es\"]'",
                           db);
  CHECK(workbench::results::RunStore(db.string()).metrics(id, "my_lid/accuracy").size() == 3);  // trainer.steps = 3, logged every step
}

namespace {

// new-plugin's starter of `kind`, built against the SDK, listed by `plugins --describe`, and its
// experiment run (recording `metric`).
void check_starter(const std::string& kind, const std::string& name, const std::string& metric) {
  TempDir tmp;
  const std::string wb = (installed_sdk() / "bin/workbench").string();
  const fs::path dir = tmp.path / name;
  auto made = sh("'" + wb + "' new-plugin " + kind + " " + name + " --dir '" + dir.string() + "'");
  INFO(made.output);
  REQUIRE(made.code == 0);
  build_against_sdk(dir, dir / "build");
  auto listed = sh("'" + wb + "' plugins --path '" + (dir / "build").string() + "' --describe " + name);
  INFO(listed.output);
  REQUIRE(listed.code == 0);
  CHECK_THAT(listed.output, Contains(kind + " plugin '" + name + "' 0.1.0"));
  if (!have_asterisk()) {
    WARN("Asterisk prompts not installed; not running the generated experiment");
    return;
  }
  const fs::path db = tmp.path / (name + ".db");
  const auto id =
      run_once("cd '" + dir.string() + "' && '" + wb + "' run experiment.toml --db '" + db.string() +
                   "' --set trainer.progress=none",
               db);
  CHECK_FALSE(workbench::results::RunStore(db.string()).metrics(id, metric).empty());
}

}  // namespace

// One case per kind, so that ctest runs them side by side (each compiles a LibTorch file).
TEST_CASE("sdk: new-plugin's encoder starter builds, loads and runs", "[sdk]") {
  check_starter("encoder", "my_lstm", "ctc/loss");
}

TEST_CASE("sdk: new-plugin's text_embedding starter builds, loads and runs", "[sdk]") {
  check_starter("text_embedding", "my_bytes", "span_bert/loss");
}

TEST_CASE("sdk: new-plugin's dataset starter builds, loads and runs", "[sdk]") {
  check_starter("dataset", "my_prompts", "ctc/loss");
}

TEST_CASE("sdk: new-plugin's evaluator starter builds, loads and runs", "[sdk]") {
  check_starter("evaluator", "my_blanks", "dev/blank_share");
}

TEST_CASE("sdk: new-plugin refuses a kind it has no starter for, listing the kinds", "[sdk]") {
  TempDir tmp;
  const std::string wb = WORKBENCH_BINARY_DIR "/bin/workbench";
  auto unknown = sh("'" + wb + "' new-plugin sampler x --dir '" + (tmp.path / "x").string() + "'");
  CHECK(unknown.code != 0);
  CHECK_THAT(unknown.output, Contains("loss, encoder, text_embedding, dataset, evaluator"));
}

TEST_CASE("sdk: plugins --describe prints each option's type, default and documentation", "[sdk]") {
  auto r = sh("'" WORKBENCH_BINARY_DIR "/bin/workbench' plugins --describe conformer");
  INFO(r.output);
  REQUIRE(r.code == 0);
  CHECK_THAT(r.output, Contains("encoder plugin 'conformer'"));
  CHECK_THAT(r.output, Contains("sha256:"));
  CHECK_THAT(r.output, Contains("d_model"));
  CHECK_THAT(r.output, Contains("integer"));
  CHECK_THAT(r.output, Contains("144"));
  CHECK_THAT(r.output, Contains("model dimension D"));
  CHECK_THAT(r.output, Contains("one of: batch, group, layer"));
  auto missing = sh("'" WORKBENCH_BINARY_DIR "/bin/workbench' plugins --describe no_such_plugin");
  CHECK(missing.code != 0);
  CHECK_THAT(missing.output, Contains("no_such_plugin"));
}

TEST_CASE("sdk: a plugin whose dependency is missing is refused with dlopen's message", "[sdk]") {
  workbench::Registry registry;
  try {
    registry.load_file(WBTEST_MISSING_DEPENDENCY_PATH);
    FAIL("loading succeeded");
  } catch (const workbench::PluginError& e) {
    CHECK_THAT(e.what(), Contains(WBTEST_MISSING_DEPENDENCY_PATH));
    CHECK_THAT(e.what(), Contains("libwbtest_dependency.so"));
    CHECK_THAT(e.what(), Contains("cannot open shared object file"));
  }
}
