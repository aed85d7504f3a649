#include "retrieval_metrics.h"

#include <algorithm>
#include <stdexcept>

namespace workbench::retrieval {

torch::Tensor correct_ranks(const torch::Tensor& similarity) {
  if (similarity.dim() != 2 || similarity.size(0) != similarity.size(1))
    throw std::invalid_argument("correct_ranks: expected a square (N, N) similarity matrix");
  auto s = similarity.to(torch::kFloat64);
  auto correct = s.diagonal().unsqueeze(1);                       // (N, 1)
  auto better = (s > correct).sum(1).to(torch::kFloat64);
  auto ties = (s == correct).sum(1).to(torch::kFloat64) - 1;      // the correct item ties with itself
  return better + 0.5 * ties;
}

double recall_at(const torch::Tensor& ranks, std::int64_t k) {
  if (ranks.numel() == 0) return 0.0;
  return (ranks < static_cast<double>(k)).to(torch::kFloat64).mean().item<double>();
}

double chance_recall(std::int64_t n, std::int64_t k) {
  return n <= 0 ? 0.0 : std::min(1.0, static_cast<double>(k) / static_cast<double>(n));
}

}  // namespace workbench::retrieval
