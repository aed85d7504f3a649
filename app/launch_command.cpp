// `workbench run --nproc N`: N local ranks of the same command, with the torchrun environment (RANK,
// WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) set for each. The ranks do the work; this process
// only starts them, forwards Ctrl-C, and when one fails makes sure the others stop and rank 0 learns why.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "commands.h"
#include "workbench/distributed.h"
#include "workbench/error.h"

extern char** environ;

namespace workbench::app {

namespace {

volatile sig_atomic_t g_forward = 0;
void on_signal(int sig) { g_forward = sig; }

// A port nobody listens on now (the kernel's pick); rank 0 binds it a moment later.
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw Error(fmt::format("--nproc: cannot open a socket: {}", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    throw Error(fmt::format("--nproc: cannot find a free port on 127.0.0.1: {}", std::strerror(err)));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "ended";
}

}  // namespace

int launch_local_ranks(int nproc, const std::vector<std::string>& rank_argv) {
  if (nproc < 1) throw ConfigError(fmt::format("--nproc {}: expected at least 1", nproc));
  DistributedOptions where;
  where.world_size(nproc).master_addr("127.0.0.1").master_port(free_port());

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);  // no SA_RESTART: waitpid returns to forward it
  sigaction(SIGTERM, &sa, nullptr);

  std::vector<std::string> base_env;
  for (char** e = environ; *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (key == "RANK" || key == "WORLD_SIZE" || key == "LOCAL_RANK" || key == "MASTER_ADDR" || key == "MASTER_PORT" ||
        key == "LOCAL_WORLD_SIZE")
      continue;
    base_env.push_back(kv);
  }
  std::vector<char*> argv;
  for (const auto& a : rank_argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  // The ranks get a process group of their own: a Ctrl-C at the terminal reaches this process alone, which
  // passes it on once (a rank takes a second Ctrl-C as "exit now").
  std::map<pid_t, int> rank_of;
  pid_t group = 0;
  for (int r = 0; r < nproc; ++r) {
    std::vector<std::string> env = base_env;
    env.push_back(fmt::format("RANK={}", r));
    env.push_back(fmt::format("LOCAL_RANK={}", r));
    env.push_back(fmt::format("WORLD_SIZE={}", nproc));
    env.push_back(fmt::format("LOCAL_WORLD_SIZE={}", nproc));
    env.push_back(fmt::format("MASTER_ADDR={}", where.master_addr()));
    env.push_back(fmt::format("MASTER_PORT={}", where.master_port()));
    std::vector<char*> envp;
    for (auto& kv : env) envp.push_back(kv.data());
    envp.push_back(nullptr);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, group);
    pid_t pid = 0;
    const int rc = ::posix_spawn(&pid, "/proc/self/exe", nullptr, &attr, argv.data(), envp.data());
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
      if (group) ::kill(-group, SIGKILL);
      throw Error(fmt::format("--nproc: cannot start rank {}: {}", r, std::strerror(rc)));
    }
    if (!group) group = pid;
    rank_of[pid] = r;
  }
  std::fprintf(stderr, "workbench: %d ranks on 127.0.0.1:%d, pids %d..%d\n", nproc,
               where.master_port(), static_cast<int>(group), static_cast<int>(group) + nproc - 1);

  using clock = std::chrono::steady_clock;
  int exit_code = 0;
  std::optional<clock::time_point> failed_at;
  bool terminated = false, killed = false, forwarded = false;
  while (!rank_of.empty()) {
    if (g_forward && !forwarded) {
      ::kill(-group, SIGINT);  // every rank stops at the same step (they vote), rank 0 checkpoints
      forwarded = true;
    }
    int status = 0;
    const pid_t pid = ::waitpid(-group, &status, WNOHANG);
    if (pid > 0) {
      const int r = rank_of[pid];
      rank_of.erase(pid);
      const bool ok = WIFEXITED(status) && (WEXITSTATUS(status) == 0 || (forwarded && WEXITSTATUS(status) == 130));
      if (!ok && !failed_at) {
        // The first rank to fail is the cause; the others fail after it, at their next collective.
        failed_at = clock::now();
        exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        std::fprintf(stderr, "workbench: rank %d of %d (pid %d) %s\n", r, nproc, static_cast<int>(pid),
                     describe_status(status).c_str());
        // A rank that died without a word (a signal, an abort) cannot tell rank 0 why: tell it instead
        // (a rank that did report keeps its own message).
        if (r != 0) DataParallel::report_failure_for(where, r, describe_status(status));
      } else if (!ok) {
        std::fprintf(stderr, "workbench: rank %d %s after it\n", r, describe_status(status).c_str());
      }
      continue;
    }
    if (pid < 0 && errno != EINTR) break;  // ECHILD: none left to wait for
    // After a failure the others get a minute to notice and record it, then are stopped.
    if (failed_at) {
      const double since = std::chrono::duration<double>(clock::now() - *failed_at).count();
      if (!terminated && since > 60) {
        std::fprintf(stderr, "workbench: stopping the remaining ranks\n");
        ::kill(-group, SIGTERM);
        terminated = true;
      } else if (!killed && since > 90) {
        ::kill(-group, SIGKILL);
        killed = true;
      }
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (forwarded && exit_code == 0) exit_code = 130;
  return exit_code;
}

}  // namespace workbench::app
