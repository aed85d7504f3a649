// The RNN-T loss (plugins/loss/rnnt/rnnt_loss.cpp) against torchaudio's kernel: costs and gradients of
// random lattices, made by tests/golden/make_rnnt_golden.py, within 1e-4.
#include <string>

#include <torch/torch.h>

#include "workbench/npy.h"

#include "rnnt_loss.h"

#include <catch2/catch.hpp>

namespace {

struct Case {
  torch::Tensor logits, targets, logit_lengths, target_lengths, costs, gradients;
};

Case load(const std::string& name) {
  const std::string d = std::string(WORKBENCH_TEST_DATA_DIR) + "/rnnt_golden/" + name + "/";
  Case c;
  c.logits = workbench::read_npy(d + "logits.npy");
  c.targets = workbench::read_npy(d + "targets.npy").to(torch::kLong);
  c.logit_lengths = workbench::read_npy(d + "logit_lengths.npy").to(torch::kLong);
  c.target_lengths = workbench::read_npy(d + "target_lengths.npy").to(torch::kLong);
  c.costs = workbench::read_npy(d + "costs.npy");
  c.gradients = workbench::read_npy(d + "gradients.npy");
  return c;
}

double max_abs(const torch::Tensor& a, const torch::Tensor& b) { return (a - b).abs().max().item<double>(); }

}  // namespace

TEST_CASE("rnnt: costs and gradients match torchaudio's rnnt_loss", "[rnnt][golden]") {
  for (const char* name : {"full", "padded", "single_frame", "peaked"}) {
    INFO(name);
    Case c = load(name);
    auto logits = c.logits.clone().requires_grad_(true);
    auto costs = workbench::rnnt::rnnt_loss(logits, c.targets, c.logit_lengths, c.target_lengths, 0);
    REQUIRE(costs.sizes() == c.costs.sizes());
    CHECK(max_abs(costs.detach(), c.costs) < 1e-4);
    costs.sum().backward();
    CHECK(max_abs(logits.grad(), c.gradients) < 1e-4);
  }
}

TEST_CASE("rnnt: a row's cost and gradient do not depend on the rows padded beside it", "[rnnt]") {
  Case c = load("padded");
  auto all = c.logits.clone().requires_grad_(true);
  workbench::rnnt::rnnt_loss(all, c.targets, c.logit_lengths, c.target_lengths, 0).sum().backward();
  // Row 1 (4 frames, 2 labels) alone, cut to its own lattice.
  const auto T = c.logit_lengths[1].item<std::int64_t>(), U = c.target_lengths[1].item<std::int64_t>();
  using torch::indexing::Slice;
  auto alone = c.logits.index({Slice(1, 2), Slice(0, T), Slice(0, U + 1)}).clone().requires_grad_(true);
  auto cost = workbench::rnnt::rnnt_loss(alone, c.targets.index({Slice(1, 2), Slice(0, U)}), c.logit_lengths.narrow(0, 1, 1),
                                         c.target_lengths.narrow(0, 1, 1), 0);
  CHECK(cost.item<double>() == Approx(c.costs[1].item<double>()).epsilon(1e-5));
  cost.sum().backward();
  auto beside = all.grad().index({1});
  CHECK(max_abs(beside.index({Slice(0, T), Slice(0, U + 1)}), alone.grad()[0]) < 1e-6);
  // Padded frames and labels get no gradient at all.
  CHECK(beside.index({Slice(T)}).abs().max().item<double>() == 0.0);
  CHECK(beside.index({Slice(), Slice(U + 1)}).abs().max().item<double>() == 0.0);
}

TEST_CASE("rnnt: one frame, no labels: the cost is -log p(blank)", "[rnnt]") {
  auto logits = torch::randn({1, 1, 1, 4});
  auto cost = workbench::rnnt::rnnt_loss(logits, torch::zeros({1, 0}, torch::kLong), torch::tensor({1L}),
                                         torch::tensor({0L}), 0);
  CHECK(cost.item<double>() == Approx(-torch::log_softmax(logits, -1)[0][0][0][0].item<double>()).epsilon(1e-6));
}

TEST_CASE("rnnt: bad shapes and lengths are refused", "[rnnt]") {
  auto logits = torch::randn({2, 3, 3, 5});
  auto targets = torch::ones({2, 2}, torch::kLong);
  CHECK_THROWS_AS(workbench::rnnt::rnnt_loss(logits, torch::ones({2, 3}, torch::kLong), torch::tensor({3L, 3L}),
                                             torch::tensor({2L, 2L}), 0),
                  std::invalid_argument);
  CHECK_THROWS_AS(workbench::rnnt::rnnt_loss(logits, targets, torch::tensor({0L, 3L}), torch::tensor({2L, 2L}), 0),
                  std::invalid_argument);
  CHECK_THROWS_AS(workbench::rnnt::rnnt_loss(logits, targets, torch::tensor({3L, 3L}), torch::tensor({3L, 2L}), 0),
                  std::invalid_argument);
}
