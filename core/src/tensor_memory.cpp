#include "workbench/tensor_memory.h"

#include <atomic>
#include <cstring>
#include <mutex>

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

namespace workbench {
namespace {

std::atomic<std::int64_t> g_live{0}, g_peak{0};
std::atomic<bool> g_installed{false};

// Each block carries its size in a header in front of the data, so that the deleter needs only the data
// pointer: raw_allocate() (which some LibTorch code calls) requires the context to be that pointer. 64
// bytes keep the data at the 64-byte alignment c10::alloc_cpu gives.
constexpr std::size_t kHeader = 64;

void count(std::int64_t bytes) {
  const std::int64_t now = g_live.fetch_add(bytes, std::memory_order_relaxed) + bytes;
  std::int64_t peak = g_peak.load(std::memory_order_relaxed);
  while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void free_block(void* data) {
  if (data == nullptr) return;
  auto* base = static_cast<char*>(data) - kHeader;
  std::size_t n = 0;
  std::memcpy(&n, base, sizeof n);
  g_live.fetch_sub(static_cast<std::int64_t>(n), std::memory_order_relaxed);
  c10::free_cpu(base);
}

struct CountingCpuAllocator final : c10::Allocator {
  c10::DataPtr allocate(std::size_t n) const override {
    auto* base = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    std::memcpy(base, &n, sizeof n);
    void* data = base + kHeader;
    count(static_cast<std::int64_t>(n));
    return {data, data, &free_block, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &free_block; }
};

}  // namespace

void install_tensor_memory_meter() {
  static std::once_flag once;
  std::call_once(once, [] {
    static CountingCpuAllocator allocator;
    // Above the default allocator's priority 0, so that nothing registered later at 0 displaces it.
    c10::SetCPUAllocator(&allocator, /*priority=*/1);
    g_installed.store(true);
  });
}

bool tensor_memory_meter_installed() { return g_installed.load(); }
std::int64_t live_tensor_bytes() { return g_live.load(std::memory_order_relaxed); }
std::int64_t peak_tensor_bytes() { return g_peak.load(std::memory_order_relaxed); }
void reset_tensor_peak() { g_peak.store(g_live.load(std::memory_order_relaxed), std::memory_order_relaxed); }

}  // namespace workbench
