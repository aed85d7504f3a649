#pragma once
// Failpoints for the crash tests: with WORKBENCH_FAILPOINT="<name>:<n>" in the environment, the process
// kills itself with SIGKILL the n-th time it reaches the point called <name> (":n" left out: the first
// time). Without the variable a failpoint is one comparison. The points:
//   checkpoint.before_rename  a checkpoint's temporary file is written and synced, not yet renamed
//   metrics.before_commit     a log_metrics transaction has inserted its rows, not yet committed
// Header-only (target workbench_failpoint), so that the trainer and the run store share it without
// either linking the other.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>

namespace workbench {

namespace failpoint_detail {
struct Spec {
  std::string name;
  long n = 0;
  std::atomic<long> hits{0};
  Spec() {
    const char* env = std::getenv("WORKBENCH_FAILPOINT");
    if (env == nullptr || *env == '\0') return;
    const std::string s = env;
    const auto colon = s.find(':');
    name = s.substr(0, colon);
    n = colon == std::string::npos ? 1 : std::strtol(s.c_str() + colon + 1, nullptr, 10);
  }
};
inline Spec& spec() {
  static Spec s;
  return s;
}
}  // namespace failpoint_detail

inline void failpoint(const char* name) {
  auto& s = failpoint_detail::spec();
  if (s.n <= 0 || s.name != name) return;
  if (s.hits.fetch_add(1) + 1 == s.n) ::kill(::getpid(), SIGKILL);
}

}  // namespace workbench
