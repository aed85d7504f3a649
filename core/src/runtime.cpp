#include "workbench/runtime.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <unistd.h>

#include <dlfcn.h>
#include <malloc.h>
#include <link.h>

#ifndef WORKBENCH_SOURCE_DIR_FOR_GIT
#define WORKBENCH_SOURCE_DIR_FOR_GIT ""
#endif

namespace workbench {

namespace {

std::atomic<int> g_signals{0};

void on_signal(int sig) {
  if (g_signals.fetch_add(1) >= 1) {
    std::signal(sig, SIG_DFL);
    std::raise(sig);
  }
}

int collect(struct dl_phdr_info* info, size_t, void* data) {
  auto* paths = static_cast<std::string*>(data);
  if (info->dlpi_name && std::strstr(info->dlpi_name, "blas")) {
    *paths += info->dlpi_name;
    *paths += "\n";
  }
  return 0;
}

}  // namespace

BlasInfo detect_blas() {
  BlasInfo info;
  std::string paths;
  dl_iterate_phdr(collect, &paths);
  // Resolve Debian's alternatives symlinks to the real file.
  std::string first = paths.substr(0, paths.find('\n'));
  if (!first.empty()) {
    char buf[4096];
    info.path = realpath(first.c_str(), buf) ? std::string(buf) : first;
  }
  using ConfigFn = char* (*)();
  using ThreadsFn = int (*)();
  auto config = reinterpret_cast<ConfigFn>(dlsym(RTLD_DEFAULT, "openblas_get_config"));
  auto threads = reinterpret_cast<ThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  if (config) {
    info.name = std::string("OpenBLAS (") + config() + ")";
    if (threads) info.threads = threads();
  } else if (dlsym(RTLD_DEFAULT, "mkl_get_max_threads")) {
    info.name = "MKL";
  } else if (info.path.find("/blas/") != std::string::npos || info.path.find("libblas.so") != std::string::npos) {
    info.name = "reference BLAS (netlib)";
    info.reference = true;
  } else {
    info.name = "unknown";
  }
  return info;
}

bool keep_freed_memory(std::size_t bytes) {
#if defined(__GLIBC__)
  const int value = static_cast<int>(std::min<std::size_t>(bytes, static_cast<std::size_t>(INT_MAX)));
  return mallopt(M_MMAP_THRESHOLD, value) == 1 && mallopt(M_TRIM_THRESHOLD, value) == 1;
#else
  (void)bytes;
  return false;
#endif
}

bool set_blas_threads(int threads) {
  using SetFn = void (*)(int);
  auto set = reinterpret_cast<SetFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (!set) return false;
  set(threads);
  return true;
}

void install_interrupt_handler() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

bool interrupt_requested() { return g_signals.load() > 0; }
void clear_interrupt() { g_signals.store(0); }

// Defined in the generated git_revision.cpp (cmake/GitRevision.cmake), which is rewritten at every build
// when, and only when, the revision or the dirty flag changed.
const char* workbench_build_git_revision();

std::string workbench_git_revision() { return workbench_build_git_revision(); }

std::string host_name() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace workbench
