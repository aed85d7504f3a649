// w2v-BERT's contrastive loss, forward and backward, at a base-sized batch: info_nce as the plugin runs
// it (a cosine matrix per utterance and a gather) against its peer, the direct formulation that gathers
// an (M, K, Dq) tensor of distractor vectors (what info_nce did before, and what fairseq2's wav2vec 2.0
// loss does). Same inputs, same run; prints the time of each, the ratio, the bytes of each one's largest
// intermediate, and the two losses (which must agree). See bench/README.md.
#include <chrono>
#include <cstdio>
#include <limits>
#include <random>

#include <CLI/CLI.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "contrastive.h"

namespace F = torch::nn::functional;
using workbench::w2v_bert::info_nce;
using workbench::w2v_bert::masked_per_row;
using workbench::w2v_bert::sample_distractors;

namespace {

// The peer: gathers every distractor's vector (M, K, Dq), then one dot product per candidate.
torch::Tensor gathered_info_nce(const torch::Tensor& context, const torch::Tensor& targets, const torch::Tensor& idx,
                                double kappa) {
  auto c = F::normalize(context, F::NormalizeFuncOptions().dim(-1).eps(1e-6));
  auto q = F::normalize(targets, F::NormalizeFuncOptions().dim(-1).eps(1e-6));
  auto negatives = q.index({idx.clamp_min(0)});                          // (M, K, Dq)
  auto candidates = torch::cat({q.unsqueeze(1), negatives}, 1);         // (M, K+1, Dq)
  auto logits = torch::einsum("md,mkd->mk", {c, candidates}) / kappa;   // (M, K+1)
  auto same = negatives.eq(q.unsqueeze(1)).all(-1);
  auto usable = (idx >= 0).all(1) & (~same).any(1);
  logits = logits.masked_fill(torch::cat({torch::zeros({same.size(0), 1}, same.options()), same}, 1),
                              -std::numeric_limits<float>::infinity());
  auto weights = usable.to(logits.dtype());
  auto ce = F::cross_entropy(logits, torch::zeros({logits.size(0)}, torch::kLong),
                             F::CrossEntropyFuncOptions().reduction(torch::kNone));
  return (ce * weights).sum() / weights.sum().clamp_min(1.0);
}

template <typename Fn>
double best_ms(int reps, Fn&& fn) {
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t batch = 8, frames = 500, distractors = 100, dim = 768;
  double mask_share = 0.5, kappa = 0.1;
  int reps = 5, threads = 0;
  bool no_peer = false;
  CLI::App app{"w2v-BERT InfoNCE, forward + backward: per-utterance cosine matrices against gathered distractors"};
  app.add_option("--batch", batch, "utterances")->capture_default_str();
  app.add_option("--frames", frames, "frames per utterance after subsampling")->capture_default_str();
  app.add_option("--mask-share", mask_share, "share of frames masked")->capture_default_str();
  app.add_option("--distractors", distractors, "K")->capture_default_str();
  app.add_option("--dim", dim, "Dq, the quantized vectors' size")->capture_default_str();
  app.add_option("--reps", reps, "repetitions; the best is reported")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch intra-op threads (0: LibTorch's default)")->capture_default_str();
  app.add_flag("--no-peer", no_peer, "run only info_nce (the ctest smoke)");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) torch::set_num_threads(threads);

  torch::manual_seed(1);
  std::mt19937_64 rng(1);
  // Utterances of different lengths, each masked over its first mask_share of frames.
  auto mask = torch::zeros({batch, frames}, torch::kBool);
  for (std::int64_t b = 0; b < batch; ++b)
    mask[b].narrow(0, 0, static_cast<std::int64_t>(mask_share * frames * (0.6 + 0.4 * (b + 1) / batch))).fill_(true);
  const auto rows = masked_per_row(mask);
  auto idx = sample_distractors(mask, distractors, rng);
  const std::int64_t M = idx.size(0);
  std::int64_t N = 0;
  for (auto n : rows) N = std::max(N, n);
  auto context = torch::randn({M, dim}).requires_grad_(true);
  auto targets = torch::randn({M, dim}).requires_grad_(true);

  double ours_loss = 0, peer_loss = 0;
  const double ours = best_ms(reps, [&] {
    auto loss = info_nce(context, targets, idx, kappa, rows).loss;
    loss.backward();
    ours_loss = loss.item<double>();
  });
  std::printf("InfoNCE forward+backward: B %lld, M %lld masked frames, K %lld, Dq %lld, %d threads\n",
              static_cast<long long>(batch), static_cast<long long>(M), static_cast<long long>(distractors),
              static_cast<long long>(dim), torch::get_num_threads());
  std::printf("  workbench (cosines per utterance): %8.2f ms, largest intermediate %7.1f MB (B x N x N, N %lld)\n", ours,
              4.0 * batch * N * N / 1e6, static_cast<long long>(N));
  if (no_peer) return 0;
  const double peer = best_ms(reps, [&] {
    auto loss = gathered_info_nce(context, targets, idx, kappa);
    loss.backward();
    peer_loss = loss.item<double>();
  });
  std::printf("  peer (gathered M x (K+1) x Dq):    %8.2f ms, largest intermediate %7.1f MB\n", peer,
              4.0 * M * (distractors + 1) * dim / 1e6);
  std::printf("  peer/ours: %.2fx; loss %.6f against %.6f\n", peer / ours, ours_loss, peer_loss);
  return std::abs(ours_loss - peer_loss) <= 1e-4 * std::max(1.0, std::abs(peer_loss)) ? 0 : 1;
}
