#include "dropout.h"

#include <array>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <torch/autograd.h>
#include <torch/nn/functional/dropout.h>

namespace workbench::conformer {

namespace {

// Philox4x32's round constants (Salmon et al. 2011, table 2; the same as cuRAND's and PyTorch's CUDA one).
constexpr std::uint32_t kMul0 = 0xD2511F53u, kMul1 = 0xCD9E8D57u;
constexpr std::uint32_t kWeyl0 = 0x9E3779B9u, kWeyl1 = 0xBB67AE85u;

inline std::array<std::uint32_t, 4> philox(std::uint32_t k0, std::uint32_t k1, std::uint32_t c0, std::uint32_t c1,
                                           std::uint32_t c2 = 0, std::uint32_t c3 = 0) {
  for (int round = 0; round < 10; ++round) {
    const std::uint64_t p0 = static_cast<std::uint64_t>(kMul0) * c0;
    const std::uint64_t p1 = static_cast<std::uint64_t>(kMul1) * c2;
    const std::uint32_t n0 = static_cast<std::uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const std::uint32_t n2 = static_cast<std::uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<std::uint32_t>(p1);
    c3 = static_cast<std::uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += kWeyl0;
    k1 += kWeyl1;
  }
  return {c0, c1, c2, c3};
}

// out[i] = in[i] * scale where element i is kept, else 0. Element i uses word i % 4 of block i / 4, and is
// kept when that word is at least `threshold` = round(p * 2^32), i.e. with probability 1 - p (to 2^-32).
template <typename T>
void apply_mask(const T* in, T* out, std::int64_t n, std::uint64_t seed, std::uint64_t threshold, T scale) {
  const auto k0 = static_cast<std::uint32_t>(seed), k1 = static_cast<std::uint32_t>(seed >> 32);
  const std::int64_t blocks = (n + 3) / 4;
  at::parallel_for(0, blocks, 4096, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t b = begin; b < end; ++b) {
      const auto r = philox(k0, k1, static_cast<std::uint32_t>(b), static_cast<std::uint32_t>(b >> 32));
      const std::int64_t base = b * 4;
      const std::int64_t stop = std::min<std::int64_t>(4, n - base);
      for (std::int64_t j = 0; j < stop; ++j)
        out[base + j] = r[static_cast<std::size_t>(j)] >= threshold ? in[base + j] * scale : T(0);
    }
  });
}

torch::Tensor masked(const torch::Tensor& x, std::uint64_t seed, double p) {
  const auto in = x.contiguous();
  auto out = torch::empty_like(in, torch::MemoryFormat::Contiguous);
  const auto threshold = static_cast<std::uint64_t>(std::llround(p * 4294967296.0));
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "philox_dropout", [&] {
    apply_mask<scalar_t>(in.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), in.numel(), seed, threshold,
                         static_cast<scalar_t>(1.0 / (1.0 - p)));
  });
  return out;
}

struct PhiloxDropout : torch::autograd::Function<PhiloxDropout> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, double p) {
    std::uint64_t seed = 0;
    {
      auto gen = at::detail::getDefaultCPUGenerator();
      std::lock_guard<std::mutex> lock(gen.mutex());
      seed = gen.get<at::CPUGeneratorImpl>()->random64();
    }
    // The seed as two 32-bit halves: saved_data holds int64_t, and a uint64 above 2^63 would not round-trip.
    ctx->saved_data["seed_lo"] = static_cast<std::int64_t>(seed & 0xFFFFFFFFu);
    ctx->saved_data["seed_hi"] = static_cast<std::int64_t>(seed >> 32);
    ctx->saved_data["p"] = p;
    return masked(x, seed, p);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto seed = static_cast<std::uint64_t>(ctx->saved_data["seed_lo"].toInt()) |
                      (static_cast<std::uint64_t>(ctx->saved_data["seed_hi"].toInt()) << 32);
    // The same mask and scale: d(x * m * s)/dx = m * s. p is a number, not a tensor: it has no gradient,
    // which autograd reads from an undefined tensor in its place.
    return {masked(grads[0], seed, ctx->saved_data["p"].toDouble()), torch::Tensor()};
  }
};

}  // namespace

std::array<std::uint32_t, 4> philox4x32(const std::array<std::uint32_t, 4>& counter,
                                        const std::array<std::uint32_t, 2>& key) {
  return philox(key[0], key[1], counter[0], counter[1], counter[2], counter[3]);
}

torch::Tensor philox_dropout(const torch::Tensor& x, double p, bool training) {
  if (!(p >= 0.0 && p <= 1.0)) throw std::invalid_argument("dropout probability must be in [0, 1], got " + std::to_string(p));
  if (!training || p == 0.0) return x;
  if (p == 1.0) return x * 0;
  if (!x.device().is_cpu() || !at::isFloatingType(x.scalar_type()) || x.scalar_type() == torch::kHalf ||
      x.scalar_type() == torch::kBFloat16) {
    namespace F = torch::nn::functional;
    return F::dropout(x, F::DropoutFuncOptions().p(p).training(true));
  }
  return PhiloxDropout::apply(x, p);
}

}  // namespace workbench::conformer
