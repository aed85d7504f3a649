// The "span_bert" loss plugin: SpanBERT masked language modelling (Joshi et al. 2020, section 3.1) on
// unpaired text, at the top of the shared encoder (SLAM section 3.2; mSLAM figure 1). Spans with
// Geometric(p) lengths cover `mask_rate` of each sentence; each span becomes [MASK] (80%), random tokens
// (10%) or stays (10%); the loss is the cross-entropy of the original tokens at the selected positions.
#include <torch/nn/modules/linear.h>

#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/masked_prediction.h"
#include "workbench/masking.h"
#include "workbench/plugin.h"

namespace workbench::span_bert {
namespace {

struct HeadImpl : torch::nn::Module {
  HeadImpl(std::int64_t dim, std::int64_t vocab) { project = register_module("project", torch::nn::Linear(dim, vocab)); }
  torch::nn::Linear project{nullptr};
};
TORCH_MODULE(Head);

class SpanBertLoss final : public Loss {
 public:
  SpanBertLoss(const Options& o, const BuildContext& ctx) {
    if (ctx.text_vocab_size <= 0)
      throw ConfigError("[" + o.section() + "]: span_bert needs [model.text_embedding] (no text vocabulary)");
    masking_.budget = o.get_float("mask_rate");
    if (!(masking_.budget >= 0 && masking_.budget <= 1)) o.fail("mask_rate", "must be in [0, 1]");
    masking_.geometric_p = o.get_float("span_p");
    masking_.max_span = o.get_int("max_span");
    const std::string& shape = o.get_string("span_shape");
    masking_.span = shape == "fixed"       ? SpanLength::Fixed
                    : shape == "geometric" ? SpanLength::Geometric
                                           : SpanLength::ClippedGeometric;
    masking_.span_length = o.get_float("span_length");
    if (masking_.span != SpanLength::ClippedGeometric && masking_.span_length < 1)
      o.fail("span_length", "span_shape = \"" + shape + "\" needs span_length >= 1");
    masking_.mask_share = o.get_float("mask_token_share");
    masking_.random_share = o.get_float("random_token_share");
    if (masking_.mask_share + masking_.random_share > 1.0)
      o.fail("random_token_share", "mask_token_share + random_token_share must not exceed 1");
    head_ = Head(ctx.model_dim, ctx.text_vocab_size);
    head_->to(ctx.device);
  }

  std::vector<BatchKind> accepts() const override { return {BatchKind::Text, BatchKind::Paired}; }
  torch::nn::Module* module() override { return head_.get(); }

  LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo&) override {
    auto& text = model.require_text_embedding("span_bert");
    model.require_shared_encoder("span_bert");
    auto [tokens, lengths] = text.tokenize(batch);
    auto masked = span_mask_text(tokens, lengths, masking_, text.mask_id(), text.first_regular_id(),
                                 text.end_regular_id());
    auto context = model.shared_from_text(text.embed(masked.inputs, lengths));
    // The selected positions packed to the front of each row, (B, K), weighed by position_valid.
    auto logits = head_->project(gather_positions(context.x, masked.positions));  // (B, K, V)
    auto prediction = masked_prediction(logits, tokens.gather(1, masked.positions), masked.position_valid);
    LossOutput out;
    out.loss = prediction.loss;
    out.metrics.emplace_back("loss", out.loss.detach());
    out.metrics.emplace_back("accuracy", prediction.accuracy);
    // The accuracy of always guessing the most frequent target: what "learning" must beat.
    out.metrics.emplace_back("majority_accuracy", prediction.majority_accuracy);
    auto valid = ~padding_mask(lengths, tokens.size(1));
    out.metrics.emplace_back("mask_rate", masked.targets.sum().to(torch::kFloat32) /
                                              valid.sum().clamp_min(1).to(torch::kFloat32));
    return out;
  }

 private:
  Head head_{nullptr};
  TextMaskingOptions masking_;
};

PluginDescriptor describe() {
  return describe_plugin<SpanBertLoss>(PluginKind::Loss, "span_bert", "1.3.0",  // 1.1: span_shape, span_length; 1.2: random state kept for resume; 1.3: masks and targets on the device
      "SpanBERT masked language modelling (Joshi et al. 2020) at the top of the shared encoder",
      OptionSchema()
          .add_float("mask_rate", 0.15, "share of each sentence's tokens selected (SpanBERT: 15%)", 0, 1)
          .add_float("span_p", 0.2, "p of the geometric span-length distribution (SpanBERT: 0.2)", 1e-6, 1)
          .add_int("max_span", 10, "clipped_geometric: longest span (SpanBERT: 10 words)", 1)
          .add_choice("span_shape", "clipped_geometric", {"clipped_geometric", "fixed", "geometric"},
                      "span lengths: SpanBERT's Geometric(span_p) clipped to max_span (mean 3.8); every span "
                      "span_length long (SLAM: 5 pieces, mSLAM: 20 characters); or geometric with mean span_length")
          .add_float("span_length", 0.0, "fixed and geometric: the (mean) span length", 0)
          .add_float("mask_token_share", 0.8, "share of spans replaced by [MASK]", 0, 1)
          .add_float("random_token_share", 0.1, "share of spans replaced by random tokens (the rest stay)", 0, 1));
}

}  // namespace
}  // namespace workbench::span_bert

WORKBENCH_PLUGIN(workbench::span_bert::describe)
