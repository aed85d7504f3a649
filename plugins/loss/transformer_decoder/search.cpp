#include "search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

namespace workbench::transformer_decoder {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// Next-token log-probabilities, through the cache or by re-running the whole prefix.
class Stepper {
 public:
  /// `limits`: each row's output limit (row_limits), in the rows' order.
  Stepper(TransformerDecoder& decoder, const torch::Tensor& memory, const torch::Tensor& lengths, const SearchOptions& o,
          const std::vector<std::int64_t>& limits)
      : decoder_(decoder), options_(o), memory_(memory), lengths_(lengths),
        limits_(torch::tensor(limits, torch::kLong).to(memory.device())) {
    if (o.use_cache) cache_ = decoder_->start(memory, lengths);
  }

  /// Feeds `tokens` (N) as position t and returns the masked log-probabilities (N, V) of position t + 1.
  torch::Tensor next(const torch::Tensor& tokens, std::int64_t t) {
    torch::Tensor logits;
    if (options_.use_cache) {
      logits = decoder_->step(cache_, tokens);
    } else {
      history_ = history_.defined() ? torch::cat({history_, tokens.view({-1, 1})}, 1) : tokens.view({-1, 1});
      logits = decoder_->forward(history_, memory_, lengths_).select(1, -1);
    }
    return mask(torch::log_softmax(logits.to(torch::kFloat32), -1), t, limits_, options_);
  }

  void select(const torch::Tensor& index) {
    if (options_.use_cache) {
      cache_.select(index);
    } else {
      memory_ = memory_.index_select(0, index);
      lengths_ = lengths_.index_select(0, index);
      if (history_.defined()) history_ = history_.index_select(0, index);
    }
  }

  /// No padding ever; once a row has `limits` tokens, only the end symbol (its log-probability unchanged).
  static torch::Tensor mask(torch::Tensor lp, std::int64_t emitted, const torch::Tensor& limits, const SearchOptions& o) {
    lp.select(1, 0).fill_(-INFINITY);
    auto ended = (limits <= emitted).view({-1, 1});  // (N, 1)
    auto eos = lp.select(1, o.eos).clone();
    lp.masked_fill_(ended, -INFINITY);
    lp.select(1, o.eos).copy_(eos);
    return lp;
  }

 private:
  TransformerDecoder& decoder_;
  SearchOptions options_;
  torch::Tensor memory_, lengths_, limits_, history_;
  DecoderCache cache_;
};

double normalised(double log_prob, std::size_t tokens, double length_penalty) {
  return length_penalty == 0 ? log_prob : log_prob / std::pow(static_cast<double>(tokens + 1), length_penalty);
}

void check(const SearchOptions& o, const TransformerDecoder& decoder) {
  const auto V = decoder->options.vocab();
  if (o.eos <= 0 || o.eos >= V || o.bos < 0 || o.bos >= V) throw std::invalid_argument("search: bos/eos out of the vocabulary");
  if (o.beam_size < 1 || o.max_length < 0) throw std::invalid_argument("search: beam_size >= 1 and max_length >= 0");
}

}  // namespace

std::vector<std::int64_t> row_limits(const torch::Tensor& lengths, const SearchOptions& o) {
  auto cpu = lengths.to(torch::kCPU).contiguous();
  const std::int64_t* l = cpu.data_ptr<std::int64_t>();
  std::vector<std::int64_t> out;
  for (std::int64_t b = 0; b < cpu.numel(); ++b) {
    std::int64_t limit = o.max_length;
    if (o.max_length_per_frame > 0)
      limit = std::min(limit, 10 + static_cast<std::int64_t>(std::ceil(o.max_length_per_frame * static_cast<double>(l[b]))));
    out.push_back(limit);
  }
  return out;
}

std::vector<Hypothesis> greedy_search(TransformerDecoder& decoder, const torch::Tensor& memory,
                                      const torch::Tensor& lengths, const SearchOptions& o) {
  check(o, decoder);
  const auto B = memory.size(0);
  std::vector<Hypothesis> out(static_cast<std::size_t>(B));
  std::vector<char> done(static_cast<std::size_t>(B), 0);
  const auto limits = row_limits(lengths, o);
  Stepper stepper(decoder, memory, lengths, o, limits);
  auto tokens = torch::full({B}, o.bos, torch::TensorOptions().dtype(torch::kLong).device(memory.device()));
  const std::int64_t longest = limits.empty() ? 0 : *std::max_element(limits.begin(), limits.end());
  for (std::int64_t t = 0; t <= longest; ++t) {
    auto [value, id] = stepper.next(tokens, t).max(-1);
    auto v = value.to(torch::kCPU, torch::kDouble);
    auto k = id.to(torch::kCPU);
    const double* vp = v.data_ptr<double>();
    const std::int64_t* kp = k.data_ptr<std::int64_t>();
    bool all_done = true;
    for (std::int64_t b = 0; b < B; ++b) {
      auto& h = out[static_cast<std::size_t>(b)];
      if (done[static_cast<std::size_t>(b)]) continue;
      h.log_prob += vp[b];
      if (kp[b] == o.eos) {
        done[static_cast<std::size_t>(b)] = 1;
        h.score = normalised(h.log_prob, h.tokens.size(), o.length_penalty);
      } else {
        h.tokens.push_back(kp[b]);
        all_done = false;
      }
    }
    if (all_done) break;
    tokens = id;
  }
  return out;
}

std::vector<Hypothesis> beam_search(TransformerDecoder& decoder, const torch::Tensor& memory,
                                    const torch::Tensor& lengths, const SearchOptions& o) {
  check(o, decoder);
  const auto B = memory.size(0), K = o.beam_size, V = decoder->options.vocab();
  const auto device = memory.device();
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong);
  const auto expanded = lengths.repeat_interleave(K, 0);
  const auto limits = row_limits(expanded, o);  // beams reorder within their row: the limits stay put
  Stepper stepper(decoder, memory.repeat_interleave(K, 0), expanded, o, limits);
  const std::int64_t longest = limits.empty() ? 0 : *std::max_element(limits.begin(), limits.end());
  // Only the first hypothesis of each row is live at the start, so that the first step does not pick
  // the same token K times.
  std::vector<double> scores(static_cast<std::size_t>(B * K), kNegInf);
  for (std::int64_t b = 0; b < B; ++b) scores[static_cast<std::size_t>(b * K)] = 0;
  std::vector<std::vector<std::int64_t>> history(static_cast<std::size_t>(B * K));
  std::vector<std::vector<Hypothesis>> finished(static_cast<std::size_t>(B));
  std::vector<char> done(static_cast<std::size_t>(B), 0);
  auto tokens = torch::full({B * K}, o.bos, long_opts.device(device));
  const auto width = std::min<std::int64_t>(2 * K, K * V);
  for (std::int64_t t = 0; t <= longest; ++t) {
    auto lp = stepper.next(tokens, t);                                                       // (B*K, V)
    auto prior = torch::tensor(scores, torch::TensorOptions().dtype(torch::kDouble)).to(device, torch::kFloat32);
    auto candidates = (prior.view({B * K, 1}) + lp).view({B, K * V});
    auto [top_v, top_i] = candidates.topk(width, -1);
    auto tv = top_v.to(torch::kCPU, torch::kDouble).contiguous();
    auto ti = top_i.to(torch::kCPU).contiguous();
    const double* vp = tv.data_ptr<double>();
    const std::int64_t* ip = ti.data_ptr<std::int64_t>();
    std::vector<std::int64_t> index(static_cast<std::size_t>(B * K)), next_tokens(static_cast<std::size_t>(B * K), o.eos);
    std::vector<double> next_scores(static_cast<std::size_t>(B * K), kNegInf);
    std::vector<std::vector<std::int64_t>> next_history(static_cast<std::size_t>(B * K));
    for (std::int64_t b = 0; b < B; ++b) {
      // Slots the loop below leaves empty (a finished row's, or fewer than K live extensions) keep the
      // row's first hypothesis with score -inf: they ride along and are never extended.
      for (std::int64_t k = 0; k < K; ++k) index[static_cast<std::size_t>(b * K + k)] = b * K;
      if (done[static_cast<std::size_t>(b)]) continue;
      std::int64_t live = 0;
      for (std::int64_t r = 0; r < width; ++r) {
        const double v = vp[b * width + r];
        if (v == kNegInf) break;
        const std::int64_t c = ip[b * width + r], from = b * K + c / V, token = c % V;
        const auto& prefix = history[static_cast<std::size_t>(from)];
        if (token == o.eos) {
          if (r < K) finished[static_cast<std::size_t>(b)].push_back({prefix, v, normalised(v, prefix.size(), o.length_penalty)});
          continue;
        }
        if (live == K) continue;
        const auto slot = static_cast<std::size_t>(b * K + live);
        index[slot] = from;
        next_tokens[slot] = token;
        next_scores[slot] = v;
        next_history[slot] = prefix;
        next_history[slot].push_back(token);
        ++live;
      }
      if (static_cast<std::int64_t>(finished[static_cast<std::size_t>(b)].size()) >= K || live == 0)
        done[static_cast<std::size_t>(b)] = 1;
    }
    if (std::all_of(done.begin(), done.end(), [](char d) { return d != 0; })) break;
    stepper.select(torch::tensor(index, long_opts).to(device));
    tokens = torch::tensor(next_tokens, long_opts).to(device);
    scores = std::move(next_scores);
    history = std::move(next_history);
  }
  std::vector<Hypothesis> out;
  for (auto& f : finished) {
    if (f.empty()) throw std::logic_error("beam search ended a row without a finished hypothesis");
    out.push_back(*std::max_element(f.begin(), f.end(), [](const auto& a, const auto& b) { return a.score < b.score; }));
  }
  return out;
}

std::vector<double> sequence_log_probs(TransformerDecoder& decoder, const torch::Tensor& memory, const torch::Tensor& lengths,
                                       const std::vector<std::vector<std::int64_t>>& outputs, const SearchOptions& o) {
  check(o, decoder);
  std::vector<double> out;
  const auto long_opts = torch::TensorOptions().dtype(torch::kLong).device(memory.device());
  for (std::size_t b = 0; b < outputs.size(); ++b) {
    const auto& y = outputs[b];
    std::vector<std::int64_t> input{o.bos};
    input.insert(input.end(), y.begin(), y.end());
    auto logits = decoder->forward(torch::tensor(input, long_opts).view({1, -1}),
                                   memory.narrow(0, static_cast<std::int64_t>(b), 1),
                                   lengths.narrow(0, static_cast<std::int64_t>(b), 1))[0];  // (L + 1, V)
    const auto limit = torch::tensor(row_limits(lengths.narrow(0, static_cast<std::int64_t>(b), 1), o), long_opts);
    double total = 0;
    for (std::size_t t = 0; t <= y.size(); ++t) {
      auto lp = Stepper::mask(torch::log_softmax(logits[static_cast<std::int64_t>(t)].unsqueeze(0).to(torch::kFloat32), -1),
                              static_cast<std::int64_t>(t), limit, o);
      total += lp[0][t < y.size() ? y[t] : o.eos].item<double>();
    }
    out.push_back(total);
  }
  return out;
}

}  // namespace workbench::transformer_decoder
