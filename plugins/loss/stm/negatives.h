#pragma once
// STM's choice of mismatched pairs, kept apart from the plugin so that tests can check it directly.
// Compiled into the stm plugin (and into test_stm_negatives).
#include <torch/types.h>

// Hidden, so that no other library ever binds to this copy.
#pragma GCC visibility push(hidden)
namespace workbench::stm {

/// The transcript each row of a batch is paired with: partner[i] == i keeps row i's own transcript (a
/// matched pair, label 1); otherwise partner[i] is a row whose text differs from row i's (label 0).
///
/// Each row becomes a negative with probability `negative_rate`, and then takes a partner uniformly among
/// the rows with another text. Two rows have the same text when their valid token ids are equal (the model
/// sees the tokens: texts that differ only past the embedding's length limit are the same input). This
/// matters: corpora of read prompts have many rows with the same text, and such a "negative" would be a
/// matched pair labelled 0. A row whose every other row has its text stays matched, so the realised rate
/// can fall below `negative_rate` in batches with repeated texts.
///
/// With `nearest_length`, a negative's partner is drawn among the rows with another text whose length is
/// nearest its own: otherwise the ratio of speech frames to text tokens alone tells a swapped transcript
/// from the real one, and the head can learn that instead of the content.
///
/// `tokens` (B, L) int64 and `lengths` (B) int64, on one device; returns (B) int64 there, built by tensor
/// operations (no host read; (B, B) comparisons) from torch's generator of that device, which checkpoints
/// keep. Throws std::invalid_argument for a rate outside [0, 1] or shapes that do not match.
torch::Tensor choose_partners(const torch::Tensor& tokens, const torch::Tensor& lengths, double negative_rate,
                              bool nearest_length = true);

}  // namespace workbench::stm
#pragma GCC visibility pop
