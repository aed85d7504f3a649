// The "stm" loss plugin: speech-text matching on paired data (SLAM section 3.3, after ALBEF's image-text
// matching, Li et al. 2021, section 3.2). Some transcripts of the batch are swapped for another row's
// different transcript; speech ++ text goes through the shared encoder, the joint output is mean-pooled
// over its valid positions, and Linear(D, 1) tells matched pairs (label 1) from mismatched ones (label 0)
// with binary cross-entropy.
//
// SLAM publishes neither the head nor the negative sampling (reference section 3: "?"): the pooled mean
// replaces ALBEF's [CLS] output (the joint sequence has no [CLS]), and negatives are drawn uniformly
// among the batch's other texts rather than ALBEF's similarity-weighted hard negatives.

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>

#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/plugin.h"

#include "negatives.h"

namespace workbench::stm {
namespace {

namespace F = torch::nn::functional;

struct HeadImpl : torch::nn::Module {
  explicit HeadImpl(std::int64_t d_model) { classify = register_module("classify", torch::nn::Linear(d_model, 1)); }
  torch::nn::Linear classify{nullptr};
};
TORCH_MODULE(Head);

class StmLoss final : public Loss {
 public:
  StmLoss(const Options& o, const BuildContext& ctx) : negative_rate_(o.get_float("negative_rate")) {
    if (ctx.model_dim <= 0) throw std::invalid_argument("stm needs the shared encoder's output dimension");
    // The schema's bounds apply to experiment files; tests and tools can build Options directly.
    if (!(negative_rate_ >= 0 && negative_rate_ <= 1)) o.fail("negative_rate", "must be in [0, 1]");
    head_ = Head(ctx.model_dim);
    head_->to(ctx.device);
  }

  std::vector<BatchKind> accepts() const override { return {BatchKind::Paired}; }
  torch::nn::Module* module() override { return head_.get(); }

  // Resume: the negatives come from torch's generator, which the trainer's checkpoints keep.

  LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo&) override {
    auto& speech = model.require_speech_encoder("stm");
    auto& text = model.require_text_embedding("stm");
    model.require_shared_encoder("stm");

    auto contrastive = speech.forward(batch.features, batch.feature_lengths);
    auto [tokens, token_lengths] = text.tokenize(batch);
    // Negatives of the nearest text length: the speech-to-text length ratio must not give them away. Drawn
    // on the device: nothing is read back to the host.
    auto partner = choose_partners(tokens, token_lengths, negative_rate_);
    auto rows = torch::arange(partner.size(0), partner.options());
    auto swapped = text.embed(tokens.index_select(0, partner), token_lengths.index_select(0, partner));

    auto joint = model.shared_from_pair(contrastive, swapped);
    auto pooled = masked_mean(joint.joint.x, joint.joint.lengths);  // (B, D)
    auto logits = head_->classify(pooled).squeeze(-1);                // (B)
    auto labels = (partner == rows).to(logits.dtype());               // 1 = matched
    auto loss = F::binary_cross_entropy_with_logits(logits, labels);

    LossOutput out;
    out.loss = loss;
    out.metrics.emplace_back("loss", loss.detach());
    auto predicted = (logits.detach() > 0).to(logits.dtype());
    out.metrics.emplace_back("accuracy", (predicted == labels).to(torch::kFloat32).mean());
    out.metrics.emplace_back("negative_rate", 1.0 - labels.to(torch::kFloat32).mean());
    return out;
  }

 private:
  double negative_rate_;
  Head head_{nullptr};
};

PluginDescriptor describe() {
  return describe_plugin<StmLoss>(PluginKind::Loss, "stm", "1.3.0",  // 1.1: negatives of the nearest length; 1.2: random state kept for resume; 1.3: negatives drawn on the device
      "speech-text matching on paired data: matched vs swapped transcripts, a binary classifier on "
                  "the pooled speech ++ text context vectors",
      OptionSchema()
          .add_float("negative_rate", 0.5,
                          "probability that a row's transcript is swapped for a different one of the batch", 0, 1));
}

}  // namespace
}  // namespace workbench::stm

WORKBENCH_PLUGIN(workbench::stm::describe)
