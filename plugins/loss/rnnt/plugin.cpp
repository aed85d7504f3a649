// The "rnnt" loss plugin: the RNN transducer (Graves 2012), the ASR head SLAM and mSLAM fine-tune (a
// prediction network of 2 LSTM layers x 640 units and a joint network over the encoder; here the sizes
// are options, small by default for the CPU). Trained with the loss in rnnt_loss.cpp; it decodes
// itself (a Transcriber): greedy, or a beam search over label histories (beam_size > 1).
#include <algorithm>
#include <map>

#include <torch/nn/functional/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/rnn.h>

#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/plugin.h"
#include "workbench/vocabulary.h"

#include "rnnt_loss.h"

namespace workbench::rnnt {
namespace {

using LstmState = std::tuple<torch::Tensor, torch::Tensor>;

struct TransducerImpl : torch::nn::Module {
  TransducerImpl(std::int64_t enc_dim, std::int64_t vocab, std::int64_t pred_dim, std::int64_t pred_layers,
                 std::int64_t joint_dim) {
    embed = register_module("embed", torch::nn::Embedding(vocab, pred_dim));
    lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(pred_dim, pred_dim)
                                                       .num_layers(pred_layers)
                                                       .batch_first(true)));
    enc_proj = register_module("enc_proj", torch::nn::Linear(enc_dim, joint_dim));
    pred_proj = register_module("pred_proj", torch::nn::Linear(pred_dim, joint_dim));
    out = register_module("out", torch::nn::Linear(joint_dim, vocab));
  }
  /// Label history (B, L) -> prediction vectors projected to the joint (B, L, J), and the LSTM state.
  std::pair<torch::Tensor, LstmState> predict(const torch::Tensor& labels, const c10::optional<LstmState>& state) {
    auto [y, s] = lstm->forward(embed(labels), state);
    return {pred_proj(y), s};
  }
  /// f (..., J) + g (..., J) -> logits (..., V).
  torch::Tensor joint(const torch::Tensor& f, const torch::Tensor& g) { return out(torch::tanh(f + g)); }

  torch::nn::Embedding embed{nullptr};
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Linear enc_proj{nullptr}, pred_proj{nullptr}, out{nullptr};
};
TORCH_MODULE(Transducer);

class RnntLoss final : public Loss, public Transcriber {
 public:
  RnntLoss(const Options& o, const BuildContext& ctx)
      : vocabulary_(ctx.vocabulary),
        layer_(o.get_string("layer")),
        dropout_(o.get_float("dropout")),
        max_symbols_(o.get_int("max_symbols_per_frame")),
        beam_(o.get_int("beam_size")) {
    if (!vocabulary_) throw ConfigError("[" + o.section() + "]: rnnt needs a character vocabulary from paired data");
    const std::int64_t dim = layer_ == "speech_encoder" ? ctx.speech_dim : ctx.model_dim;
    if (dim <= 0) throw std::invalid_argument("rnnt needs the encoder's output dimension");
    net_ = Transducer(dim, vocabulary_->size(), o.get_int("pred_dim"), o.get_int("pred_layers"), o.get_int("joint_dim"));
    net_->to(ctx.device);
  }

  std::vector<BatchKind> accepts() const override { return {BatchKind::Paired}; }
  torch::nn::Module* module() override { return net_.get(); }

  LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo&) override {
    auto enc = encode(batch, model);
    auto f = net_->enc_proj(enc.x);                                            // (B, T, J)
    const auto B = batch.size();
    auto start = torch::full({B, 1}, Vocabulary::kBlank, batch.tokens.options());  // blank starts the history
    auto [g, state] = net_->predict(torch::cat({start, batch.tokens}, 1), c10::nullopt);  // (B, U+1, J)
    auto logits = net_->joint(f.unsqueeze(2), g.unsqueeze(1));                 // (B, T, U+1, V)
    auto costs = rnnt_loss(logits, batch.tokens, enc.lengths, batch.token_lengths, Vocabulary::kBlank);
    LossOutput out;
    out.loss = costs.mean();
    out.metrics.emplace_back("loss", out.loss.detach());
    out.metrics.emplace_back("loss_per_label",
                             (costs.detach().sum() / batch.token_lengths.sum().clamp_min(1).to(torch::kFloat32)));
    return out;
  }

  std::vector<std::string> transcribe(const Batch& batch, ModelParts& model) override {
    auto enc = encode(batch, model);
    auto f = net_->enc_proj(enc.x);
    auto lengths = enc.lengths.to(torch::kCPU);
    std::vector<std::vector<std::int64_t>> hyps =
        beam_ > 1 ? beam_search(f, lengths) : greedy(f, lengths);
    std::vector<std::string> out;
    for (const auto& h : hyps) out.push_back(vocabulary_->decode(h));
    return out;
  }

 private:
  EncoderOutput encode(const Batch& batch, ModelParts& model) {
    EncoderOutput enc = layer_ == "speech_encoder"
                            ? model.require_speech_encoder("rnnt").forward(batch.features, batch.feature_lengths)
                            : model.speech_context(batch.features, batch.feature_lengths);
    if (net_->is_training() && dropout_ > 0)
      enc.x = torch::nn::functional::dropout(enc.x, torch::nn::functional::DropoutFuncOptions().p(dropout_).training(true));
    return enc;
  }

  // All rows at once, frame by frame: a row emits up to max_symbols labels at a frame, then moves on.
  std::vector<std::vector<std::int64_t>> greedy(const torch::Tensor& f, const torch::Tensor& lengths) {
    const auto B = f.size(0), T = f.size(1);
    std::vector<std::vector<std::int64_t>> hyps(static_cast<std::size_t>(B));
    auto last = torch::full({B, 1}, Vocabulary::kBlank, torch::TensorOptions().dtype(torch::kLong).device(f.device()));
    auto [g, state] = net_->predict(last, c10::nullopt);
    g = g.squeeze(1);
    auto len = lengths.to(f.device());
    for (std::int64_t t = 0; t < T; ++t) {
      auto active = len > t;
      for (std::int64_t s = 0; s < max_symbols_; ++s) {
        auto k = net_->joint(f.select(1, t), g).argmax(-1);  // (B)
        auto emit = active & (k != Vocabulary::kBlank);
        auto emit_cpu = emit.to(torch::kCPU);
        if (!emit_cpu.any().item<bool>()) break;
        auto [g_new, s_new] = net_->predict(k.unsqueeze(1), state);
        auto e = emit.view({B, 1});
        g = torch::where(e, g_new.squeeze(1), g);
        auto e3 = emit.view({1, B, 1});
        state = LstmState{torch::where(e3, std::get<0>(s_new), std::get<0>(state)),
                          torch::where(e3, std::get<1>(s_new), std::get<1>(state))};
        auto k_cpu = k.to(torch::kCPU);
        for (std::int64_t b = 0; b < B; ++b)
          if (emit_cpu[b].item<bool>()) hyps[static_cast<std::size_t>(b)].push_back(k_cpu[b].item<std::int64_t>());
        active = emit;
      }
    }
    return hyps;
  }

  // One utterance at a time; hypotheses are label histories, each extended by at most one label per
  // frame (the "modified beam search" of k2/icefall), with equal histories merged by adding their
  // probabilities.
  std::vector<std::vector<std::int64_t>> beam_search(const torch::Tensor& f, const torch::Tensor& lengths) {
    std::vector<std::vector<std::int64_t>> out;
    const auto opts = torch::TensorOptions().dtype(torch::kLong).device(f.device());
    for (std::int64_t b = 0; b < f.size(0); ++b) {
      struct Hyp {
        std::vector<std::int64_t> labels;
        double score;
        torch::Tensor g;  // (J)
        LstmState state;
      };
      auto [g0, s0] = net_->predict(torch::full({1, 1}, Vocabulary::kBlank, opts), c10::nullopt);
      std::vector<Hyp> beam{{{}, 0.0, g0.view({-1}), s0}};
      for (std::int64_t t = 0; t < lengths[b].item<std::int64_t>(); ++t) {
        auto G = torch::stack([&] {
          std::vector<torch::Tensor> gs;
          for (const auto& h : beam) gs.push_back(h.g);
          return gs;
        }());                                                                       // (H, J)
        auto lp = torch::log_softmax(net_->joint(f[b][t].unsqueeze(0), G), -1).to(torch::kCPU);  // (H, V)
        std::map<std::vector<std::int64_t>, std::pair<double, std::pair<std::size_t, std::int64_t>>> next;
        auto add = [&](std::vector<std::int64_t> labels, double score, std::size_t from, std::int64_t token) {
          auto it = next.find(labels);
          if (it == next.end()) {
            next.emplace(std::move(labels), std::make_pair(score, std::make_pair(from, token)));
          } else {
            const double a = it->second.first, m = std::max(a, score);
            it->second.first = m + std::log(std::exp(a - m) + std::exp(score - m));
          }
        };
        for (std::size_t h = 0; h < beam.size(); ++h) {
          auto row = lp[static_cast<std::int64_t>(h)];
          add(beam[h].labels, beam[h].score + row[Vocabulary::kBlank].item<double>(), h, -1);
          auto top = row.topk(std::min<std::int64_t>(beam_ + 1, row.size(0)));
          auto vals = std::get<0>(top), ids = std::get<1>(top);
          for (std::int64_t i = 0; i < vals.size(0); ++i) {
            const auto k = ids[i].item<std::int64_t>();
            if (k == Vocabulary::kBlank) continue;
            auto labels = beam[h].labels;
            labels.push_back(k);
            add(std::move(labels), beam[h].score + vals[i].item<double>(), h, k);
          }
        }
        std::vector<std::pair<std::vector<std::int64_t>, std::pair<double, std::pair<std::size_t, std::int64_t>>>> ranked(
            next.begin(), next.end());
        std::sort(ranked.begin(), ranked.end(),
                  [](const auto& x, const auto& y) { return x.second.first > y.second.first; });
        if (static_cast<std::int64_t>(ranked.size()) > beam_) ranked.resize(static_cast<std::size_t>(beam_));
        std::vector<Hyp> kept;
        for (auto& [labels, v] : ranked) {
          const auto& [from, token] = v.second;
          const Hyp& parent = beam[from];
          if (token < 0 || labels.size() == parent.labels.size()) {
            kept.push_back({labels, v.first, parent.g, parent.state});
          } else {
            auto [g, s] = net_->predict(torch::full({1, 1}, labels.back(), opts), parent.state);
            kept.push_back({labels, v.first, g.view({-1}), s});
          }
        }
        beam = std::move(kept);
      }
      out.push_back(beam.front().labels);
    }
    return out;
  }

  std::shared_ptr<const Vocabulary> vocabulary_;
  std::string layer_;
  double dropout_;
  std::int64_t max_symbols_, beam_;
  Transducer net_{nullptr};
};

PluginDescriptor describe() {
  return describe_plugin<RnntLoss>(PluginKind::Loss, "rnnt", "1.0.0",
      "RNN transducer ASR head (LSTM prediction network + joint network, RNN-T loss) on paired data; decodes greedily or with a beam",
      OptionSchema()
          .add_choice("layer", "auto", {"auto", "shared_encoder", "speech_encoder"},
                      "the encoder output it reads: auto = the shared encoder's when the model has one")
          .add_int("pred_dim", 256, "prediction network LSTM width (SLAM/mSLAM: 640)", 1)
          .add_int("pred_layers", 1, "prediction network LSTM layers (SLAM/mSLAM: 2)", 1)
          .add_int("joint_dim", 256, "joint network width", 1)
          .add_float("dropout", 0.1, "dropout on the encoder output", 0, 1)
          .add_int("max_symbols_per_frame", 5, "greedy decoding: labels one frame may emit", 1)
          .add_int("beam_size", 1, "1 = greedy decoding; > 1 = beam search with this many hypotheses", 1));
}

}  // namespace
}  // namespace workbench::rnnt

WORKBENCH_PLUGIN(workbench::rnnt::describe)
