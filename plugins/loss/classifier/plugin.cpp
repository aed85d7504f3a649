// The "classifier" loss plugin: an utterance-level head for spoken language ID (mSLAM's FLEURS LangID)
// and intent classification (mSLAM's MINDS-14): the encoder output mean-pooled over valid frames, a
// small MLP, cross-entropy (the papers do not publish their heads; this is the usual pooled classifier).
// The label comes from each utterance's metadata: its language, or its id matched against prefixes (the
// Asterisk prompt families: "vm-", "conf-", ...).
#include <torch/nn/functional/dropout.h>
#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>

#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/loss.h"
#include "workbench/plugin.h"

namespace workbench::classifier {
namespace {

struct HeadImpl : torch::nn::Module {
  HeadImpl(std::int64_t in, std::int64_t hidden, std::int64_t classes) {
    if (hidden > 0) hidden_ = register_module("hidden", torch::nn::Linear(in, hidden));
    out = register_module("out", torch::nn::Linear(hidden > 0 ? hidden : in, classes));
  }
  torch::Tensor forward(torch::Tensor pooled, double dropout) {
    if (hidden_) pooled = torch::relu(hidden_(pooled));
    if (is_training() && dropout > 0)
      pooled = torch::nn::functional::dropout(pooled, torch::nn::functional::DropoutFuncOptions().p(dropout).training(true));
    return out(pooled);
  }
  torch::nn::Linear hidden_{nullptr}, out{nullptr};
};
TORCH_MODULE(Head);

// "name" or "name=prefix|prefix": a class and what its members' label string starts with.
struct ClassSpec {
  std::string name;
  std::vector<std::string> prefixes;
};

std::vector<ClassSpec> parse_classes(const Options& o) {
  std::vector<ClassSpec> out;
  for (const auto& s : o.get_strings("classes")) {
    ClassSpec c;
    const auto eq = s.find('=');
    c.name = s.substr(0, eq);
    std::string rest = eq == std::string::npos ? c.name : s.substr(eq + 1);
    for (std::size_t start = 0; start <= rest.size();) {
      const auto bar = rest.find('|', start);
      const std::string p = rest.substr(start, bar == std::string::npos ? std::string::npos : bar - start);
      if (p.empty()) o.fail("classes", fmt::format("'{}': an empty prefix (expected name=prefix|prefix)", s));
      c.prefixes.push_back(p);
      if (bar == std::string::npos) break;
      start = bar + 1;
    }
    if (c.name.empty()) o.fail("classes", fmt::format("'{}': a class needs a name", s));
    for (const auto& other : out)
      if (other.name == c.name) o.fail("classes", fmt::format("class '{}' is listed twice", c.name));
    out.push_back(std::move(c));
  }
  if (out.size() < 2) o.fail("classes", "needs at least two classes, e.g. [\"en\", \"fr\"] or [\"voicemail=vm-\", ...]");
  return out;
}

class ClassifierLoss final : public Loss, public UtteranceClassifier {
 public:
  ClassifierLoss(const Options& o, const BuildContext& ctx)
      : specs_(parse_classes(o)), by_id_(o.get_string("label") == "id"), layer_(o.get_string("layer")),
        dropout_(o.get_float("dropout")) {
    for (const auto& c : specs_) names_.push_back(c.name);
    const std::int64_t dim = layer_ == "speech_encoder" ? ctx.speech_dim : ctx.model_dim;
    if (dim <= 0) throw std::invalid_argument("classifier needs the encoder's output dimension");
    head_ = Head(dim, o.get_int("hidden_dim"), static_cast<std::int64_t>(specs_.size()));
    head_->to(ctx.device);
  }

  std::vector<BatchKind> accepts() const override { return {BatchKind::Paired, BatchKind::Speech}; }
  torch::nn::Module* module() override { return head_.get(); }
  const std::vector<std::string>& classes() const override { return names_; }

  torch::Tensor labels(const Batch& batch) const override {
    std::vector<std::int64_t> out;
    for (std::int64_t b = 0; b < batch.size(); ++b) out.push_back(label_of(batch, static_cast<std::size_t>(b)));
    return torch::tensor(out, torch::kLong);
  }

  torch::Tensor logits(const Batch& batch, ModelParts& model) override {
    EncoderOutput enc = layer_ == "speech_encoder"
                            ? model.require_speech_encoder("classifier").forward(batch.features, batch.feature_lengths)
                            : model.speech_context(batch.features, batch.feature_lengths);
    return head_->forward(masked_mean(enc.x, enc.lengths), dropout_);
  }

  LossOutput compute(const Batch& batch, ModelParts& model, const StepInfo&) override {
    auto y = labels(batch).to(batch.features.device());
    auto z = logits(batch, model);
    auto labelled = y >= 0;
    const auto n = labelled.sum();
    LossOutput out;
    // Rows of no class are left out; a batch with none still gives a loss (zero) with a graph.
    auto loss = torch::nn::functional::cross_entropy(
        z, y, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-1).reduction(torch::kSum));
    out.loss = loss / n.clamp_min(1).to(z.scalar_type());
    out.metrics.emplace_back("loss", out.loss.detach());
    auto correct = ((z.detach().argmax(-1) == y) & labelled).sum().to(torch::kFloat32);
    out.metrics.emplace_back("accuracy", correct / n.clamp_min(1).to(torch::kFloat32));
    return out;
  }

 private:
  std::int64_t label_of(const Batch& batch, std::size_t b) const {
    std::string key = by_id_ ? batch.ids[b] : batch.langs[b];
    // Ids are "<lang>/<prompt>" in the built-in datasets: the prompt is what has a meaning.
    if (by_id_ && key.rfind(batch.langs[b] + "/", 0) == 0) key = key.substr(batch.langs[b].size() + 1);
    for (std::size_t c = 0; c < specs_.size(); ++c)
      for (const auto& p : specs_[c].prefixes)
        if (by_id_ ? key.rfind(p, 0) == 0 : key == p) return static_cast<std::int64_t>(c);
    return -1;
  }

  std::vector<ClassSpec> specs_;
  std::vector<std::string> names_;
  bool by_id_;
  std::string layer_;
  double dropout_;
  Head head_{nullptr};
};

PluginDescriptor describe() {
  return describe_plugin<ClassifierLoss>(PluginKind::Loss, "classifier", "1.0.0",
      "utterance classification (language ID, intent): mean-pooled encoder output, an MLP, cross-entropy",
      OptionSchema()
          .add_choice("label", "lang", {"lang", "id"},
                      "lang: the utterance's language is its class; id: its id (less a leading \"<lang>/\") is "
                      "matched against each class's prefixes")
          .add_strings("classes", {"en", "es", "fr", "it", "ru"},
                       "the classes, in logit order: \"name\" (label = lang: the language code) or "
                       "\"name=prefix|prefix\" (label = id); utterances of no class are left out")
          .add_choice("layer", "auto", {"auto", "shared_encoder", "speech_encoder"},
                      "the encoder output it pools: auto = the shared encoder's when the model has one")
          .add_int("hidden_dim", 256, "the MLP's hidden width (0 = a linear classifier)", 0)
          .add_float("dropout", 0.1, "dropout before the output layer", 0, 1));
}

}  // namespace
}  // namespace workbench::classifier

WORKBENCH_PLUGIN(workbench::classifier::describe)
