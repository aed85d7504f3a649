// w2v-BERT's contrastive loss, forward and backward, at a base-sized batch: info_nce as the plugin runs
// it (in the (B, T) frame layout: a cosine matrix per utterance and a gather) against its peer, the
// direct formulation on the packed masked frames that gathers an (M, K, Dq) tensor of distractor vectors
// (what info_nce did before 2026-12-03, and what fairseq2's wav2vec 2.0 loss does). Same inputs, same run; prints the time of each, the ratio, the bytes of each one's largest
// intermediate, and the two losses (which must agree). See bench/README.md.
#include <chrono>
#include <cstdio>
#include <limits>

#include <CLI/CLI.hpp>
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "contrastive.h"
#include "workbench/runtime.h"
#include "workbench/tensor_memory.h"

namespace F = torch::nn::functional;
using workbench::w2v_bert::info_nce;
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
  int reps = 5, threads = 0, blas_threads = 1;
  bool no_peer = false;
  CLI::App app{"w2v-BERT InfoNCE, forward + backward: per-utterance cosine matrices against gathered distractors"};
  app.add_option("--batch", batch, "utterances")->capture_default_str();
  app.add_option("--frames", frames, "frames per utterance after subsampling")->capture_default_str();
  app.add_option("--mask-share", mask_share, "share of frames masked")->capture_default_str();
  app.add_option("--distractors", distractors, "K")->capture_default_str();
  app.add_option("--dim", dim, "Dq, the quantized vectors' size")->capture_default_str();
  app.add_option("--reps", reps, "repetitions; the best is reported")->capture_default_str();
  app.add_option("--threads", threads, "LibTorch intra-op threads (0: LibTorch's default)")->capture_default_str();
  app.add_option("--blas-threads", blas_threads,
                 "OpenBLAS threads (0 = leave; the trainer's default is 1: more fight LibTorch's pool for the cores)")
      ->capture_default_str();
  app.add_flag("--no-peer", no_peer, "run only info_nce (the ctest smoke)");
  CLI11_PARSE(app, argc, argv);
  if (threads > 0) torch::set_num_threads(threads);
  if (blas_threads > 0) workbench::set_blas_threads(blas_threads);

  workbench::install_tensor_memory_meter();
  torch::manual_seed(1);
  // Utterances of different lengths, each masked over its first mask_share of frames.
  auto mask = torch::zeros({batch, frames}, torch::kBool);
  for (std::int64_t b = 0; b < batch; ++b)
    mask[b].narrow(0, 0, static_cast<std::int64_t>(mask_share * frames * (0.6 + 0.4 * (b + 1) / batch))).fill_(true);
  auto idx = sample_distractors(mask, distractors);  // (B, T, K) frame indices
  auto context = torch::randn({batch, frames, dim}).requires_grad_(true);
  auto targets = torch::randn({batch, frames, dim}).requires_grad_(true);
  // Every frame its own code: random vectors are all distinct.
  auto codes = torch::arange(batch * frames, torch::kLong).view({batch, frames, 1});
  // The peer's inputs, packed: the masked frames in row-major order, and each distractor's place there.
  auto packed_of = (mask.reshape({-1}).to(torch::kLong).cumsum(0) - 1).view({batch, frames});
  auto packed_idx = torch::where(idx >= 0, packed_of.gather(1, idx.clamp_min(0).view({batch, -1})).view(idx.sizes()),
                                 torch::full({}, -1, torch::kLong))
                        .index({mask});  // (M, K)
  const std::int64_t M = packed_idx.size(0);
  auto packed_context = context.detach().index({mask}).requires_grad_(true);
  auto packed_targets = targets.detach().index({mask}).requires_grad_(true);

  double ours_loss = 0, peer_loss = 0;
  // Peak CPU tensor bytes above what was alive before, measured by the counting allocator.
  auto peak_above = [](auto&& fn) {
    const auto before = workbench::live_tensor_bytes();
    workbench::reset_tensor_peak();
    fn();
    return static_cast<double>(workbench::peak_tensor_bytes() - before) / 1e6;
  };
  const double ours = best_ms(reps, [&] {
    auto loss = info_nce(context, targets, codes, idx, kappa).loss;
    loss.backward();
    ours_loss = loss.item<double>();
  });
  std::printf("InfoNCE forward+backward: B %lld, M %lld masked frames, K %lld, Dq %lld, %d threads\n",
              static_cast<long long>(batch), static_cast<long long>(M), static_cast<long long>(distractors),
              static_cast<long long>(dim), torch::get_num_threads());
  const double ours_peak = peak_above([&] { info_nce(context, targets, codes, idx, kappa).loss.backward(); });
  const std::int64_t R = mask.sum(1).max().item<std::int64_t>();  // the most masked frames in a row
  std::printf("  workbench (cosines per utterance): %8.2f ms, peak %7.1f MB above the inputs (B x R x R, R %lld: %.1f MB)\n",
              ours, ours_peak, static_cast<long long>(R), 4.0 * batch * R * R / 1e6);
  if (no_peer) return 0;
  const double peer = best_ms(reps, [&] {
    auto loss = gathered_info_nce(packed_context, packed_targets, packed_idx, kappa);
    loss.backward();
    peer_loss = loss.item<double>();
  });
  const double peer_peak = peak_above([&] { gathered_info_nce(packed_context, packed_targets, packed_idx, kappa).backward(); });
  std::printf("  peer (gathered M x (K+1) x Dq):    %8.2f ms, peak %7.1f MB above the inputs (M x (K+1) x Dq %.1f MB)\n",
              peer, peer_peak, 4.0 * M * (distractors + 1) * dim / 1e6);
  std::printf("  peer/ours: %.2fx; loss %.6f against %.6f\n", peer / ours, ours_loss, peer_loss);
  return std::abs(ours_loss - peer_loss) <= 1e-4 * std::max(1.0, std::abs(peer_loss)) ? 0 : 1;
}
