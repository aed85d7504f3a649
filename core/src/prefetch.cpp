#include "workbench/prefetch.h"

#include <omp.h>

#include <ATen/Parallel.h>

#include <chrono>
#include <stdexcept>

namespace workbench {

PrefetchBatcher::PrefetchBatcher(std::shared_ptr<TrainBatcher> inner) : inner_(std::move(inner)) {
  if (!inner_) throw std::invalid_argument("PrefetchBatcher: no batcher to wrap");
  worker_ = std::thread([this] { work(); });
}

PrefetchBatcher::~PrefetchBatcher() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return slot_ != Slot::Making; });
    stop_ = true;
  }
  changed_.notify_all();
  worker_.join();
  // The wrapped batcher may outlive this one (a runner's next trainer): give back the batch made ahead.
  if (slot_ == Slot::Made && !error_) {
    try {
      inner_->restore(state_before_);
    } catch (...) {
    }
  }
}

void PrefetchBatcher::work() {
  // ATen's parallel_for asks OpenMP how many threads this thread may use: one, so that padding a batch
  // never takes a core from the step.
  // ATen sets a thread's OpenMP count on its first parallel_for: let it do that first, then override.
  at::internal::lazy_init_num_threads();
  omp_set_num_threads(1);
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    changed_.wait(lock, [this] { return stop_ || slot_ == Slot::Making; });
    if (stop_) return;
    lock.unlock();
    // Only this thread touches the wrapped batcher while the slot says Making.
    std::string before;
    Batch batch;
    double share = 1.0;
    std::exception_ptr error;
    try {
      before = inner_->state();
      batch = inner_->next();
      share = inner_->share();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    state_before_ = std::move(before);
    batch_ = std::move(batch);
    batch_share_ = share;
    error_ = error;
    slot_ = Slot::Made;
    changed_.notify_all();
  }
}

Batch PrefetchBatcher::next() {
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return slot_ != Slot::Making; });
  Batch out;
  if (slot_ == Slot::Made) {
    slot_ = Slot::Empty;
    if (error_) {
      auto e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
    out = std::move(batch_);
    batch_ = Batch();
    share_ = batch_share_;
  } else {
    // The first batch, or the first after restore(): made here, as the wrapped batcher would (the worker
    // waits while the slot is empty).
    out = inner_->next();
    share_ = inner_->share();
  }
  last_wait_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  slot_ = Slot::Making;
  lock.unlock();
  changed_.notify_all();
  return out;
}

std::string PrefetchBatcher::state() const {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return slot_ != Slot::Making; });
  // The batch made ahead has not been handed out: a resumed run starts with it.
  if (slot_ == Slot::Made) return state_before_;
  return inner_->state();
}

void PrefetchBatcher::restore(const std::string& state) {
  std::unique_lock<std::mutex> lock(mutex_);
  changed_.wait(lock, [this] { return slot_ != Slot::Making; });
  slot_ = Slot::Empty;
  error_ = nullptr;
  batch_ = Batch();
  inner_->restore(state);
}

}  // namespace workbench
