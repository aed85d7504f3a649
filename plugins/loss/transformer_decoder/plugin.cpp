// The "transformer_decoder" loss plugin: a sequence-to-sequence head for speech translation (SLAM and
// mSLAM fine-tune a Transformer decoder on CoVoST 2 X -> En; here the sizes are options, tiny by default
// for the CPU). Trained with teacher forcing and label-smoothed cross-entropy on each utterance's
// translation target (Batch::targets) over the characters of the training targets or SentencePiece pieces
// trained on them (targets.h), kept in the checkpoint. It decodes itself (a Translator): greedy or beam search over a key/value cache, from speech
// or, through the text embedding and the shared encoder, from the source transcript: zero-shot text
// translation after speech-only fine-tuning, or mSLAM section 5's multi-modal fine-tuning (input = "both").
#include <algorithm>
#include <cstring>

#include <fmt/format.h>
#include <torch/nn/functional/loss.h>

#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/plugin.h"
#include "decoder.h"
#include "search.h"
#include "targets.h"

namespace workbench::transformer_decoder {
namespace {

namespace F = torch::nn::functional;

// The decoder and, as a buffer, its target units (TargetUnits::serialize bytes): a checkpoint then
// decodes with the characters or pieces it was trained on.
struct HeadImpl : torch::nn::Module {
  HeadImpl(const DecoderOptions& options, const std::string& vocabulary) {
    decoder = register_module("decoder", TransformerDecoder(options));
    auto bytes = torch::empty({static_cast<std::int64_t>(vocabulary.size())}, torch::kUInt8);
    std::memcpy(bytes.data_ptr<std::uint8_t>(), vocabulary.data(), vocabulary.size());
    target_vocabulary = register_buffer("target_vocabulary", bytes);
  }
  TransformerDecoder decoder{nullptr};
  torch::Tensor target_vocabulary;
};
TORCH_MODULE(Head);

std::int64_t auto_max_length(const std::vector<std::string>& targets, const TargetUnits& v) {
  std::size_t longest = 0;
  for (const auto& t : targets) longest = std::max(longest, v.encode(t).size());
  return static_cast<std::int64_t>(static_cast<double>(longest) * 1.2) + 10;
}

class TransformerDecoderLoss final : public Loss, public Translator {
 public:
  TransformerDecoderLoss(const Options& o, const BuildContext& ctx)
      : section_(o.section()),
        layer_(o.get_string("layer")),
        input_(o.get_string("input")),
        label_smoothing_(o.get_float("label_smoothing")),
        text_weight_(o.get_float("text_weight")) {
    if (!ctx.training_targets || ctx.training_targets->empty())
      throw ConfigError(fmt::format("[{}]: transformer_decoder needs translation targets in the training data (a "
                                    "dataset with them, e.g. asterisk with translate_to = \"en\")",
                                    section_));
    if (layer_ == "speech_encoder" && input_ != "speech")
      o.fail("input", "text input goes through the shared encoder: it needs layer = \"auto\" or \"shared_encoder\"");
    if (o.get_int("dim") % o.get_int("heads") != 0) o.fail("dim", "must be a multiple of heads");
    if (o.get_string("targets") == "sentencepiece") {
      try {
        // A fixed seed, not the objective's: every rank and every seed of a sweep gets the same pieces.
        vocabulary_ = TargetUnits::sentencepiece(*ctx.training_targets, o.get_int("target_vocab_size"), 1);
      } catch (const std::runtime_error& e) {
        o.fail("target_vocab_size", fmt::format("SentencePiece could not train on the {} training targets: {}",
                                                ctx.training_targets->size(), e.what()));
      }
    } else {
      vocabulary_ = TargetUnits::characters(*ctx.training_targets);
    }
    vocabulary_text_ = vocabulary_.serialize();
    const std::int64_t dim = layer_ == "speech_encoder" ? ctx.speech_dim : ctx.model_dim;
    if (dim <= 0) throw std::invalid_argument("transformer_decoder needs the encoder's output dimension");
    // Ids: 0 = padding, 1 = unknown, the units, then one end symbol that also starts the input.
    eos_ = vocabulary_.size();
    search_.bos = search_.eos = eos_;
    search_.beam_size = o.get_int("beam_size");
    search_.length_penalty = o.get_float("length_penalty");
    search_.max_length = o.get_int("max_length") > 0 ? o.get_int("max_length")
                                                     : auto_max_length(*ctx.training_targets, vocabulary_);
    per_frame_ = o.get_float("max_length_per_frame");
    per_token_ = o.get_float("max_length_per_token");
    head_ = Head(DecoderOptions(eos_ + 1, dim)
                     .dim(o.get_int("dim"))
                     .heads(o.get_int("heads"))
                     .ffn_dim(o.get_int("ffn_dim"))
                     .layers(o.get_int("layers"))
                     .dropout(o.get_float("dropout")),
                 vocabulary_text_);
    head_->to(ctx.device);
  }

  std::vector<BatchKind> accepts() const override { return {BatchKind::Paired}; }
  torch::nn::Module* module() override { return head_.get(); }

  LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo&) override {
    auto [input, target] = teacher_forcing(batch);
    LossOutput out;
    torch::Tensor total;
    if (input_ != "text") {
      total = add_loss(out, "", encode(batch, model, Source::Speech), input, target);
    }
    if (input_ != "speech") {
      auto text = add_loss(out, "text_", encode(batch, model, Source::Text), input, target);
      total = total.defined() ? total + text_weight_ * text : text;
    }
    out.loss = total;
    return out;
  }

  bool supports(Source source, const ModelParts& model) const override {
    return source == Source::Speech || (layer_ != "speech_encoder" && model.text_embedding && model.shared_encoder);
  }

  std::vector<std::string> translate(const Batch& batch, ModelParts& model, Source source) override {
    refresh_vocabulary();
    auto enc = encode(batch, model, source);
    SearchOptions search = search_;
    search.max_length_per_frame = source == Source::Speech ? per_frame_ : per_token_;
    auto hyps = search.beam_size > 1 ? beam_search(head_->decoder, enc.x, enc.lengths, search)
                                     : greedy_search(head_->decoder, enc.x, enc.lengths, search);
    std::vector<std::string> out;
    for (const auto& h : hyps) out.push_back(vocabulary_.decode(h.tokens));
    return out;
  }

 private:
  EncoderOutput encode(const Batch& batch, ModelParts& model, Source source) {
    if (source == Source::Speech)
      return layer_ == "speech_encoder" ? model.require_speech_encoder(section_).forward(batch.features, batch.feature_lengths)
                                        : model.speech_context(batch.features, batch.feature_lengths);
    if (!supports(Source::Text, model))
      throw ConfigError(fmt::format("[{}]: text input needs [model.text_embedding] and [model.shared_encoder]", section_));
    auto& text = model.require_text_embedding(section_);
    auto [tokens, lengths] = text.tokenize(batch);
    return model.shared_from_text(text.embed(tokens, lengths));
  }

  // (B, L + 1) decoder input (the end symbol, then the target) and output (the target, then the end
  // symbol), 0 after each row's length.
  std::pair<torch::Tensor, torch::Tensor> teacher_forcing(const Batch& batch) const {
    std::vector<std::vector<std::int64_t>> ids;
    std::size_t longest = 0;
    for (std::size_t i = 0; i < batch.targets.size(); ++i) {
      if (batch.targets[i].empty())
        throw DataError(fmt::format("[{}]: utterance '{}' has no translation target (does its dataset set "
                                    "translate_to?)",
                                    section_, batch.ids[i]));
      ids.push_back(vocabulary_.encode(batch.targets[i]));
      longest = std::max(longest, ids.back().size());
    }
    const auto B = static_cast<std::int64_t>(ids.size()), L = static_cast<std::int64_t>(longest) + 1;
    auto input = torch::zeros({B, L}, torch::kLong), target = torch::zeros({B, L}, torch::kLong);
    auto* in = input.data_ptr<std::int64_t>();
    auto* tg = target.data_ptr<std::int64_t>();
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& y = ids[static_cast<std::size_t>(b)];
      in[b * L] = eos_;
      for (std::size_t t = 0; t < y.size(); ++t) {
        in[b * L + static_cast<std::int64_t>(t) + 1] = y[t];
        tg[b * L + static_cast<std::int64_t>(t)] = y[t];
      }
      tg[b * L + static_cast<std::int64_t>(y.size())] = eos_;
    }
    const auto device = head_->target_vocabulary.device();
    return {input.to(device), target.to(device)};
  }

  // Label-smoothed cross-entropy over the valid target tokens (padding is ignore_index 0), with the
  // unsmoothed per-token NLL and token accuracy as metrics.
  torch::Tensor add_loss(LossOutput& out, const std::string& prefix, const EncoderOutput& enc, const torch::Tensor& input,
                         const torch::Tensor& target) {
    auto logits = head_->decoder->forward(input, enc.x, enc.lengths);
    const auto V = logits.size(-1);
    auto flat = logits.reshape({-1, V});
    auto y = target.reshape({-1});
    auto loss = F::cross_entropy(flat, y, F::CrossEntropyFuncOptions().ignore_index(0).label_smoothing(label_smoothing_));
    {
      torch::NoGradGuard no_grad;
      auto valid = y != 0;
      auto count = valid.sum().clamp_min(1).to(torch::kFloat32);
      out.metrics.emplace_back(prefix + "loss", loss.detach());
      out.metrics.emplace_back(prefix + "nll", F::cross_entropy(flat, y, F::CrossEntropyFuncOptions().ignore_index(0)));
      out.metrics.emplace_back(prefix + "accuracy", ((flat.argmax(-1) == y) & valid).sum().to(torch::kFloat32) / count);
    }
    return loss;
  }

  // A loaded checkpoint's vocabulary wins over the one built from this run's targets.
  void refresh_vocabulary() {
    auto bytes = head_->target_vocabulary.to(torch::kCPU).contiguous();
    std::string text(reinterpret_cast<const char*>(bytes.data_ptr<std::uint8_t>()), static_cast<std::size_t>(bytes.numel()));
    if (text == vocabulary_text_) return;
    auto loaded = TargetUnits::deserialize(text);
    if (loaded.size() != vocabulary_.size())
      throw ConfigError(fmt::format("[{}]: the checkpoint's target vocabulary has {} symbols, this head {}", section_,
                                    loaded.size(), vocabulary_.size()));
    vocabulary_ = std::move(loaded);
    vocabulary_text_ = std::move(text);
  }

  std::string section_, layer_, input_;
  double label_smoothing_, text_weight_, per_frame_ = 0, per_token_ = 0;
  TargetUnits vocabulary_;
  std::string vocabulary_text_;
  std::int64_t eos_ = 0;
  SearchOptions search_;
  Head head_{nullptr};
};

PluginDescriptor describe() {
  return describe_plugin<TransformerDecoderLoss>(PluginKind::Loss, "transformer_decoder", "1.1.0",  // 1.1: SentencePiece targets
      "Transformer decoder head (pre-LN, cross-attention, KV cache) for speech translation on data with "
      "translation targets; greedy or beam search, from speech or from the source text",
      OptionSchema()
          .add_choice("layer", "auto", {"auto", "shared_encoder", "speech_encoder"},
                      "the encoder output it attends to: auto = the shared encoder's when the model has one")
          .add_choice("input", "speech", {"speech", "text", "both"},
                      "what it is trained from: speech (speech translation), text (the source transcript: text "
                      "translation), or both (mSLAM's multi-modal fine-tuning)")
          .add_float("text_weight", 1.0, "input = both: weight of the text-input loss", 0)
          .add_int("dim", 256, "decoder width (SLAM: 384, mSLAM: 512)", 1)
          .add_int("heads", 4, "attention heads", 1)
          .add_int("ffn_dim", 1024, "feed-forward width", 1)
          .add_int("layers", 2, "decoder layers (SLAM: 4, mSLAM: 6)", 1)
          .add_float("dropout", 0.1, "dropout (mSLAM: 0.3)", 0, 1)
          .add_float("label_smoothing", 0.1, "label smoothing of the cross-entropy", 0, 1)
          .add_int("beam_size", 4, "1 = greedy decoding; > 1 = beam search with this many hypotheses", 1)
          .add_float("length_penalty", 1.0, "beam search: scores are log P / (tokens + 1)^length_penalty", 0)
          .add_choice("targets", "characters", {"characters", "sentencepiece"},
                      "output units: the characters of the training targets, or a SentencePiece unigram model "
                      "trained on them at start-up (kept in the checkpoint)")
          .add_int("target_vocab_size", 256,
                   "targets = sentencepiece: pieces, unknown included (at most what the targets support)", 2)
          .add_int("max_length", 0, "longest output in units; 0 = 1.2 x the longest training target + 10", 0)
          .add_float("max_length_per_frame", 1.0,
                     "from speech, a row's output ends by 10 + this x its encoder frames (40 ms each after 4x "
                     "subsampling; about 0.5 characters of English are spoken per frame, fewer pieces); 0 = "
                     "max_length only", 0)
          .add_float("max_length_per_token", 2.0,
                     "from text, a row's output ends by 10 + this x its source tokens; 0 = max_length only", 0));
}

}  // namespace
}  // namespace workbench::transformer_decoder

WORKBENCH_PLUGIN(workbench::transformer_decoder::describe)
