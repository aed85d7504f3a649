// The "tlm" loss plugin: translation language modelling on paired speech + text (XLM, Conneau & Lample
// 2019, section 3.3; SLAM section 3.3). The speech encoder's output for span-masked frames and the
// SpanBERT-masked transcript go through the shared encoder as one sequence; heads on the context vectors
// predict the masked characters / pieces and the w2v-BERT code ids of the masked frames, so that each
// side can be filled in from the other.
//
// Shapes: features (B, T, F) -> embed (B, T', Ds) -> masked -> encode (B, T', Ds); text (B, L) ->
// (B, L, D); joint (B, T' + L packed, D). Text head: Linear(D, text vocabulary); speech head:
// Linear(D, G*V), read as G softmaxes over V entries. Both losses are means over the masked positions
// (padding is never a target); loss = text_loss + speech_weight * speech_loss.
//
// The speech targets come from the objective named by `code_provider` (a workbench::SpeechCodeProvider,
// i.e. w2v_bert's quantizer), applied to the unmasked features; the speech head is sized from it (G*V
// outputs) in the connect phase, before the optimizer exists. code_provider = "" trains the text side
// only, still from half-hidden speech (a TLM next to CTC). Masks and the random vectors for masked frames
// come from torch's generator on the batch's device (seeded by the core, kept in checkpoints).
#include <cstdio>
#include <stdexcept>
#include <string>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/masked_prediction.h"
#include "workbench/masking.h"
#include "workbench/plugin.h"

#include "tlm_masking.h"

namespace workbench::tlm {
namespace {

namespace F = torch::nn::functional;

struct HeadsImpl : torch::nn::Module {
  HeadsImpl(std::int64_t d_model, std::int64_t text_vocab) {
    text_head = register_module("text_head", torch::nn::Linear(d_model, text_vocab));
  }
  /// Added in the connect phase, once the provider's G*V is known.
  void add_speech_head(std::int64_t d_model, std::int64_t speech_codes) {
    if (speech_head) {
      if (speech_head->options.out_features() != speech_codes)
        throw std::logic_error("tlm: connected twice to providers of different sizes");
      return;
    }
    speech_head = register_module("speech_head", torch::nn::Linear(d_model, speech_codes));
  }
  torch::nn::Linear text_head{nullptr}, speech_head{nullptr};
};
TORCH_MODULE(Heads);

class TlmLoss final : public Loss {
 public:
  TlmLoss(const Options& o, const BuildContext& ctx)
      : options_(o),
        speech_coverage_(o.get_float("speech_mask_coverage")),
        speech_span_(o.get_int("speech_mask_span")),
        code_provider_(o.get_string("code_provider")),
        d_model_(ctx.model_dim),
        speech_weight_(o.get_float("speech_weight")),
        text_vocab_(ctx.text_vocab_size) {
    if (ctx.text_vocab_size <= 0)
      throw ConfigError("[" + o.section() + "]: tlm needs [model.text_embedding] (no text vocabulary to predict)");
    if (ctx.model_dim <= 0) throw std::invalid_argument("tlm needs the shared encoder's output dimension");
    // The options' schema bounds apply to experiment files; tests and tools can build Options directly.
    if (!(speech_coverage_ >= 0 && speech_coverage_ < 1)) o.fail("speech_mask_coverage", "must be in [0, 1)");
    if (speech_span_ < 1) o.fail("speech_mask_span", "must be at least 1");
    text_masking_.budget = o.get_float("text_mask_rate");
    text_masking_.geometric_p = o.get_float("text_span_p");
    text_masking_.max_span = o.get_int("text_max_span");
    if (!(text_masking_.budget > 0 && text_masking_.budget <= 1)) o.fail("text_mask_rate", "must be in (0, 1]");
    if (!(text_masking_.geometric_p > 0 && text_masking_.geometric_p <= 1)) o.fail("text_span_p", "must be in (0, 1]");
    if (text_masking_.max_span < 1) o.fail("text_max_span", "must be at least 1");
    heads_ = Heads(ctx.model_dim, ctx.text_vocab_size);
    heads_->to(ctx.device);
    device_ = ctx.device;
  }

  void connect(const Connections& connections) override {
    if (code_provider_.empty()) return;
    provider_ = &connections.require<SpeechCodeProvider>(
        code_provider_, "[" + options_.section() + "] (tlm)", "speech codes",
        "add a w2v_bert objective of that name, or set code_provider = \"\" to predict the masked text only");
    heads_->add_speech_head(d_model_, provider_->groups() * provider_->entries());
    heads_->speech_head->to(device_);
  }

  std::vector<BatchKind> accepts() const override { return {BatchKind::Paired}; }
  torch::nn::Module* module() override { return heads_.get(); }

  LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo&) override {
    auto& speech = model.require_speech_encoder("tlm");
    auto& text = model.require_text_embedding("tlm");
    model.require_shared_encoder("tlm");
    if (text.vocab_size() != text_vocab_)
      throw ConfigError(fmt::format("[{}]: the text embedding has {} ids but tlm was built for {}", options_.section(),
                                    text.vocab_size(), text_vocab_));
    if (!code_provider_.empty() && !provider_) throw std::logic_error("tlm: compute() before connect()");
    SpeechCodeProvider* provider = provider_;

    // Speech: the codes are computed on the unmasked features, as w2v-BERT's own targets are.
    auto features = speech.embed(batch.features, batch.feature_lengths);
    auto frames = mask_frames_with_noise(features.x, features.lengths, speech_coverage_, speech_span_);
    auto contrastive = speech.encode({frames.inputs, features.lengths});

    // Text: SpanBERT masking at TLM's higher rate (80% [MASK] / 10% random / 10% unchanged per span).
    auto [tokens, token_lengths] = text.tokenize(batch);
    auto masked_text = span_mask_text(tokens, token_lengths, text_masking_, text.mask_id(), text.first_regular_id(),
                                text.end_regular_id());
    auto joint = model.shared_from_pair(contrastive, text.embed(masked_text.inputs, token_lengths));

    // The masked tokens packed to the front of each row, (B, K), weighed by position_valid.
    auto text_logits = heads_->text_head(gather_positions(joint.text(), masked_text.positions));  // (B, K, V)
    auto text_prediction =
        masked_prediction(text_logits, tokens.gather(1, masked_text.positions), masked_text.position_valid);
    auto loss = text_prediction.loss;

    torch::Tensor speech_loss, speech_accuracy;
    if (provider) {
      torch::Tensor codes;
      {
        torch::NoGradGuard no_grad;
        codes = provider->code_ids(features.x.detach());
      }
      const auto G = provider->groups(), V = provider->entries();
      if (codes.dim() != 3 || codes.size(0) != features.x.size(0) || codes.size(1) != features.x.size(1) ||
          codes.size(2) != G)
        throw std::runtime_error(fmt::format("tlm: objective '{}' gave speech codes of shape ({}) for features of "
                                             "shape ({}); expected (B, T, {})",
                                             code_provider_, fmt::join(codes.sizes(), ", "),
                                             fmt::join(features.x.sizes(), ", "), G));
      // Every frame, the masked ones counted: (B, T, G) softmaxes over V entries.
      const auto B = codes.size(0), T = codes.size(1);
      auto logits = heads_->speech_head(joint.speech()).view({B, T, G, V});
      auto speech = masked_prediction(logits, codes.to(torch::kLong), frames.mask.unsqueeze(-1).expand({B, T, G}));
      speech_loss = speech.loss;
      speech_accuracy = speech.accuracy;
      loss = loss + speech_weight_ * speech_loss;
    }

    LossOutput out;
    out.metrics.emplace_back("loss", loss.detach());
    out.metrics.emplace_back("text_loss", text_prediction.loss.detach());
    out.metrics.emplace_back("text_accuracy", text_prediction.accuracy);
    if (provider) {
      out.metrics.emplace_back("speech_loss", speech_loss.detach());
      out.metrics.emplace_back("speech_accuracy", speech_accuracy);
    }
    out.metrics.emplace_back("text_mask_rate", share(masked_text.targets, token_lengths));
    out.metrics.emplace_back("speech_mask_rate", share(frames.mask, features.lengths));
    out.loss = loss;
    return out;
  }

 private:
  /// Share of the valid positions that are true in `selected` (B, T) bool.
  static torch::Tensor share(const torch::Tensor& selected, const torch::Tensor& lengths) {
    return selected.sum().to(torch::kFloat32) / lengths.to(selected.device()).sum().clamp_min(1).to(torch::kFloat32);
  }

  Options options_;
  double speech_coverage_;
  std::int64_t speech_span_;
  std::string code_provider_;
  std::int64_t d_model_;
  double speech_weight_;
  std::int64_t text_vocab_;
  TextMaskingOptions text_masking_;
  Heads heads_{nullptr};
  SpeechCodeProvider* provider_ = nullptr;
  c10::Device device_ = c10::Device(c10::DeviceType::CPU);
};

PluginDescriptor describe() {
  return describe_plugin<TlmLoss>(PluginKind::Loss, "tlm", "2.3.0",  // 2.0: speech_codes gone, sized by connect(); 2.1: random state kept for resume; 2.2: speech masks drawn on the device; 2.3: text masks and both targets too
      "translation language modelling on paired data: masked text and speech codes predicted from "
                  "speech ++ text at the top of the shared encoder",
      OptionSchema()
          .add_float("speech_mask_coverage", 0.75, "share of speech frames masked on average (SLAM: about 75%)", 0, 0.99)
          .add_int("speech_mask_span", 10, "frames per masked speech span (w2v-BERT: 10)", 1)
          .add_float("text_mask_rate", 0.5, "share of each transcript's tokens masked (SLAM: about 50%)", 0.01, 1)
          .add_float("text_span_p", 0.2, "text span lengths are Geometric(p) (SpanBERT: 0.2)", 0.01, 1)
          .add_int("text_max_span", 10, "longest text span (SpanBERT: 10)", 1)
          .add_string("code_provider", "w2v_bert",
                      "objective whose speech codes are the speech targets (the speech head gets its G*V outputs); "
                      "\"\": text targets only")
          .add_float("speech_weight", 1.0, "weight of the speech loss against the text loss", 0));
}

}  // namespace
}  // namespace workbench::tlm

WORKBENCH_PLUGIN(workbench::tlm::describe)
