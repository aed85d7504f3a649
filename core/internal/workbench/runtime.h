#pragma once
// Process-level facts and switches: which BLAS is active, thread pools, Ctrl-C.
#include <cstddef>
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

/// Keeps freed heap memory in this process: raises glibc's M_MMAP_THRESHOLD and M_TRIM_THRESHOLD to
/// `bytes`, so that allocations up to that size come from the heap and freed ones are not given back to the
/// system. LibTorch's CPU allocator has no cache of its own; without this, every activation over glibc's
/// dynamic threshold (at most 32 MiB) is a fresh mmap whose pages fault in on first touch, and freeing it
/// unmaps them again, at every step (bench/README.md measures the cost). The resident size then stays
/// near its peak. Returns false where the C library refuses the setting (not glibc).
bool keep_freed_memory(std::size_t bytes = std::size_t{1} << 30);

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
