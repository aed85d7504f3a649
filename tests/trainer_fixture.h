#pragma once
// Trainer fixtures shared by the trainer and stage tests: a loss with one parameter vector and a known
// optimum, batches that carry nothing, and a sink that keeps every metric.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "workbench/data.h"
#include "workbench/loss.h"
#include "workbench/trainer.h"

#include <catch2/catch.hpp>

namespace workbench::testing {

/// [trainer] at its defaults but for a quick, quiet test: `steps` steps, logged every step, lr 0.05
/// after a one-step warm-up.
inline TrainerOptions trainer_options(std::int64_t steps) {
  return TrainerOptions::defaults().steps(steps).log_every(1).progress("none").warmup_steps(1).lr(0.05);
}

/// A loss with its own parameter w (3 values); loss = sum (w - target)^2. Records each call's step and w.
class CountingLoss final : public Loss {
 public:
  CountingLoss(BatchKind kind, double target) : kind_(kind), target_(target) {
    w = module_.register_parameter("w", torch::zeros({3}));
  }
  std::vector<BatchKind> accepts() const override { return {kind_}; }
  torch::nn::Module* module() override { return &module_; }
  LossOutput compute(const Batch& batch, ModelParts&, const StepInfo& step) override {
    REQUIRE(batch.kind == kind_);
    steps.push_back(step.step);
    total_steps = step.total_steps;
    w_at_call.push_back(w.detach().clone());
    auto loss = (w - target_).pow(2).sum();
    return {loss, {{"loss", loss.detach()}}};
  }
  torch::nn::Module module_;
  torch::Tensor w;
  std::vector<std::int64_t> steps;
  std::int64_t total_steps = 0;
  std::vector<torch::Tensor> w_at_call;

 private:
  BatchKind kind_;
  double target_;
};

/// Endless batches of one kind that carry nothing (the counting losses read nothing).
class FixedBatcher final : public TrainBatcher {
 public:
  explicit FixedBatcher(BatchKind kind) : kind_(kind) {}
  Batch next() override {
    Batch b;
    b.kind = kind_;
    b.ids = {"x"};
    ++served;
    return b;
  }
  BatchKind kind() const override { return kind_; }
  std::string state() const override { return std::to_string(served); }
  void restore(const std::string& state) override { served = std::stoi(state); }
  int served = 0;

 private:
  BatchKind kind_;
};

class RecordingSink final : public MetricSink {
 public:
  void record(std::int64_t step, const std::vector<std::pair<std::string, double>>& metrics) override {
    for (const auto& [k, v] : metrics) values[k][step] = v;
  }
  std::map<std::string, std::map<std::int64_t, double>> values;
};

}  // namespace workbench::testing
