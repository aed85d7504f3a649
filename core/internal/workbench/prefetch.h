#pragma once
// Training batches made one step ahead, on another thread, so that collating (padding the features of
// a batch into one tensor, and the batcher's own planning) overlaps the step instead of delaying it.
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "workbench/data.h"

namespace workbench {

/// Wraps any TrainBatcher. The batches, their shares and their order are exactly the wrapped batcher's:
/// only one batch is made at a time, in order, and the wrapped batcher is touched by one thread at a time.
/// state() is the wrapped batcher's state before the batch made ahead, so a checkpoint resumes at the
/// batch the trainer would have taken next; restore() drops the batch made ahead. An exception thrown
/// while making a batch is rethrown by the next() that would have returned it.
class PrefetchBatcher final : public TrainBatcher {
 public:
  explicit PrefetchBatcher(std::shared_ptr<TrainBatcher> inner);
  ~PrefetchBatcher() override;

  Batch next() override;
  BatchKind kind() const override { return inner_->kind(); }
  double share() const override { return share_; }
  std::string state() const override;
  void restore(const std::string& state) override;

  /// Seconds the last next() waited for its batch (0 when it was ready).
  double last_wait_seconds() const { return last_wait_; }

 private:
  enum class Slot { Empty, Making, Made };
  void work();

  std::shared_ptr<TrainBatcher> inner_;
  std::thread worker_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  Slot slot_ = Slot::Empty;
  bool stop_ = false;
  // The batch made ahead, the wrapped batcher's state before it, and its exception when making it failed.
  std::string state_before_;
  Batch batch_;
  double batch_share_ = 1.0;
  std::exception_ptr error_;

  double share_ = 1.0;
  double last_wait_ = 0;
};

}  // namespace workbench
