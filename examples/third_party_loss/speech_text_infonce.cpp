// speech_text_infonce: a third-party loss plugin that is not among the built-ins.
//
// Cross-modal InfoNCE (CLIP-style, Radford et al. 2021; the alignment idea behind SLAM's STM and
// mSLAM's TLM) on paired data: the speech encoder's context vectors are mean-pooled over valid frames,
// the transcript is embedded by the plugin's own character embedding (mean over characters), both are
// projected to a shared space and L2-normalised, and each utterance must pick its own transcript among
// the batch (and each transcript its utterance): symmetric cross-entropy over cosine / temperature.
//
// It shows what a plugin may do: own parameters (the embedding and projections), report its own metrics,
// and reach other components only through the model's building blocks (ModelParts), not their symbols.
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>

#include <workbench/error.h>
#include <workbench/loss.h>
#include <workbench/plugin.h>
#include <workbench/vocabulary.h>

namespace {

namespace F = torch::nn::functional;

struct TowersImpl : torch::nn::Module {
  TowersImpl(std::int64_t speech_dim, std::int64_t vocabulary, std::int64_t dim) {
    chars = register_module("chars", torch::nn::Embedding(torch::nn::EmbeddingOptions(vocabulary, dim).padding_idx(0)));
    speech = register_module("speech", torch::nn::Linear(speech_dim, dim));
    text = register_module("text", torch::nn::Linear(dim, dim));
  }
  torch::nn::Embedding chars{nullptr};
  torch::nn::Linear speech{nullptr}, text{nullptr};
};
TORCH_MODULE(Towers);

class SpeechTextInfoNce final : public workbench::Loss {
 public:
  SpeechTextInfoNce(const workbench::Options& o, const workbench::BuildContext& c)
      : temperature_(o.get_float("temperature")) {
    if (!c.vocabulary) throw workbench::ConfigError("[" + o.section() + "] needs paired data (a vocabulary)");
    if (temperature_ <= 0) o.fail("temperature", "must be positive");
    // It pools the speech encoder's output, so its input width is the speech encoder's D (speech_dim),
    // not the shared encoder's (model_dim): the two differ whenever a shared encoder is configured.
    towers_ = Towers(c.speech_dim, c.vocabulary->size(), o.get_int("dim"));
    towers_->to(c.device);
  }

  std::vector<workbench::BatchKind> accepts() const override { return {workbench::BatchKind::Paired}; }
  torch::nn::Module* module() override { return towers_.get(); }

  workbench::LossOutput compute(const workbench::Batch& batch, workbench::ModelParts& model,
                                const workbench::StepInfo&) override {
    if (!model.speech_encoder) throw workbench::ConfigError("speech_text_infonce needs [model.speech_encoder]");
    auto enc = model.speech_encoder->forward(batch.features, batch.feature_lengths);
    auto speech = workbench::masked_mean(enc.x, enc.lengths);                                  // (B, D)
    auto text = workbench::masked_mean(towers_->chars(batch.tokens), batch.token_lengths);    // (B, E)
    auto s = F::normalize(towers_->speech(speech), F::NormalizeFuncOptions().dim(-1));
    auto t = F::normalize(towers_->text(text), F::NormalizeFuncOptions().dim(-1));
    auto logits = torch::matmul(s, t.t()) / temperature_;                                       // (B, B)
    auto targets = torch::arange(logits.size(0), torch::TensorOptions().dtype(torch::kInt64).device(logits.device()));
    auto loss = 0.5 * (F::cross_entropy(logits, targets) + F::cross_entropy(logits.t(), targets));
    workbench::LossOutput out;
    out.loss = loss;
    out.metrics.emplace_back("loss", loss.detach());
    // Speech -> text retrieval within the batch: recall@1.
    out.metrics.emplace_back("recall_at_1", (logits.detach().argmax(-1) == targets).to(torch::kFloat32).mean());
    return out;
  }

 private:
  double temperature_;
  Towers towers_{nullptr};
};

workbench::PluginDescriptor describe() {
  return workbench::describe_plugin<SpeechTextInfoNce>(workbench::PluginKind::Loss, "speech_text_infonce", "0.1.0",
      "InfoNCE alignment of pooled speech and text embeddings of paired data (third-party example)",
      workbench::OptionSchema()
          .add_int("dim", 64, "shared embedding dimension", 1)
          .add_float("temperature", 0.1, "softmax temperature of the cosine similarities"));
}

}  // namespace

WORKBENCH_PLUGIN(describe)
