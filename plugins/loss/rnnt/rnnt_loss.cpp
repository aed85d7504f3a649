#include "rnnt_loss.h"

#include <limits>
#include <stdexcept>

#include <torch/autograd.h>

namespace workbench::rnnt {
namespace {

using torch::indexing::Slice;
constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// (B, T, W) -> (B, N, T) with out[b, n, t] = x[b, t, n - t], -inf where n - t is outside [0, W).
torch::Tensor skew(const torch::Tensor& x, std::int64_t N) {
  const auto B = x.size(0), T = x.size(1), W = x.size(2);
  if (W == 0) return torch::full({B, N, T}, kNegInf, x.options());
  auto n = torch::arange(N, x.options().dtype(torch::kLong)).unsqueeze(1);
  auto t = torch::arange(T, x.options().dtype(torch::kLong)).unsqueeze(0);
  auto u = n - t;                                     // (N, T)
  auto ok = (u >= 0) & (u < W);
  auto index = u.clamp(0, W - 1).t().unsqueeze(0).expand({B, T, N});
  return x.gather(2, index).transpose(1, 2).masked_fill(~ok.unsqueeze(0), kNegInf);
}

// (B, N, T) -> (B, T, W) with out[b, t, u] = y[b, t + u, t].
torch::Tensor unskew(const torch::Tensor& y, std::int64_t W) {
  const auto B = y.size(0), T = y.size(2);
  if (W == 0) return torch::zeros({B, T, 0}, y.options());
  auto t = torch::arange(T, y.options().dtype(torch::kLong)).unsqueeze(1);
  auto u = torch::arange(W, y.options().dtype(torch::kLong)).unsqueeze(0);
  auto index = (t + u).unsqueeze(0).expand({B, T, W});
  return y.transpose(1, 2).gather(2, index);
}

// Shifts along the last dimension: right (x[t-1] at t) or left (x[t+1] at t), -inf coming in.
torch::Tensor shift_right(const torch::Tensor& x) {
  return torch::cat({torch::full({x.size(0), 1}, kNegInf, x.options()), x.index({Slice(), Slice(0, -1)})}, 1);
}
torch::Tensor shift_left(const torch::Tensor& x) {
  return torch::cat({x.index({Slice(), Slice(1)}), torch::full({x.size(0), 1}, kNegInf, x.options())}, 1);
}

struct Lattice : torch::autograd::Function<Lattice> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor blank_lp, torch::Tensor label_lp,
                               torch::Tensor T_len, torch::Tensor U_len) {
    const auto B = blank_lp.size(0), T = blank_lp.size(1), U = blank_lp.size(2) - 1, N = T + U;
    auto opts = blank_lp.options();
    auto t_grid = torch::arange(T, T_len.options()).view({1, T, 1});
    auto u_grid = torch::arange(U + 1, T_len.options()).view({1, 1, U + 1});
    auto Tb = T_len.view({B, 1, 1}), Ub = U_len.view({B, 1, 1});
    // Padding is no path: its log-probabilities are -inf, so it adds nothing forward or backward.
    auto bl = blank_lp.masked_fill(~((t_grid < Tb) & (u_grid <= Ub)), kNegInf);
    auto lb = label_lp.masked_fill(~((t_grid < Tb) & (u_grid.index({Slice(), Slice(), Slice(0, U)}) < Ub)), kNegInf);
    auto bsk = skew(bl, N), lsk = skew(lb, N);  // (B, N, T)

    // alpha(t, u) = logaddexp(alpha(t-1, u) + blank(t-1, u), alpha(t, u-1) + label(t, u-1))
    std::vector<torch::Tensor> alpha;
    alpha.reserve(static_cast<std::size_t>(N));
    auto a0 = torch::full({B, T}, kNegInf, opts);
    a0.index_put_({Slice(), 0}, 0.0);
    alpha.push_back(a0);
    for (std::int64_t n = 1; n < N; ++n) {
      const auto& prev = alpha.back();
      alpha.push_back(torch::logaddexp(shift_right(prev + bsk.select(1, n - 1)), prev + lsk.select(1, n - 1)));
    }
    auto A = torch::stack(alpha, 1);  // (B, N, T)
    auto rows = torch::arange(B, T_len.options());
    auto last_t = T_len - 1, last_n = T_len - 1 + U_len;
    auto final_blank = bl.index({rows, last_t, U_len});                        // (B)
    auto log_z = A.index({rows, last_n, last_t}) + final_blank;                // (B)

    // beta(t, u) = logaddexp(beta(t+1, u) + blank(t, u), beta(t, u+1) + label(t, u)); beta(T_b-1, U_b) =
    // blank(T_b-1, U_b).
    auto n_grid = torch::arange(N, T_len.options()).view({1, N, 1});
    auto t_row = torch::arange(T, T_len.options()).view({1, 1, T});
    auto terminal = (n_grid == last_n.view({B, 1, 1})) & (t_row == last_t.view({B, 1, 1}));  // (B, N, T)
    auto terminal_value = final_blank.view({B, 1}).expand({B, T});
    std::vector<torch::Tensor> beta(static_cast<std::size_t>(N));
    beta[N - 1] = torch::where(terminal.select(1, N - 1), terminal_value, torch::full({B, T}, kNegInf, opts));
    for (std::int64_t n = N - 2; n >= 0; --n) {
      const auto& next = beta[static_cast<std::size_t>(n + 1)];
      auto cur = torch::logaddexp(shift_left(next) + bsk.select(1, n), next + lsk.select(1, n));
      beta[static_cast<std::size_t>(n)] = torch::where(terminal.select(1, n), terminal_value, cur);
    }
    auto Bt = torch::stack(beta, 1);  // (B, N, T)

    // Occupancy of each transition: alpha + its log-prob + beta where it leads, over the total.
    auto next_for_blank = torch::cat({Bt.index({Slice(), Slice(1)}), torch::full({B, 1, T}, kNegInf, opts)}, 1);
    next_for_blank = torch::cat({next_for_blank.index({Slice(), Slice(), Slice(1)}),
                                 torch::full({B, N, 1}, kNegInf, opts)}, 2);
    next_for_blank = next_for_blank.masked_fill(terminal, 0.0);  // the last blank leaves the lattice
    auto next_for_label = torch::cat({Bt.index({Slice(), Slice(1)}), torch::full({B, 1, T}, kNegInf, opts)}, 1);
    auto z = log_z.view({B, 1, 1});
    auto grad_blank = -torch::exp(A + bsk + next_for_blank - z);
    auto grad_label = -torch::exp(A + lsk + next_for_label - z);
    ctx->save_for_backward({unskew(grad_blank, U + 1), unskew(grad_label, U)});
    return -log_z;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    auto g = grad_out[0].view({-1, 1, 1});
    // d(-log z)/d(log p) = -occupancy; the saved tensors already carry the sign.
    return {saved[0] * g, saved[1] * g, torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor rnnt_lattice_loss(const torch::Tensor& blank_lp, const torch::Tensor& label_lp,
                                const torch::Tensor& logit_lengths, const torch::Tensor& target_lengths) {
  if (blank_lp.dim() != 3 || label_lp.dim() != 3 || label_lp.size(2) != blank_lp.size(2) - 1 ||
      label_lp.size(0) != blank_lp.size(0) || label_lp.size(1) != blank_lp.size(1))
    throw std::invalid_argument("rnnt_lattice_loss: expected blank (B, T, U+1) and label (B, T, U) log-probabilities");
  auto T_len = logit_lengths.to(blank_lp.device(), torch::kLong);
  auto U_len = target_lengths.to(blank_lp.device(), torch::kLong);
  if (T_len.numel() > 0 && (T_len.min().item<std::int64_t>() < 1 || T_len.max().item<std::int64_t>() > blank_lp.size(1)))
    throw std::invalid_argument("rnnt_loss: every row needs between 1 and T frames");
  if (U_len.numel() > 0 && (U_len.min().item<std::int64_t>() < 0 || U_len.max().item<std::int64_t>() > label_lp.size(2)))
    throw std::invalid_argument("rnnt_loss: target lengths must be between 0 and U");
  return Lattice::apply(blank_lp, label_lp, T_len, U_len);
}

torch::Tensor rnnt_loss(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& logit_lengths,
                        const torch::Tensor& target_lengths, std::int64_t blank) {
  if (logits.dim() != 4 || targets.dim() != 2 || targets.size(0) != logits.size(0) ||
      targets.size(1) != logits.size(2) - 1)
    throw std::invalid_argument("rnnt_loss: expected logits (B, T, U+1, V) and targets (B, U)");
  // Half-precision logits are scored in float32: the lattice sums hundreds of log-probabilities.
  auto lp = torch::log_softmax(logits.to(torch::kFloat32), -1);
  const auto B = logits.size(0), T = logits.size(1), U = targets.size(1);
  auto blank_lp = lp.select(3, blank);  // (B, T, U+1)
  auto index = targets.to(lp.device(), torch::kLong).clamp_min(0).view({B, 1, U, 1}).expand({B, T, U, 1});
  auto label_lp = lp.index({Slice(), Slice(), Slice(0, U)}).gather(3, index).squeeze(3);  // (B, T, U)
  return rnnt_lattice_loss(blank_lp, label_lp, logit_lengths, target_lengths);
}

}  // namespace workbench::rnnt
