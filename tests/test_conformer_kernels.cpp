// The conformer's own kernels, registry-free so that the sanitized build runs them too:
// - its dropout (dropout.h): Philox4x32-10 against Random123's published known-answer vectors, then the
//   mask's rate, scale and independence, its gradient, and that it depends on the seed only;
// - its Linear layers through oneDNN (pointwise.h): the outputs and all three gradients of torch::linear.
#include <ATen/Parallel.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "dropout.h"
#include "pointwise.h"

#include <catch2/catch.hpp>

using workbench::conformer::philox4x32;
using workbench::conformer::philox_dropout;
using workbench::conformer::LinearBackend;
using workbench::conformer::parse_linear_backend;
using workbench::conformer::pointwise;

TEST_CASE("philox4x32-10 gives Random123's known-answer vectors", "[conformer][dropout]") {
  // Random123 1.14, tests/kat_vectors: "philox4x32 10" lines (counter, key, expected).
  CHECK(philox4x32({0, 0, 0, 0}, {0, 0}) == std::array<std::uint32_t, 4>{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8});
  CHECK(philox4x32({0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}, {0xffffffff, 0xffffffff}) ==
        std::array<std::uint32_t, 4>{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd});
  CHECK(philox4x32({0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}, {0xa4093822, 0x299f31d0}) ==
        std::array<std::uint32_t, 4>{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1});
}

TEST_CASE("philox dropout: drops a share p, scales the rest by 1 / (1 - p)", "[conformer][dropout]") {
  torch::manual_seed(1);
  const std::int64_t n = 1 << 20;
  for (double p : {0.1, 0.5, 0.9}) {
    const auto x = torch::ones({n});
    const auto out = philox_dropout(x, p, true);
    const auto kept = out != 0;
    const double dropped = 1.0 - kept.to(torch::kDouble).mean().item<double>();
    // Within 5 standard deviations of a binomial share.
    CHECK(std::abs(dropped - p) < 5 * std::sqrt(p * (1 - p) / static_cast<double>(n)));
    CHECK(torch::allclose(out.masked_select(kept), torch::full({1}, 1.0 / (1.0 - p))));
  }
}

TEST_CASE("philox dropout: identity in eval mode and at p = 0, zeros at p = 1, p checked", "[conformer][dropout]") {
  const auto x = torch::randn({3, 5});
  CHECK(philox_dropout(x, 0.3, false).is_same(x));
  CHECK(philox_dropout(x, 0.0, true).is_same(x));
  CHECK(philox_dropout(x, 1.0, true).abs().sum().item<double>() == 0.0);
  CHECK_THROWS_AS(philox_dropout(x, 1.5, true), std::invalid_argument);
  CHECK_THROWS_AS(philox_dropout(x, -0.1, true), std::invalid_argument);
  CHECK_THROWS_AS(philox_dropout(x, std::nan(""), true), std::invalid_argument);
}

TEST_CASE("philox dropout: the gradient is the same mask and scale", "[conformer][dropout]") {
  torch::manual_seed(2);
  for (auto dtype : {torch::kFloat32, torch::kFloat64}) {
    const auto x = (torch::rand({64, 33}, dtype) + 0.5).requires_grad_(true);  // no zeros, so out != 0 is the mask
    const auto g = torch::randn({64, 33}, dtype);
    const auto out = philox_dropout(x, 0.25, true);
    (out * g).sum().backward();
    const auto mask = (out != 0).to(dtype);
    CHECK(torch::equal(out.detach(), x.detach() * mask * (1.0 / 0.75)));
    CHECK(torch::equal(x.grad(), g * mask * (1.0 / 0.75)));
  }
}

TEST_CASE("philox dropout: the mask depends on the seed, not on the thread count or the call's layout",
          "[conformer][dropout]") {
  const auto x = torch::randn({8, 250, 144});
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  torch::manual_seed(3);
  const auto one = philox_dropout(x, 0.1, true);
  at::set_num_threads(2);
  torch::manual_seed(3);
  const auto two = philox_dropout(x, 0.1, true);
  at::set_num_threads(saved);
  CHECK(torch::equal(one, two));
  // The next call draws a new seed, so a new mask.
  const auto next = philox_dropout(x, 0.1, true);
  CHECK_FALSE(torch::equal(next == 0, two == 0));
  // A non-contiguous input is masked in its logical order: the same as its contiguous copy, same shape.
  torch::manual_seed(3);
  const auto strided = philox_dropout(x.transpose(1, 2), 0.1, true);
  torch::manual_seed(3);
  const auto copied = philox_dropout(x.transpose(1, 2).contiguous(), 0.1, true);
  CHECK(strided.sizes() == x.transpose(1, 2).sizes());
  CHECK(torch::equal(strided, copied));
}

TEST_CASE("philox dropout: neighbouring elements are dropped independently", "[conformer][dropout]") {
  torch::manual_seed(4);
  const double p = 0.3;
  const std::int64_t n = 1 << 20;
  const auto dropped = (philox_dropout(torch::ones({n}), p, true) == 0).to(torch::kDouble);
  // Elements of one Philox block (i, i + 1 within four) and of adjacent blocks (i, i + 4): both dropped with
  // probability p^2, as independent draws are.
  for (std::int64_t lag : {1, 2, 3, 4, 5}) {
    const double both = (dropped.narrow(0, 0, n - lag) * dropped.narrow(0, lag, n - lag)).mean().item<double>();
    CHECK(std::abs(both - p * p) < 5 * std::sqrt(p * p * (1 - p * p) / static_cast<double>(n)));
  }
}

TEST_CASE("pointwise: a Linear layer through oneDNN gives torch::linear's output and gradients", "[conformer][linear]") {
  torch::manual_seed(5);
  for (bool bias : {true, false}) {
    torch::nn::Linear layer(torch::nn::LinearOptions(48, 80).bias(bias));
    for (const auto& shape : {std::vector<std::int64_t>{7, 48}, std::vector<std::int64_t>{3, 11, 48}}) {
      const auto x = torch::randn(shape).requires_grad_(true);
      const auto g = torch::randn(layer->forward(x).sizes());
      layer->zero_grad();
      (layer->forward(x) * g).sum().backward();
      const auto gx = x.grad().clone(), gw = layer->weight.grad().clone();
      const auto gb = bias ? layer->bias.grad().clone() : torch::Tensor();
      x.mutable_grad().reset();
      layer->zero_grad();
      const auto y = pointwise(layer, x, LinearBackend::OneDnn);
      CHECK(y.sizes() == layer->forward(x).sizes());
      CHECK(torch::allclose(y, layer->forward(x), 1e-5, 1e-5));
      (y * g).sum().backward();
      CHECK(torch::allclose(x.grad(), gx, 1e-5, 1e-5));
      CHECK(torch::allclose(layer->weight.grad(), gw, 1e-4, 1e-4));
      if (bias) CHECK(torch::allclose(layer->bias.grad(), gb, 1e-4, 1e-4));
    }
  }
}

TEST_CASE("pointwise: auto follows LibTorch's thread count; a bad backend name is refused", "[conformer][linear]") {
  CHECK(parse_linear_backend("auto") == LinearBackend::Auto);
  CHECK(parse_linear_backend("blas") == LinearBackend::Blas);
  CHECK_THROWS_AS(parse_linear_backend("mkl"), std::invalid_argument);
  torch::manual_seed(7);
  torch::nn::Linear layer(16, 24);
  const auto x = torch::randn({9, 16});
  const int saved = at::get_num_threads();
  // One thread: torch::linear itself, bit for bit. Two: oneDNN, equal within rounding.
  at::set_num_threads(1);
  CHECK(torch::equal(pointwise(layer, x, LinearBackend::Auto), layer->forward(x)));
  at::set_num_threads(2);
  CHECK(torch::equal(pointwise(layer, x, LinearBackend::Auto), pointwise(layer, x, LinearBackend::OneDnn)));
  at::set_num_threads(saved);
}

TEST_CASE("pointwise: a strided input, double precision and the blas backend take their own paths, equal to torch::linear",
          "[conformer][linear]") {
  torch::manual_seed(6);
  torch::nn::Linear layer(16, 24);
  const auto strided = torch::randn({16, 9}).t();  // (9, 16), not contiguous
  CHECK(torch::allclose(pointwise(layer, strided, LinearBackend::OneDnn), layer->forward(strided), 1e-5, 1e-5));
  CHECK(torch::equal(pointwise(layer, strided, LinearBackend::Blas), layer->forward(strided)));
  // The wrong width is torch::linear's error, not a silent reshape of the rows.
  CHECK_THROWS_AS(pointwise(layer, torch::randn({6, 8}), LinearBackend::OneDnn), c10::Error);
  layer->to(torch::kFloat64);
  const auto d = torch::randn({5, 16}, torch::kFloat64);
  CHECK(torch::equal(pointwise(layer, d, LinearBackend::OneDnn), layer->forward(d)));  // not float32: torch::linear itself
}
