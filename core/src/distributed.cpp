#include "workbench/distributed.h"

#include <algorithm>
#include <cstdlib>
#include <map>
#include <sstream>
#include <thread>

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef WORKBENCH_HAVE_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/types.h>
#include <torch/utils.h>

#include "workbench/error.h"
#include "workbench/runtime.h"

namespace workbench {

namespace {

int env_int(const char* name, int fallback, int lowest, int highest) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (*end != '\0' || n < lowest || n > highest)
    throw ConfigError(fmt::format("environment: {}={} is not a whole number from {} to {}", name, v, lowest, highest));
  return static_cast<int>(n);
}

std::string env_string(const char* name, const std::string& fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::string(v) : fallback;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::vector<std::uint8_t> bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string text(const std::vector<std::uint8_t>& b) { return {b.begin(), b.end()}; }

c10::intrusive_ptr<c10d::TCPStore> connect_store(const DistributedOptions& o, bool server,
                                                  std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(o.master_port());
  so.isServer = server;
  // The ranks' arrival is counted by DataParallel itself, which can give up when one reports a failure.
  so.numWorkers = c10::nullopt;
  so.waitWorkers = false;
  so.timeout = timeout;
  return c10::make_intrusive<c10d::TCPStore>(o.master_addr(), so);
}

}  // namespace

DistributedOptions DistributedOptions::from_environment() {
  DistributedOptions o;
  o.world_size(env_int("WORLD_SIZE", 1, 1, 1 << 20));
  o.rank(env_int("RANK", 0, 0, o.world_size() - 1));
  o.local_rank(env_int("LOCAL_RANK", o.rank(), 0, 1 << 20));
  o.master_addr(env_string("MASTER_ADDR", "127.0.0.1"));
  o.master_port(env_int("MASTER_PORT", 29500, 1, 65535));
  o.backend(env_string("WORKBENCH_DIST_BACKEND", "auto"));
  o.interface(env_string("GLOO_SOCKET_IFNAME", ""));
  o.timeout_minutes(env_int("WORKBENCH_DIST_TIMEOUT_MINUTES", 30, 1, 24 * 60 * 7));
  return o;
}

struct DataParallel::Impl {
  DistributedOptions options;
  std::string backend;
  c10::intrusive_ptr<c10d::TCPStore> tcp;
  c10::intrusive_ptr<c10d::Store> store;  // our own keys, apart from the backend's
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
#ifdef WORKBENCH_HAVE_NCCL
  c10::intrusive_ptr<c10d::ProcessGroupNCCL> nccl;
#endif
  std::int64_t metrics_round = 0;

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<torch::Tensor>& t, c10d::ReduceOp op) {
    c10d::AllreduceOptions o;
    o.reduceOp = op;
#ifdef WORKBENCH_HAVE_NCCL
    if (nccl) return nccl->allreduce(t, o);
#endif
    return gloo->allreduce(t, o);
  }
  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<torch::Tensor>& t) {
    c10d::BroadcastOptions o;
    o.rootRank = 0;
#ifdef WORKBENCH_HAVE_NCCL
    if (nccl) return nccl->broadcast(t, o);
#endif
    return gloo->broadcast(t, o);
  }
  std::string where() const {
    return fmt::format("rank {} of {} ({} at {}:{})", options.rank(), options.world_size(), backend,
                       options.master_addr(), options.master_port());
  }
};

DataParallel::DataParallel(const DistributedOptions& options, c10::Device device) : impl_(std::make_unique<Impl>()) {
  Impl& im = *impl_;
  im.options = options;
  const int world = options.world_size(), rank = options.rank();
  if (world < 1 || rank < 0 || rank >= world)
    throw ConfigError(fmt::format("distributed: rank {} is not in a world of {}", rank, world));
#ifdef WORKBENCH_HAVE_NCCL
  const bool have_nccl = true;
#else
  const bool have_nccl = false;
#endif
  const std::string& b = options.backend();
  if (b == "auto")
    im.backend = device.is_cuda() && have_nccl ? "nccl" : "gloo";
  else if (b == "gloo" || b == "nccl")
    im.backend = b;
  else
    throw ConfigError(fmt::format("distributed: backend '{}' is none of auto, gloo, nccl", b));
  if (im.backend == "nccl" && !have_nccl)
    throw ConfigError("distributed: backend 'nccl' needs a CUDA LibTorch and a build configured with "
                      "-DWORKBENCH_NCCL=ON; this build has gloo only");
  if (im.backend == "nccl" && !device.is_cuda())
    throw ConfigError("distributed: backend 'nccl' runs on CUDA tensors, but the device is " + device.str());

  const auto timeout = std::chrono::milliseconds(static_cast<std::int64_t>(options.timeout_minutes() * 60e3));
  try {
    im.tcp = connect_store(options, rank == 0, timeout);
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: the rendezvous failed: {}", im.where(), e.what()));
  }
  im.store = c10::make_intrusive<c10d::PrefixStore>("workbench", im.tcp);
  // Every rank checks in; each waits for all, but stops early when one reports that it failed before
  // joining (a bad file on one machine), or on Ctrl-C, instead of waiting out the timeout.
  try {
    im.store->add("joined", 1);
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (im.store->add("joined", 0) < world) {
      if (auto peer = peer_failure(std::chrono::milliseconds(0)))
        throw Error(fmt::format("{}: another rank failed before joining: {}", im.where(), *peer));
      if (interrupt_requested()) throw Interrupted();
      if (std::chrono::steady_clock::now() > deadline)
        throw Error(fmt::format("{}: only {} of {} ranks joined within {} minutes", im.where(), im.store->add("joined", 0),
                                world, options.timeout_minutes()));
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: the rendezvous failed: {}", im.where(), e.what()));
  }
  auto backend_store = c10::make_intrusive<c10d::PrefixStore>("backend", im.tcp);
  try {
#ifdef WORKBENCH_HAVE_NCCL
    if (im.backend == "nccl") {
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = timeout;
      im.nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(backend_store, rank, world, o);
    }
#endif
    if (im.backend == "gloo") {
      auto o = c10d::ProcessGroupGloo::Options::create(timeout);
      const std::string iface =
          !options.interface().empty() ? options.interface() : is_loopback(options.master_addr()) ? "lo" : "";
      try {
        o->devices.push_back(iface.empty() ? c10d::ProcessGroupGloo::createDefaultDevice()
                                           : c10d::ProcessGroupGloo::createDeviceForInterface(iface));
      } catch (const std::exception& e) {
        throw ConfigError(fmt::format("distributed: Gloo cannot use network interface '{}' (set GLOO_SOCKET_IFNAME or "
                                      "--gloo-interface to one this machine has, e.g. lo): {}",
                                      iface.empty() ? "(the host name's)" : iface, e.what()));
      }
      im.gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(backend_store, rank, world, o);
    }
  } catch (const ConfigError&) {
    throw;
  } catch (const std::exception& e) {
    throw Error(fmt::format("{}: the process group failed to form: {}", im.where(), e.what()));
  }
}

DataParallel::~DataParallel() = default;

int DataParallel::rank() const { return impl_->options.rank(); }
int DataParallel::world_size() const { return impl_->options.world_size(); }
std::string DataParallel::backend() const { return impl_->backend; }
const DistributedOptions& DataParallel::options() const { return impl_->options; }

void DataParallel::broadcast(const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  // One flat tensor per dtype and device: a broadcast per parameter would cost a round trip each.
  std::map<std::pair<int, std::string>, std::vector<torch::Tensor>> groups;
  for (const auto& t : tensors)
    if (t.defined() && t.numel() > 0)
      groups[{static_cast<int>(t.scalar_type()), t.device().str()}].push_back(t);
  for (auto& [key, members] : groups) {
    const bool boolean = members.front().scalar_type() == torch::kBool;  // Gloo has no bool
    std::vector<torch::Tensor> flat_parts;
    for (const auto& t : members) flat_parts.push_back((boolean ? t.to(torch::kUInt8) : t).reshape({-1}));
    std::vector<torch::Tensor> flat{torch::cat(flat_parts)};
    impl_->broadcast(flat)->wait();
    std::int64_t offset = 0;
    for (auto& t : members) {
      auto part = flat[0].narrow(0, offset, t.numel()).view(t.sizes());
      t.copy_(boolean ? part.to(torch::kBool) : part);
      offset += t.numel();
    }
  }
}

void DataParallel::average_gradients(const std::vector<torch::Tensor>& parameters) {
  torch::NoGradGuard no_grad;
  Impl& im = *impl_;
  if (parameters.empty()) return;
  const auto device = parameters.front().device();
  // Which parameters any rank has a gradient for: the same buckets on every rank, or the sums mix tensors.
  auto present = torch::zeros({static_cast<std::int64_t>(parameters.size())}, torch::TensorOptions().device(device));
  {
    auto acc = torch::zeros({static_cast<std::int64_t>(parameters.size())});
    auto a = acc.accessor<float, 1>();
    for (std::size_t i = 0; i < parameters.size(); ++i) a[static_cast<std::int64_t>(i)] = parameters[i].grad().defined();
    present.copy_(acc);
  }
  std::vector<torch::Tensor> flags{present};
  im.allreduce(flags, c10d::ReduceOp::SUM)->wait();
  const auto any = flags[0].to(torch::kCPU);
  const auto a = any.accessor<float, 1>();

  // Buckets in reverse registration order (the order backward produces gradients in, which is what
  // DDP overlaps with); one dtype per bucket.
  const double cap = std::max(1.0, im.options.bucket_mib() * 1024.0 * 1024.0);
  std::vector<std::vector<torch::Tensor>> buckets;
  double bytes_in = 0;
  for (std::size_t k = parameters.size(); k-- > 0;) {
    if (a[static_cast<std::int64_t>(k)] == 0) continue;
    torch::Tensor p = parameters[k];
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    const auto& g = p.grad();
    const double size = static_cast<double>(g.numel() * g.element_size());
    if (buckets.empty() || bytes_in + size > cap || buckets.back().front().scalar_type() != g.scalar_type()) {
      buckets.emplace_back();
      bytes_in = 0;
    }
    buckets.back().push_back(g);
    bytes_in += size;
  }
  std::vector<std::vector<torch::Tensor>> flats;
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  flats.reserve(buckets.size());
  for (const auto& bucket : buckets) {
    std::vector<torch::Tensor> parts;
    for (const auto& g : bucket) parts.push_back(g.reshape({-1}));
    flats.push_back({torch::cat(parts)});
    works.push_back(im.allreduce(flats.back(), c10d::ReduceOp::SUM));
  }
  const double world = static_cast<double>(world_size());
  for (std::size_t b = 0; b < buckets.size(); ++b) {
    works[b]->wait();
    auto& flat = flats[b][0];
    flat.div_(world);
    std::int64_t offset = 0;
    for (auto& g : buckets[b]) {
      g.copy_(flat.narrow(0, offset, g.numel()).view(g.sizes()));
      offset += g.numel();
    }
  }
}

std::vector<std::pair<std::string, double>> DataParallel::reduce_metrics(
    const std::vector<std::pair<std::string, double>>& mine) {
  Impl& im = *impl_;
  const std::string round = std::to_string(im.metrics_round++);
  if (!is_main()) {
    std::ostringstream out;
    out.precision(17);
    for (const auto& [k, v] : mine) out << k << '\t' << v << '\n';
    im.store->set("metrics/" + round + "/" + std::to_string(rank()), bytes(out.str()));
    return mine;
  }
  std::vector<std::string> order;
  std::map<std::string, std::pair<double, int>> sums;
  for (const auto& [k, v] : mine) {
    order.push_back(k);
    sums[k] = {v, 1};
  }
  for (int r = 1; r < world_size(); ++r) {
    const std::string key = "metrics/" + round + "/" + std::to_string(r);
    std::istringstream in(text(im.store->get(key)));
    im.store->deleteKey(key);
    std::string line;
    while (std::getline(in, line)) {
      const auto tab = line.find('\t');
      if (tab == std::string::npos) continue;
      const std::string k = line.substr(0, tab);
      const double v = std::strtod(line.c_str() + tab + 1, nullptr);
      auto it = sums.find(k);
      if (it == sums.end()) {
        order.push_back(k);
        sums[k] = {v, 1};
      } else {
        it->second.first += v;
        ++it->second.second;
      }
    }
  }
  std::vector<std::pair<std::string, double>> out;
  for (const auto& k : order) out.emplace_back(k, sums[k].first / sums[k].second);
  return out;
}

StopVote DataParallel::vote(StopVote mine) {
  if (!is_main() && mine == StopVote::TimeUp) mine = StopVote::None;
  auto device = impl_->backend == "nccl" ? torch::Device(torch::kCUDA, impl_->options.local_rank()) : torch::Device(torch::kCPU);
  std::vector<torch::Tensor> v{torch::full({1}, static_cast<float>(mine), torch::TensorOptions().device(device))};
  impl_->allreduce(v, c10d::ReduceOp::MAX)->wait();
  return static_cast<StopVote>(static_cast<int>(v[0].item<float>()));
}

void DataParallel::report_failure(const std::string& message) noexcept {
  try {
    impl_->store->set("failure/" + std::to_string(rank()), bytes(message));
  } catch (...) {
    // The store lives in rank 0: when rank 0 is what failed, nobody is left to tell.
  }
}

std::optional<std::string> DataParallel::peer_failure(std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    try {
      for (int r = 0; r < world_size(); ++r) {
        if (r == rank()) continue;
        const std::string key = "failure/" + std::to_string(r);
        if (impl_->store->check({key}))
          return fmt::format("rank {} of {}: {}", r, world_size(), text(impl_->store->get(key)));
      }
    } catch (...) {
      return std::nullopt;  // the store is gone with rank 0
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

bool DataParallel::report_failure_for(const DistributedOptions& options, int rank, const std::string& message) noexcept {
  try {
    auto tcp = connect_store(options, false, std::chrono::seconds(5));
    c10d::PrefixStore store("workbench", tcp);
    const std::string key = "failure/" + std::to_string(rank);
    if (!store.check({key})) store.set(key, bytes(message));
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace workbench
