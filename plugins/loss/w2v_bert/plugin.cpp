// The "w2v_bert" loss plugin: w2v-BERT pre-training (Chung et al. 2021, section 3) as SLAM and mSLAM use
// it (mSLAM figure 1):
//   x = speech_encoder.embed(filterbank)                subsampled features, (B, T, Ds)
//   codes, q = quantizer(x)                             on the UNMASKED features
//   c = speech_encoder.encode(mask(x))                  contrastive vectors
//   contrastive loss: InfoNCE of project(c) against q at masked frames, K distractors, cosine / kappa
//   diversity loss:   (G V - perplexity) / (G V)
//   h = shared_encoder(c)                               context vectors
//   masked prediction: cross-entropy of head(h) against the codes at masked frames only
// Total = contrastive + diversity_weight * diversity + mlm_weight * masked prediction.
#include <algorithm>
#include <cmath>

#include <fmt/format.h>
#include <torch/nn/modules/linear.h>

#include "contrastive.h"
#include "quantizer.h"
#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/masked_prediction.h"
#include "workbench/masking.h"
#include "workbench/plugin.h"

namespace workbench::w2v_bert {
namespace {

struct HeadsImpl : torch::nn::Module {
  HeadsImpl(std::int64_t speech_dim, std::int64_t context_dim, std::int64_t groups, std::int64_t entries,
            std::int64_t code_dim, bool learned_mask) {
    quantizer = register_module("quantizer", Quantizer(speech_dim, groups, entries, code_dim));
    project = register_module("project", torch::nn::Linear(speech_dim, code_dim));
    mlm = register_module("mlm", torch::nn::Linear(context_dim, groups * entries));
    if (learned_mask) mask_embedding = register_parameter("mask_embedding", torch::rand({speech_dim}));
  }
  Quantizer quantizer{nullptr};
  torch::nn::Linear project{nullptr}, mlm{nullptr};
  torch::Tensor mask_embedding;
};
TORCH_MODULE(Heads);

class W2vBertLoss final : public Loss, public SpeechCodeProvider {
 public:
  W2vBertLoss(const Options& o, const BuildContext& ctx) {
    if (ctx.speech_dim <= 0 || ctx.model_dim <= 0)
      throw std::invalid_argument("w2v_bert needs the speech encoder's and the context vectors' dimensions");
    mask_prob_ = o.get_float("mask_prob");
    mask_span_ = o.get_int("mask_span");
    distractors_ = o.get_int("distractors");
    kappa_ = o.get_float("temperature");
    t_start_ = o.get_float("gumbel_start");
    t_end_ = o.get_float("gumbel_end");
    t_decay_ = o.get_float("gumbel_decay");
    diversity_weight_ = o.get_float("diversity_weight");
    mlm_weight_ = o.get_float("mlm_weight");
    contrastive_weight_ = o.get_float("contrastive_weight");
    learned_mask_ = o.get_string("mask_replacement") == "learned";
    mlm_sampled_ = o.get_string("mlm_target") == "sampled";
    groups_ = o.get_int("codebooks");
    entries_ = o.get_int("codebook_entries");
    std::int64_t code_dim = o.get_int("code_dim") > 0 ? o.get_int("code_dim") : ctx.speech_dim;
    if (code_dim % groups_ != 0) o.fail("code_dim", fmt::format("{} is not divisible by codebooks = {}", code_dim, groups_));
    if (t_end_ > t_start_) o.fail("gumbel_end", "must not exceed gumbel_start");
    heads_ = Heads(ctx.speech_dim, ctx.model_dim, groups_, entries_, code_dim, learned_mask_);
    heads_->to(ctx.device);
  }

  std::vector<BatchKind> accepts() const override { return {BatchKind::Speech, BatchKind::Paired}; }
  torch::nn::Module* module() override { return heads_.get(); }
  std::int64_t groups() const override { return groups_; }
  std::int64_t entries() const override { return entries_; }
  torch::Tensor code_ids(const torch::Tensor& features) override { return heads_->quantizer->code_ids(features); }

  /// The annealed Gumbel temperature at `step`: max(end, start * decay^step) (wav2vec 2.0 section 4.2).
  double gumbel_temperature(std::int64_t step) const {
    return std::max(t_end_, t_start_ * std::pow(t_decay_, static_cast<double>(step)));
  }

  // Resume: the masks and distractors come from torch's default generator, which the trainer's
  // checkpoints keep; this plugin has no stream of its own.

  LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo& step) override {
    auto& speech = model.require_speech_encoder("w2v_bert");
    model.require_shared_encoder("w2v_bert (masked prediction runs at the top of the shared encoder)");
    auto embedded = speech.embed(batch.features, batch.feature_lengths);
    const auto& x = embedded.x;
    const auto T = x.size(1);
    auto valid = ~padding_mask(embedded.lengths, T);
    // Every step's tensors stay on the device, in the (B, T) frame layout: no boolean index, bincount or
    // mask reads anything back to the host, so a CUDA step never waits on its own results.
    auto mask = span_mask_frames(embedded.lengths, T, mask_prob_, mask_span_, 1);

    const double tau = gumbel_temperature(step.step);
    auto quantized = heads_->quantizer(x, valid, tau);

    // The paper replaces masked frames with random vectors; Meta's code with a learned embedding.
    torch::Tensor replacement;
    if (learned_mask_) {
      replacement = heads_->mask_embedding.to(x.dtype()).expand_as(x);
    } else {
      replacement = torch::randn_like(x) * valid_frame_std(x, valid);
    }
    auto masked_x = torch::where(mask.unsqueeze(-1), replacement, x);
    auto contrastive = speech.encode({masked_x, embedded.lengths});

    LossOutput out;
    // Contrastive task at the top of the speech encoder, scored at the masked frames.
    auto c = heads_->project(contrastive.x);  // (B, T, Dq)
    auto distractors = sample_distractors(mask, distractors_);
    auto nce = info_nce(c, quantized.quantized, quantized.sampled_codes, distractors, kappa_);

    // Masked prediction at the top of the shared encoder, against the (detached) code ids, at the masked
    // frames: computed at every frame and weighted, which costs the head's width at unmasked frames but
    // keeps shapes static.
    auto context = model.shared_from_speech(contrastive);
    auto logits = heads_->mlm(context.x).view({-1, groups_, entries_});  // (B T, G, V)
    // fairseq2 predicts the Gumbel-sampled codes, the contrastive loss's own targets; "argmax" predicts the
    // noise-free codes (what the paper's "token IDs of the quantizer" reads as outside training).
    auto targets = (mlm_sampled_ ? quantized.sampled_codes : quantized.codes).reshape({-1, groups_});  // (B T, G)
    // The baseline masked prediction must beat is always guessing the batch's most frequent code (with
    // collapsed codes it is near 1, which is how collapse shows).
    auto mlm = masked_prediction(logits, targets, mask.reshape({-1, 1}).expand({-1, groups_}));

    out.loss = contrastive_weight_ * nce.loss + diversity_weight_ * quantized.diversity + mlm_weight_ * mlm.loss;
    out.metrics.emplace_back("loss", out.loss.detach());
    out.metrics.emplace_back("contrastive_loss", nce.loss.detach());
    out.metrics.emplace_back("contrastive_accuracy", nce.accuracy);
    out.metrics.emplace_back("contrastive_chance", nce.chance);
    out.metrics.emplace_back("contrastive_frames", nce.count);
    out.metrics.emplace_back("mlm_loss", mlm.loss.detach());
    out.metrics.emplace_back("mlm_accuracy", mlm.accuracy);
    out.metrics.emplace_back("mlm_majority_accuracy", mlm.majority_accuracy);
    out.metrics.emplace_back("code_perplexity", quantized.perplexity.detach());
    out.metrics.emplace_back("code_usage_perplexity", quantized.usage_perplexity);
    out.metrics.emplace_back("diversity_loss", quantized.diversity.detach());
    out.metrics.emplace_back("gumbel_temperature", torch::tensor(tau));
    auto share = mask.sum().to(torch::kFloat32) / valid.sum().clamp_min(1).to(torch::kFloat32);
    out.metrics.emplace_back("mask_rate", share);
    return out;
  }

 private:
  Heads heads_{nullptr};
  double mask_prob_ = 0.065, kappa_ = 0.1, t_start_ = 2.0, t_end_ = 0.5, t_decay_ = 0.999995;
  double diversity_weight_ = 0.1, mlm_weight_ = 1.0, contrastive_weight_ = 1.0;
  std::int64_t mask_span_ = 10, distractors_ = 100, groups_ = 1, entries_ = 1024;
  bool learned_mask_ = false;
  bool mlm_sampled_ = true;
};

PluginDescriptor describe() {
  return describe_plugin<W2vBertLoss>(PluginKind::Loss, "w2v_bert", "1.3.1",  // 1.1: mlm_target, valid-frame noise scale; 1.2: random state kept for resume; 1.3: masks and distractors drawn on the device; 1.3.1: the core's masked_prediction
      "w2v-BERT (Chung et al. 2021): span masking, Gumbel quantizer, InfoNCE at the top of the speech encoder, "
      "masked prediction of code ids at the top of the shared encoder",
      OptionSchema()
          .add_float("mask_prob", 0.065, "probability that a frame starts a masked span (w2v-BERT: 0.065)", 0, 1)
          .add_int("mask_span", 10, "masked span length in subsampled frames (w2v-BERT: 10)", 1)
          .add_choice("mask_replacement", "random", {"random", "learned"},
                      "masked frames become random vectors (the paper) or a learned embedding (Meta's code)")
          .add_int("codebooks", 1, "G, quantizer codebooks (w2v-BERT: 1)", 1)
          .add_int("codebook_entries", 1024, "V, entries per codebook (w2v-BERT: 1024)", 2)
          .add_int("code_dim", 0, "quantized vector width (0 = the speech encoder's D)", 0)
          .add_int("distractors", 100, "K, distractors per masked frame from the same utterance", 1)
          .add_float("temperature", 0.1, "kappa: cosine similarity is divided by it", 1e-6)
          .add_float("gumbel_start", 2.0, "Gumbel softmax temperature at step 0", 1e-6)
          .add_float("gumbel_end", 0.5, "lowest Gumbel temperature", 1e-6)
          .add_float("gumbel_decay", 0.999995, "temperature factor per step", 0, 1)
          .add_float("contrastive_weight", 1.0, "weight of the contrastive loss", 0)
          .add_float("diversity_weight", 0.1, "alpha, weight of the diversity loss (paper 0.1, Meta 0.2)", 0)
          .add_float("mlm_weight", 1.0, "weight of the masked-prediction loss", 0)
          .add_choice("mlm_target", "sampled", {"sampled", "argmax"},
                      "masked-prediction targets: the Gumbel-sampled codes the quantized vectors used (fairseq2) or "
                      "the noise-free argmax codes"));
}

}  // namespace
}  // namespace workbench::w2v_bert

WORKBENCH_PLUGIN(workbench::w2v_bert::describe)
