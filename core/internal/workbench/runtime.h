#pragma once
// Process-level facts and switches: which BLAS is active, thread pools, Ctrl-C.
#include <string>

namespace workbench {

struct BlasInfo {
  std::string name;     ///< "OpenBLAS 0.3.21 (pthread)", "reference BLAS (netlib)", "MKL", or "unknown"
  std::string path;     ///< the resolved libblas .so in this process, if one is loaded
  bool reference = false;  ///< the slow netlib reference implementation (about 17x slower here)
  int threads = 0;      ///< OpenBLAS's own thread count, 0 if unknown
};

/// Inspects the libraries loaded in this process (dl_iterate_phdr) to tell which BLAS LibTorch uses.
BlasInfo detect_blas();
/// Sets OpenBLAS's own pool size (found with dlsym); returns false where the BLAS has no such call.
bool set_blas_threads(int threads);

/// Installs SIGINT/SIGTERM handlers that only raise a flag; the trainer polls it between steps and
/// throws Interrupted, so the run is recorded as interrupted. A second Ctrl-C exits at once.
void install_interrupt_handler();
bool interrupt_requested();
/// Forgets an earlier Ctrl-C (tests; a process that goes on after an interrupted run).
void clear_interrupt();

/// `git describe`-like revision of the workbench source this binary was built from ("unknown" if none).
std::string workbench_git_revision();
std::string host_name();
/// UTC time as "2026-11-21T10:00:00Z".
std::string utc_now();

}  // namespace workbench
