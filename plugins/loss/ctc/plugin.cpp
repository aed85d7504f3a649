// The "ctc" loss plugin: connectionist temporal classification (Graves et al. 2006) over characters,
// blank = 0, on the context vectors: the top of the shared encoder when the model has one, otherwise the
// speech encoder's output (mSLAM section 3 and figure 1: mSLAM-CTC on paired data, with the speech going
// in alone so that the transcript cannot be copied).
#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>

#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/plugin.h"
#include "workbench/vocabulary.h"

namespace workbench::ctc {
namespace {

struct HeadImpl : torch::nn::Module {
  HeadImpl(std::int64_t d_model, std::int64_t vocab) {
    project = register_module("project", torch::nn::Linear(d_model, vocab));
  }
  torch::nn::Linear project{nullptr};
};
TORCH_MODULE(Head);

}  // namespace

torch::Tensor infeasible_rows(const torch::Tensor& tokens, const torch::Tensor& token_lengths,
                              const torch::Tensor& frames) {
  torch::NoGradGuard no_grad;
  const auto L = tokens.size(1);
  auto required = token_lengths.to(torch::kLong);
  if (L > 1) {
    auto pair_valid = ~padding_mask(token_lengths, L).narrow(1, 1, L - 1);  // position i has a left neighbour
    auto repeats = (tokens.narrow(1, 1, L - 1) == tokens.narrow(1, 0, L - 1)) & pair_valid;
    required = required + repeats.sum(1);
  }
  return frames.to(required.device()) < required;
}

namespace {

class CtcLoss final : public Loss, public FramePredictor {
 public:
  CtcLoss(const Options& o, const BuildContext& ctx) : vocabulary_(ctx.vocabulary) {
    if (!vocabulary_) throw ConfigError("[" + o.section() + "]: ctc needs a character vocabulary from paired data");
    speech_layer_ = o.get_string("layer") == "speech_encoder";
    const std::int64_t dim = speech_layer_ ? ctx.speech_dim : ctx.model_dim;
    if (dim <= 0) throw std::invalid_argument("ctc needs the encoder's output dimension");
    head_ = Head(dim, vocabulary_->size());
    head_->to(ctx.device);
    dropout_ = o.get_float("dropout");
  }

  std::vector<BatchKind> accepts() const override { return {BatchKind::Paired}; }
  torch::nn::Module* module() override { return head_.get(); }
  const Vocabulary& vocabulary() const override { return *vocabulary_; }

  std::pair<torch::Tensor, torch::Tensor> frame_log_probs(const Batch& batch, ModelParts& model) override {
    auto enc = speech_layer_ ? model.require_speech_encoder("ctc").forward(batch.features, batch.feature_lengths)
                             : model.speech_context(batch.features, batch.feature_lengths);
    auto x = enc.x;
    if (head_->is_training() && dropout_ > 0)
      x = torch::nn::functional::dropout(x, torch::nn::functional::DropoutFuncOptions().p(dropout_).training(true));
    return {torch::log_softmax(head_->project(x), -1), enc.lengths};
  }

  LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo&) override {
    auto [log_probs, lengths] = frame_log_probs(batch, model);
    // ctc_loss wants (T, B, V); "mean" divides each utterance's loss by its target length, then averages.
    // zero_infinity: an utterance whose transcript cannot fit in its frames contributes 0, not inf.
    auto loss = torch::nn::functional::ctc_loss(
        log_probs.transpose(0, 1), batch.tokens, lengths, batch.token_lengths,
        torch::nn::functional::CTCLossFuncOptions().blank(Vocabulary::kBlank).reduction(torch::kMean).zero_infinity(true));
    LossOutput out;
    out.loss = loss;
    out.metrics.emplace_back("loss", loss.detach());
    // Share of valid (unpadded) frames whose best symbol is blank: near 1 early in training.
    auto valid = ~padding_mask(lengths, log_probs.size(1));
    auto blank = (log_probs.detach().argmax(-1) == Vocabulary::kBlank) & valid;
    auto blank_share = blank.sum().to(torch::kFloat32) / valid.sum().clamp_min(1).to(torch::kFloat32);
    out.metrics.emplace_back("blank_rate", blank_share);
    // zero_infinity turns an utterance whose transcript cannot fit its frames into a loss of 0, silently:
    // count them. A path needs a frame per label plus a blank between each pair of equal neighbours.
    auto infeasible = infeasible_rows(batch.tokens, batch.token_lengths, lengths);
    out.metrics.emplace_back("infeasible_utterances", infeasible.sum().to(torch::kFloat32));
    out.metrics.emplace_back("infeasible_share", infeasible.to(torch::kFloat32).mean());
    return out;
  }

 private:
  std::shared_ptr<const Vocabulary> vocabulary_;
  Head head_{nullptr};
  double dropout_ = 0;
  bool speech_layer_ = false;
};

PluginDescriptor describe() {
  return describe_plugin<CtcLoss>(PluginKind::Loss, "ctc", "1.2.0",  // 1.1: infeasible utterances counted; 1.2: layer
      "CTC over characters (blank = 0) at the top of the shared encoder (or the speech encoder), on paired data",
      OptionSchema()
          .add_float("dropout", 0.0, "dropout before the output projection", 0, 1)
          .add_choice("layer", "auto", {"auto", "shared_encoder", "speech_encoder"},
                      "the encoder output it reads: auto = the shared encoder's when the model has one"));
}

}  // namespace
}  // namespace workbench::ctc

WORKBENCH_PLUGIN(workbench::ctc::describe)
