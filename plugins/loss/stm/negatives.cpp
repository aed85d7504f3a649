#include "negatives.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <unordered_map>

namespace workbench::stm {

std::vector<std::int64_t> choose_partners(const std::vector<std::string>& keys, double negative_rate,
                                          std::mt19937_64& rng, const std::vector<std::int64_t>& lengths) {
  if (!(negative_rate >= 0 && negative_rate <= 1))
    throw std::invalid_argument("choose_partners: negative_rate must be in [0, 1]");
  if (!lengths.empty() && lengths.size() != keys.size())
    throw std::invalid_argument("choose_partners: one length per key");
  const auto B = static_cast<std::int64_t>(keys.size());
  // Group ids, so that the candidate scan compares integers rather than strings.
  std::unordered_map<std::string, std::int64_t> ids;
  std::vector<std::int64_t> group(keys.size()), group_size;
  for (std::int64_t i = 0; i < B; ++i) {
    auto [it, fresh] = ids.emplace(keys[i], static_cast<std::int64_t>(group_size.size()));
    if (fresh) group_size.push_back(0);
    group[i] = it->second;
    ++group_size[it->second];
  }
  std::vector<std::int64_t> partner(keys.size());
  std::bernoulli_distribution negative(negative_rate);
  for (std::int64_t i = 0; i < B; ++i) {
    partner[i] = i;
    if (!negative(rng)) continue;
    const std::int64_t candidates = B - group_size[group[i]];
    if (candidates == 0) continue;
    if (!lengths.empty()) {
      // The nearest length among the other texts, then uniformly among the rows at that distance.
      std::int64_t best = -1;
      std::vector<std::int64_t> nearest;
      for (std::int64_t j = 0; j < B; ++j) {
        if (group[j] == group[i]) continue;
        const std::int64_t d = std::abs(lengths[j] - lengths[i]);
        if (best < 0 || d < best) {
          best = d;
          nearest.clear();
        }
        if (d == best) nearest.push_back(j);
      }
      partner[i] = nearest[std::uniform_int_distribution<std::size_t>(0, nearest.size() - 1)(rng)];
      continue;
    }
    std::int64_t k = std::uniform_int_distribution<std::int64_t>(0, candidates - 1)(rng);
    for (std::int64_t j = 0; j < B; ++j)
      if (group[j] != group[i] && k-- == 0) {
        partner[i] = j;
        break;
      }
  }
  return partner;
}

std::vector<std::string> token_row_keys(const torch::Tensor& tokens, const torch::Tensor& lengths) {
  auto tok = tokens.to(torch::kCPU, torch::kLong).contiguous();
  auto len = lengths.to(torch::kCPU, torch::kLong).contiguous();
  if (tok.dim() != 2 || len.dim() != 1 || len.size(0) != tok.size(0))
    throw std::invalid_argument("token_row_keys: tokens must be (B, L) and lengths (B)");
  const auto B = tok.size(0), L = tok.size(1);
  const auto* t = tok.data_ptr<std::int64_t>();
  const auto* n = len.data_ptr<std::int64_t>();
  std::vector<std::string> keys;
  keys.reserve(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    const auto count = std::clamp<std::int64_t>(n[b], 0, L);
    std::string key(static_cast<std::size_t>(count) * sizeof(std::int64_t), '\0');
    if (count > 0) std::memcpy(key.data(), t + b * L, key.size());
    keys.push_back(std::move(key));
  }
  return keys;
}

}  // namespace workbench::stm
