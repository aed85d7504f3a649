#pragma once
// Data-parallel training on PyTorch's own distributed engine (c10d): a TCPStore rendezvous served by
// rank 0, then ProcessGroupGloo on the CPU (ProcessGroupNCCL on CUDA in a build configured with
// -DWORKBENCH_NCCL=ON). Every rank builds the same run through the runner; this class is what the
// runner and the trainer call at their seams: the parameters broadcast from rank 0 once, the gradients
// averaged after each backward (in buckets, as DistributedDataParallel does), the training metrics
// gathered before rank 0 logs them, and one collective vote per step on whether to stop.
//
// The torchrun conventions (torch/distributed/run.py): RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
// MASTER_PORT in the environment; `workbench run --nproc N` sets them for N local ranks.
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <c10/core/Device.h>
#include <torch/arg.h>
#include <torch/types.h>

namespace workbench {

struct DistributedOptions {
  /// The torchrun environment: RANK, WORLD_SIZE, LOCAL_RANK (default RANK), MASTER_ADDR (default
  /// 127.0.0.1), MASTER_PORT (default 29500), and WORKBENCH_DIST_BACKEND, GLOO_SOCKET_IFNAME and
  /// WORKBENCH_DIST_TIMEOUT_MINUTES when set. Without WORLD_SIZE: one rank. Throws ConfigError naming
  /// the variable whose value is not a number in range.
  static DistributedOptions from_environment();

  TORCH_ARG(int, rank) = 0;
  TORCH_ARG(int, world_size) = 1;
  TORCH_ARG(int, local_rank) = 0;
  TORCH_ARG(std::string, master_addr) = "127.0.0.1";
  TORCH_ARG(int, master_port) = 29500;
  /// "auto" (nccl for a CUDA device in a build with NCCL, else gloo), "gloo" or "nccl".
  TORCH_ARG(std::string, backend) = "auto";
  /// Gloo's network interface. "" = "lo" when master_addr is a loopback address, else the interface
  /// the host name resolves to (what torch.distributed does).
  TORCH_ARG(std::string, interface) = "";
  /// How long a collective or the rendezvous waits for the other ranks before failing. Rank 0 evaluates
  /// alone while the others wait at the next step, so this must exceed the longest evaluation.
  TORCH_ARG(double, timeout_minutes) = 30;
  /// Gradients are all-reduced in buckets of about this size, in reverse registration order (DDP's 25 MiB).
  TORCH_ARG(double, bucket_mib) = 25;
};

/// Why the ranks stop the loop (the largest vote wins).
enum class StopVote : int { None = 0, TimeUp = 1, Interrupted = 2 };

/// One rank's membership of the process group. Collectives block until every rank has joined them.
class DataParallel {
 public:
  /// Joins the group on `device`'s backend: rank 0 serves the store at master_addr:master_port; the
  /// others connect to it. Throws ConfigError for an unknown or unavailable backend or interface, and
  /// Error (with the address and the rank) when the rendezvous fails.
  DataParallel(const DistributedOptions& options, c10::Device device);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const;
  int world_size() const;
  /// Rank 0: the only one that writes the run store and checkpoints, and evaluates.
  bool is_main() const { return rank() == 0; }
  std::string backend() const;  ///< "gloo" or "nccl"
  const DistributedOptions& options() const;

  /// Copies rank 0's values of `tensors` into every rank's (the parameters and buffers, before training).
  void broadcast(const std::vector<torch::Tensor>& tensors);
  /// Replaces each parameter's gradient by the mean over the ranks: flattened into buckets of about
  /// options().bucket_mib(), newest parameters first, summed and divided by world_size() (Gloo has no
  /// AVG). A rank without a gradient for a parameter contributes zeros; a parameter no rank has a
  /// gradient for keeps none, so that AdamW leaves it alone (as on one rank).
  void average_gradients(const std::vector<torch::Tensor>& parameters);
  /// The mean of each metric over the ranks that have it (a rank whose shard of a batch was empty has
  /// none of that objective's). Rank 0 gets the reduced metrics; the others get their own back.
  std::vector<std::pair<std::string, double>> reduce_metrics(const std::vector<std::pair<std::string, double>>& mine);
  /// The largest vote of all ranks. Only rank 0's TimeUp counts (its clock leaves out the evaluations the
  /// others wait through); any rank's Interrupted does.
  StopVote vote(StopVote mine);

  /// Leaves `message` for rank 0 (and the launcher) to report. Never throws.
  void report_failure(const std::string& message) noexcept;
  /// The failure another rank (or the launcher, on its behalf) reported, "rank R of W: message", waiting
  /// up to `wait` for one to arrive; nullopt when none did.
  std::optional<std::string> peer_failure(std::chrono::milliseconds wait);

  /// Leaves `message` as rank `rank`'s failure in the store at master_addr:master_port, from outside
  /// the group (the launcher, for a rank that died without a word). Returns false when it cannot.
  static bool report_failure_for(const DistributedOptions& options, int rank, const std::string& message) noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace workbench
