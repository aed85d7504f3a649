// Data-parallel training on c10d's Gloo backend: the sharded batchers, then real ranks on loopback
// started by `workbench run --nproc 2`, against one process with the doubled batch.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <torch/serialize/input-archive.h>
#include <torch/types.h>

#include "test_support.h"
#include "run_support.h"
#include "tone_manifest.h"
#include "workbench/data.h"
#include "workbench/run_store.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::testing;
using results::RunStore;
using Catch::Matchers::Contains;

namespace {

PreparedData speech_data(int n) {
  PreparedData d;
  d.name = "train";
  d.kind = BatchKind::Speech;
  for (int i = 0; i < n; ++i) {
    d.features.push_back(torch::full({10 + 7 * ((i * 5) % n), 4}, static_cast<float>(i)));
    d.tokens.emplace_back();
    d.ids.push_back("u" + std::to_string(i));
    d.langs.push_back("zz");
    d.texts.push_back("");
  }
  return d;
}

std::string tiny_experiment(const std::string& manifest, int max_batch, int steps, const TempDir& dir) {
  // Group norm and no dropout: nothing in the step depends on which rows share a rank, so one process
  // with the whole batch is the reference the ranks must reproduce. adam_eps 1e-5, not 1e-9: the
  // attention's key bias has a gradient of exactly zero (softmax ignores a shift shared by all keys), so
  // what it gets is rounding noise, which Adam at eps 1e-9 turns into steps of +-lr either way.
  return "[data.train]\nplugin = \"manifest\"\npath = \"" + manifest +
         "\"\nbatch_seconds = 1000.0\nmax_batch = " + std::to_string(max_batch) +
         "\n\n[data.dev]\nplugin = \"manifest\"\npath = \"" + manifest +
         "\"\nshuffle = false\n"
         "\n[model.speech_encoder]\nplugin = \"conformer\"\nd_model = 32\nheads = 2\nlayers = 1\nffn_dim = 64\n"
         "kernel_size = 7\nsubsampling_channels = 8\nconv_norm = \"group\"\ndropout = 0.0\n"
         "\n[objectives.ctc]\nplugin = \"ctc\"\ndata = \"train\"\n"
         "\n[evaluators.asr]\nplugin = \"asr\"\ndata = \"dev\"\n"
         "\n[trainer]\nsteps = " + std::to_string(steps) +
         "\nlog_every = 2\nwarmup_steps = 2\nlr = 3e-3\nadam_eps = 1e-5\nthreads = 1\nprogress = \"none\"\n"
         "eval_at_start = false\n"
         "checkpoint_dir = \"" + dir.file("checkpoints") + "\"\n";
}

std::map<std::string, torch::Tensor> weights(const std::string& checkpoint) {
  torch::serialize::InputArchive archive;
  archive.load_from(checkpoint);
  std::map<std::string, torch::Tensor> out;
  for (const auto& key : archive.keys()) {
    if (key.rfind("speech_encoder.", 0) != 0 && key.rfind("objectives.", 0) != 0) continue;
    torch::Tensor t;
    if (archive.try_read(key, t) || archive.try_read(key, t, /*is_buffer=*/true)) out[key] = t;
  }
  return out;
}

// The pid of the process whose parent is `parent` and whose environment has RANK=<rank>.
std::optional<pid_t> rank_pid(pid_t parent, int rank) {
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    if (close == std::string::npos) continue;
    std::istringstream rest(line.substr(close + 2));
    char state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid != parent) continue;
    const std::string env = read_file((entry.path() / "environ").string());
    const std::string want = "RANK=" + std::to_string(rank);
    for (std::size_t at = 0; at < env.size();) {
      const auto end = env.find('\0', at);
      if (env.compare(at, (end == std::string::npos ? env.size() : end) - at, want) == 0) return std::stoi(name);
      if (end == std::string::npos) break;
      at = end + 1;
    }
  }
  return std::nullopt;
}

// A port nobody listens on now: the kernel's pick for a socket bound to port 0.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  ::close(fd);
  REQUIRE(ok);
  return ntohs(addr.sin_port);
}

// A 2-rank run of far more steps than a test waits for, started by --nproc and already training.
struct LongRun {
  TempDir dir{"wbtest_ddp_"};
  std::string db = dir.file("runs.db"), err = dir.file("launcher.err");
  pid_t launcher = -1;
  bool training = false;  // rank 0 has logged training metrics
  LongRun() {
    const std::string exp = dir.file("long.toml");
    write_file(exp, tiny_experiment(write_manifest(dir, 6), 2, 100000, dir));
    launcher = start_run(exp, db, err, {"--nproc", "2"});
    training = launcher > 0 && wait_for_run(db, [](const RunStore& store, std::int64_t run) {
                 return !store.metrics(run, "train/loss").empty();
               });
  }
  /// The launcher's exit status, once it has ended.
  int wait() {
    int status = 0;
    ::waitpid(launcher, &status, 0);
    launcher = -1;
    return status;
  }
  // A test that failed half-way must not leave the ranks training (the launcher passes it on).
  ~LongRun() {
    if (launcher <= 0) return;
    ::kill(launcher, SIGTERM);
    ::waitpid(launcher, nullptr, 0);
  }
  LongRun(const LongRun&) = delete;
  LongRun& operator=(const LongRun&) = delete;
};

}  // namespace

TEST_CASE("sharding: across the ranks every example is seen once per epoch, in one process's global order",
          "[distributed][data]") {
  CHECK(shard_rows(5, 0, 2) == std::vector<std::size_t>{0, 2, 4});
  CHECK(shard_rows(5, 1, 2) == std::vector<std::size_t>{1, 3});
  CHECK(shard_rows(1, 1, 2).empty());
  const PreparedData three = speech_data(3);
  CHECK_THROWS_AS(ShardedBatcher(three, [] { return std::vector<std::size_t>{}; }, 2, 2), std::invalid_argument);

  const PreparedData data = speech_data(23);
  BatchingOptions global;
  global.batch_seconds = 1e9;
  global.max_batch = 6;  // 3 rows per rank; the epoch's last batch has 5, so the shards are 3 and 2
  const std::uint64_t seed = 7;
  BucketBatcher reference(data, global, seed);
  std::vector<std::unique_ptr<ShardedBatcher>> ranks;
  for (int r = 0; r < 2; ++r) {
    auto inner = std::make_shared<BucketBatcher>(data, global, seed);
    ranks.push_back(std::make_unique<ShardedBatcher>(
        data, [b = inner.get()] { return b->next_indices(); }, r, 2, inner));
  }
  const std::size_t per_epoch = reference.batches_per_epoch();
  REQUIRE(per_epoch == 4);
  for (int epoch = 0; epoch < 2; ++epoch) {
    std::multiset<std::string> seen;
    for (std::size_t b = 0; b < per_epoch; ++b) {
      const Batch whole = reference.next();
      const Batch r0 = ranks[0]->next(), r1 = ranks[1]->next();
      std::vector<std::string> both = r0.ids;
      both.insert(both.end(), r1.ids.begin(), r1.ids.end());
      std::vector<std::string> expected = whole.ids;
      std::sort(both.begin(), both.end());
      std::sort(expected.begin(), expected.end());
      CHECK(both == expected);
      // The shares scale each rank's mean loss so that the ranks' average is the global batch's mean.
      CHECK(ranks[0]->share() + ranks[1]->share() == Approx(2.0));
      CHECK(ranks[0]->share() == Approx(2.0 * static_cast<double>(r0.size()) / static_cast<double>(whole.size())));
      seen.insert(both.begin(), both.end());
    }
    CHECK(seen.size() == data.size());
    CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == data.size());
  }

  // A global batch smaller than the world leaves a rank an empty batch (the trainer skips its loss).
  PreparedData one = speech_data(1);
  BatchingOptions single;
  single.max_batch = 2;
  auto inner = std::make_shared<BucketBatcher>(one, single, seed);
  ShardedBatcher idle(one, [b = inner.get()] { return b->next_indices(); }, 1, 2, inner);
  CHECK(idle.next().size() == 0);
  CHECK(idle.share() == 0.0);
}

TEST_CASE("data parallel: 2 ranks on loopback give the parameters of 1 rank with the doubled batch",
          "[distributed][e2e]") {
  TempDir dir("wbtest_ddp_");
  // 15 utterances in global batches of 4: the last of each epoch has 3 rows, shared 2 and 1.
  const std::string manifest = write_manifest(dir, 15);
  const std::string one_exp = dir.file("one.toml"), two_exp = dir.file("two.toml");
  const int steps = 8;
  write_file(one_exp, tiny_experiment(manifest, 4, steps, dir));
  write_file(two_exp, tiny_experiment(manifest, 2, steps, dir));
  const std::string db = dir.file("runs.db");

  CommandResult one = run_workbench(dir, {"run", one_exp, "--db", db});
  INFO(one.err);
  REQUIRE(one.exit_code == 0);
  CommandResult two = run_workbench(dir, {"run", two_exp, "--db", db, "--nproc", "2"});
  INFO(two.err);
  REQUIRE(two.exit_code == 0);
  CHECK_THAT(two.err, Contains("2 ranks joined (gloo)"));

  RunStore store(db);
  auto runs = store.runs();
  REQUIRE(runs.size() == 2);  // rank 1 recorded nothing of its own
  std::int64_t one_id = 0, two_id = 0;
  for (const auto& r : runs) {
    CHECK(r.status == "finished");
    (r.experiment_name == "one" ? one_id : two_id) = r.id;
  }
  REQUIRE(one_id > 0);
  REQUIRE(two_id > 0);
  const std::string id = std::to_string(two_id);
  CHECK(scalar(store, "SELECT value_num FROM params WHERE run_id = " + id + " AND key = 'runtime.world_size'") ==
        std::optional<std::string>("2.0"));
  CHECK(scalar(store, "SELECT value_text FROM params WHERE run_id = " + id + " AND key = 'runtime.backend'") ==
        std::optional<std::string>("gloo"));
  // Rank 0 logged each window once, and evaluated once at the end.
  CHECK(store.metrics(two_id, "train/loss").size() == steps / 2);
  CHECK(store.metrics(two_id, "dev/cer").size() == 1);
  // Training moved the weights: the loss fell.
  auto loss = store.metrics(one_id, "ctc/loss");
  REQUIRE(loss.size() == steps / 2);
  CHECK(loss.back().value < loss.front().value);

  const auto a = weights(dir.file("checkpoints") + "/run-" + std::to_string(one_id) + "/final.pt");
  const auto b = weights(dir.file("checkpoints") + "/run-" + id + "/final.pt");
  REQUIRE(a.size() > 10);
  REQUIRE(a.size() == b.size());
  double worst = 0;
  std::string worst_key;
  for (const auto& [key, t] : a) {
    REQUIRE(b.count(key));
    REQUIRE(b.at(key).sizes() == t.sizes());
    if (!t.is_floating_point()) {
      CHECK(torch::equal(t, b.at(key)));
      continue;
    }
    const double d = (t - b.at(key)).abs().max().item<double>();
    if (std::getenv("WORKBENCH_SHOW_DIFFS")) std::fprintf(stderr, "%-60s %.3g\n", key.c_str(), d);
    if (d > worst) worst = d, worst_key = key;
  }
  INFO("largest difference " << worst << " in " << worst_key);
  CHECK(worst < 1e-5);
}

TEST_CASE("data parallel: a rank killed mid-run fails the run, and rank 0 records which rank and why",
          "[distributed][e2e][errors]") {
  LongRun run;
  REQUIRE(run.training);
  const auto victim = rank_pid(run.launcher, 1);
  REQUIRE(victim);
  ::kill(*victim, SIGKILL);
  const int status = run.wait();
  const std::string said = read_file(run.err);
  INFO(said);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 128 + SIGKILL);
  CHECK_THAT(said, Contains("rank 1 of 2 (pid " + std::to_string(*victim) + ") was killed by signal 9"));
  RunStore store(run.db);
  const auto recorded = store.runs().at(0);
  CHECK(recorded.status == "failed");
  CHECK_THAT(recorded.error_message, Contains("rank 1 of 2: was killed by signal 9"));
}

TEST_CASE("data parallel: Ctrl-C stops every rank at the same step - rank 0 checkpoints and records it",
          "[distributed][e2e][interrupt]") {
  LongRun run;
  REQUIRE(run.training);
  ::kill(run.launcher, SIGINT);
  const int status = run.wait();
  INFO(read_file(run.err));
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 130);
  RunStore store(run.db);
  const auto recorded = store.runs().at(0);
  CHECK(recorded.status == "interrupted");
  const auto checkpoints = store.checkpoints(recorded.id);
  REQUIRE(checkpoints.size() == 1);
  CHECK(checkpoints[0].kind == "interrupted");
  CHECK(checkpoints[0].step > 0);
}
TEST_CASE("data parallel: in the torchrun environment, a rank that fails before joining stops rank 0 at once",
          "[distributed][e2e][errors]") {
  TempDir dir("wbtest_ddp_");
  const std::string manifest = write_manifest(dir, 6);
  const std::string exp = dir.file("good.toml"), db = dir.file("runs.db");
  write_file(exp, tiny_experiment(manifest, 2, 100000, dir));
  const int port = free_port();
  // Two independently started processes, as torchrun or Slurm would start them; rank 1's file is missing.
  auto start_rank = [&](int rank, const std::string& experiment) {
    const pid_t child = ::fork();
    if (child == 0) {
      ::setenv("RANK", std::to_string(rank).c_str(), 1);
      ::setenv("WORLD_SIZE", "2", 1);
      ::setenv("MASTER_ADDR", "127.0.0.1", 1);
      ::setenv("MASTER_PORT", std::to_string(port).c_str(), 1);
      std::freopen(dir.file("rank" + std::to_string(rank) + ".err").c_str(), "w", stderr);
      ::execl(WORKBENCH_BINARY_DIR "/bin/workbench", "workbench", "run", experiment.c_str(), "--db", db.c_str(),
              static_cast<char*>(nullptr));
      std::_Exit(127);
    }
    return child;
  };
  const auto t0 = std::chrono::steady_clock::now();
  const pid_t rank0 = start_rank(0, exp);
  const pid_t rank1 = start_rank(1, dir.file("missing.toml"));
  int s0 = 0, s1 = 0;
  ::waitpid(rank1, &s1, 0);
  ::waitpid(rank0, &s0, 0);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  INFO(read_file(dir.file("rank0.err")) << "\n---\n" << read_file(dir.file("rank1.err")));
  CHECK(WIFEXITED(s1));
  CHECK(WEXITSTATUS(s1) == 1);
  CHECK_THAT(read_file(dir.file("rank1.err")), Contains("rank 1: error:"));
  REQUIRE(WIFEXITED(s0));
  CHECK(WEXITSTATUS(s0) == 1);
  CHECK(seconds < 60);  // not the 30-minute collective timeout
  RunStore store(db);
  const auto runs = store.runs();
  REQUIRE(runs.size() == 1);
  CHECK(runs[0].status == "failed");
  CHECK_THAT(runs[0].error_message, Contains("another rank failed before joining: rank 1 of 2:"));
  CHECK_THAT(runs[0].error_message, Contains("missing.toml"));
}
