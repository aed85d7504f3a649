#pragma once
// STM's choice of mismatched pairs, kept apart from the plugin so that tests can check it directly.
// Compiled into the stm plugin (and into test_stm).
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <torch/types.h>

// Hidden, so that no other library ever binds to this copy.
#pragma GCC visibility push(hidden)
namespace workbench::stm {

/// The transcript each row of a batch is paired with: partner[i] == i keeps row i's own transcript (a
/// matched pair, label 1); otherwise partner[i] is a row whose key differs from row i's (label 0).
///
/// Each row becomes a negative with probability `negative_rate`, and then takes a partner uniformly among
/// the rows with a different key. Comparing keys rather than indices matters: corpora of read prompts
/// have many rows with the same text, and such a "negative" would be a matched pair labelled 0. A row
/// for which every key is equal to its own stays matched, so the realised rate can fall below
/// `negative_rate` in batches with repeated texts. Draws from `rng`. Throws std::invalid_argument for a
/// rate outside [0, 1], or for `lengths` of another size than `keys`.
///
/// With `lengths` (the text length of each row), a negative's partner is drawn among the rows with a
/// different key whose length is nearest its own: otherwise the ratio of speech frames to text tokens
/// alone tells a swapped transcript from the real one, and the head can learn that instead of the content.
std::vector<std::int64_t> choose_partners(const std::vector<std::string>& keys, double negative_rate,
                                          std::mt19937_64& rng, const std::vector<std::int64_t>& lengths = {});

/// Keys for choose_partners: the valid ids of each row of `tokens` (B, L) int64 with `lengths` (B) int64,
/// as bytes. Keys of token rows, not of the raw texts, because the model sees the tokens: two texts that
/// differ only past the text embedding's length limit are the same input.
std::vector<std::string> token_row_keys(const torch::Tensor& tokens, const torch::Tensor& lengths);

}  // namespace workbench::stm
#pragma GCC visibility pop
