#pragma once
// Ranks and recall@k of cross-modal retrieval from a similarity matrix.
#include <cstdint>
#include <vector>

#include <torch/types.h>

namespace workbench::retrieval {

/// `similarity` (N, N): query i's correct item is item i. Returns (N) float: the rank of the correct item
/// among all N (0 = first). Ties count half: an item exactly as similar as the correct one adds 0.5, so
/// that a model that gives every item the same score ranks at chance, not first.
torch::Tensor correct_ranks(const torch::Tensor& similarity);

/// Share of queries whose correct item ranks in the top k (rank < k).
double recall_at(const torch::Tensor& ranks, std::int64_t k);

/// Recall@k of a retriever that ranks at random: k / N (at most 1).
double chance_recall(std::int64_t n, std::int64_t k);

}  // namespace workbench::retrieval
