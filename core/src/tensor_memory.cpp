#include "workbench/tensor_memory.h"

#include <atomic>
#include <mutex>
#include <unordered_map>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

namespace workbench {
namespace {

std::atomic<std::int64_t> g_live{0}, g_peak{0};
std::atomic<bool> g_installed{false};

// The size of every block this allocator made, by address. A table rather than a header in front of each
// block: `raw_deallocate` frees with whatever allocator is current, so blocks that LibTorch (oneDNN's
// scratch memory, through ideep) took before the meter was installed arrive here too, and must go back to
// c10::free_cpu untouched and uncounted. About 100 ns per allocation.
struct Blocks {
  std::mutex mutex;
  std::unordered_map<void*, std::int64_t> sizes;
};
Blocks& blocks() {
  static auto* b = new Blocks;  // never destroyed: blocks are freed during static destruction too
  return *b;
}

void count(std::int64_t bytes) {
  const std::int64_t now = g_live.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  std::int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void free_block(void* data) {
  if (data == nullptr) return;
  {
    Blocks& b = blocks();
    std::lock_guard<std::mutex> lock(b.mutex);
    auto it = b.sizes.find(data);
    if (it != b.sizes.end()) {
      g_live.fetch_sub(it->second, std::memory_order_relaxed);
      b.sizes.erase(it);
    }
  }
  c10::free_cpu(data);
}

// The same memory as LibTorch's default CPU allocator (c10::alloc_cpu, 64-byte aligned), counted. The
// context is the data pointer, as raw_allocate() requires.
struct CountingCpuAllocator final : c10::Allocator {
  c10::DataPtr allocate(std::size_t n) const override {
    void* data = c10::alloc_cpu(n);
    {
      Blocks& b = blocks();
      std::lock_guard<std::mutex> lock(b.mutex);
      b.sizes.emplace(data, static_cast<std::int64_t>(n));
    }
    count(static_cast<std::int64_t>(n));
    return {data, data, &free_block, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_block; }
};

}  // namespace

void install_tensor_memory_meter() {
  static std::once_flag once;
  std::call_once(once, [] {
    // Never destroyed: c10's allocator table keeps pointing at it until the process ends.
    static auto* allocator = new CountingCpuAllocator;
    // Above the default allocator's priority 0, so that nothing registered later at 0 displaces it.
    c10::SetCPUAllocator(allocator, /*priority=*/1);
    g_installed.store(true);
  });
}

bool tensor_memory_meter_installed() { return g_installed.load(); }
std::int64_t live_tensor_bytes() { return g_live.load(std::memory_order_relaxed); }
std::int64_t peak_tensor_bytes() { return g_peak.load(std::memory_order_relaxed); }
void reset_tensor_peak() { g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }

}  // namespace workbench
