#pragma once
// Decoding with the Transformer decoder: greedy and beam search over its key/value cache.
#include <cstdint>
#include <vector>

#include <torch/types.h>

#include "decoder.h"

namespace workbench::transformer_decoder {

struct SearchOptions {
  std::int64_t bos = 0;  ///< the start symbol fed first
  std::int64_t eos = 0;  ///< ends a hypothesis (not part of the returned tokens)
  /// At most this many tokens before the end symbol; at this length the end is forced.
  std::int64_t max_length = 200;
  /// Per row of the memory, a tighter limit: 10 + ceil(max_length_per_frame * its valid length), so that
  /// an output that never ends costs a little more than its input, not max_length (fairseq's
  /// max_len_a / max_len_b). 0 = max_length only.
  double max_length_per_frame = 0;
  std::int64_t beam_size = 1;
  /// Hypotheses are ranked by log-probability / (tokens + 1)^length_penalty (fairseq's lenpen; 0 = raw
  /// log-probability, which favours short outputs).
  double length_penalty = 1.0;
  /// Incremental decoding over the cache (true), or the whole prefix again at every step (false: for
  /// the tests that show the two agree).
  bool use_cache = true;
};

struct Hypothesis {
  std::vector<std::int64_t> tokens;  ///< without the end symbol
  double log_prob = 0;               ///< sum over the tokens and the end symbol
  double score = 0;                  ///< log_prob normalised by the length penalty
};

/// Padding (id 0) is never produced. Memory (B, T, memory_dim), lengths (B) -> one token list per row.
/// Greedy: the arg-max token at every step, all rows at once, until every row has ended.
std::vector<Hypothesis> greedy_search(TransformerDecoder& decoder, const torch::Tensor& memory,
                                      const torch::Tensor& lengths, const SearchOptions& options);

/// Beam search, all rows at once (B * beam_size hypotheses): at each step the 2 * beam_size best
/// extensions of each row are ranked; an end symbol among the first beam_size finishes a hypothesis,
/// the others fill the beam. A row stops when it has beam_size finished hypotheses (fairseq's rule);
/// the best finished one by score is returned. beam_size 1 is greedy search.
std::vector<Hypothesis> beam_search(TransformerDecoder& decoder, const torch::Tensor& memory,
                                    const torch::Tensor& lengths, const SearchOptions& options);

/// The output limit of each row: min(max_length, 10 + ceil(max_length_per_frame * lengths[b])).
std::vector<std::int64_t> row_limits(const torch::Tensor& lengths, const SearchOptions& options);

/// log P(tokens + end | memory) of given outputs under teacher forcing, with the same masking as the
/// searches (no padding; the end forced at the row's limit): (B) double, for tests and rescoring.
std::vector<double> sequence_log_probs(TransformerDecoder& decoder, const torch::Tensor& memory,
                                       const torch::Tensor& lengths, const std::vector<std::vector<std::int64_t>>& outputs,
                                       const SearchOptions& options);

}  // namespace workbench::transformer_decoder
