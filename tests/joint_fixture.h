#pragma once
// A tiny joint speech-text model for loss tests, built from test-local parts so that each loss is tested
// without depending on the real encoders: every part is a Linear layer (the speech "encoder" keeps the
// frame rate), with named parameters so tests can check which ones a loss trains.
#include <torch/nn/module.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/types.h>

#include <algorithm>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "workbench/encoder.h"
#include "workbench/loss.h"
#include "workbench/model.h"
#include "workbench/registry.h"
#include "workbench/text_embedding.h"
#include "workbench/vocabulary.h"

namespace workbench::testing {

/// embed: Linear(F, D) per frame; encode: x + tanh(Linear(D, D)). Frame rate unchanged.
class TinySpeechEncoder final : public Encoder {
 public:
  TinySpeechEncoder(std::int64_t input_dim, std::int64_t dim) : dim_(dim) {
    frontend = module_.register_module("frontend", torch::nn::Linear(input_dim, dim));
    context = module_.register_module("context", torch::nn::Linear(dim, dim));
  }
  torch::nn::Module& module() override { return module_; }
  std::int64_t output_dim() const override { return dim_; }
  EncoderOutput embed(const torch::Tensor& f, const torch::Tensor& lengths) override { return {frontend(f), lengths}; }
  EncoderOutput encode(const EncoderOutput& e) override { return {e.x + torch::tanh(context(e.x)), e.lengths}; }
  torch::nn::Module module_;
  torch::nn::Linear frontend{nullptr}, context{nullptr};

 private:
  std::int64_t dim_;
};

/// embed: Linear(Ds, D) (the projection); encode: x + tanh(Linear(D, D)) + the row mean, so that
/// positions see each other (as attention would).
class TinySharedEncoder final : public Encoder {
 public:
  TinySharedEncoder(std::int64_t input_dim, std::int64_t dim) : dim_(dim) {
    projection = module_.register_module("projection", torch::nn::Linear(input_dim, dim));
    layer = module_.register_module("layer", torch::nn::Linear(dim, dim));
  }
  torch::nn::Module& module() override { return module_; }
  std::int64_t output_dim() const override { return dim_; }
  EncoderOutput embed(const torch::Tensor& x, const torch::Tensor& lengths) override { return {projection(x), lengths}; }
  EncoderOutput encode(const EncoderOutput& e) override {
    auto pooled = masked_mean(e.x, e.lengths).unsqueeze(1);
    return {e.x + torch::tanh(layer(e.x + pooled)), e.lengths};
  }
  torch::nn::Module module_;
  torch::nn::Linear projection{nullptr}, layer{nullptr};

 private:
  std::int64_t dim_;
};

/// Characters of a Vocabulary of size V, plus [MASK] = V.
class TinyTextEmbedding final : public TextEmbedding {
 public:
  TinyTextEmbedding(std::int64_t vocabulary_size, std::int64_t dim) : v_(vocabulary_size), dim_(dim) {
    table = module_.register_module("table", torch::nn::Embedding(vocabulary_size + 1, dim));
  }
  torch::nn::Module& module() override { return module_; }
  std::int64_t output_dim() const override { return dim_; }
  std::int64_t vocab_size() const override { return v_ + 1; }
  std::int64_t mask_id() const override { return v_; }
  std::int64_t first_regular_id() const override { return 2; }
  std::int64_t end_regular_id() const override { return v_; }
  std::pair<torch::Tensor, torch::Tensor> tokenize(const Batch& b) override { return {b.tokens, b.token_lengths}; }
  EncoderOutput embed(const torch::Tensor& tokens, const torch::Tensor& lengths) override {
    return {table(tokens), lengths};
  }
  torch::nn::Module module_;
  torch::nn::Embedding table{nullptr};

 private:
  std::int64_t v_, dim_;
};

/// Speech encoder (F -> Ds), shared encoder (Ds -> D), text embedding over V ids, modality embedding.
inline ModelParts tiny_joint_model(std::int64_t F, std::int64_t Ds, std::int64_t D, std::int64_t V) {
  ModelParts m;
  m.speech_encoder = std::make_shared<TinySpeechEncoder>(F, Ds);
  m.shared_encoder = std::make_shared<TinySharedEncoder>(Ds, D);
  m.text_embedding = std::make_shared<TinyTextEmbedding>(V, D);
  m.modality = ModalityEmbedding(D);
  return m;
}

/// The context a loss plugin would get from the core for tiny_joint_model(F, Ds, D, V.size()).
inline BuildContext tiny_loss_context(std::int64_t Ds, std::int64_t D, std::shared_ptr<const Vocabulary> vocabulary,
                                      std::uint64_t seed = 1) {
  BuildContext c;
  c.speech_dim = Ds;
  c.model_dim = D;
  c.text_vocab_size = vocabulary->size() + 1;
  c.vocabulary = std::move(vocabulary);
  c.seed = seed;
  return c;
}

/// A batch of `kind` with random features (B, T, F), the given frame counts, and the texts encoded with
/// `vocabulary` (speech batches leave the text fields empty; text batches the speech fields).
inline Batch make_batch(BatchKind kind, const std::vector<std::int64_t>& frames, std::int64_t F,
                        const std::vector<std::string>& texts, const Vocabulary& vocabulary) {
  Batch b;
  b.kind = kind;
  const auto B = static_cast<std::int64_t>(kind == BatchKind::Text ? texts.size() : frames.size());
  if (kind != BatchKind::Text) {
    std::int64_t T = 1;
    for (auto t : frames) T = std::max(T, t);
    b.features = torch::randn({B, T, F});
    b.feature_lengths = torch::tensor(frames, torch::kInt64);
    b.features.masked_fill_(padding_mask(b.feature_lengths, T).unsqueeze(-1), 0.0);
  }
  std::int64_t L = 1;
  std::vector<std::vector<std::int64_t>> ids;
  for (std::int64_t r = 0; r < B; ++r) {
    ids.push_back(kind == BatchKind::Speech ? std::vector<std::int64_t>{} : vocabulary.encode(texts[r]));
    L = std::max<std::int64_t>(L, static_cast<std::int64_t>(ids.back().size()));
  }
  b.tokens = torch::zeros({B, L}, torch::kInt64);
  std::vector<std::int64_t> lengths;
  for (std::int64_t r = 0; r < B; ++r) {
    for (std::size_t i = 0; i < ids[r].size(); ++i) b.tokens[r][static_cast<std::int64_t>(i)] = ids[r][i];
    lengths.push_back(static_cast<std::int64_t>(ids[r].size()));
    b.ids.push_back("u" + std::to_string(r));
    b.langs.push_back("en");
    b.texts.push_back(kind == BatchKind::Speech ? "" : texts[r]);
  }
  b.token_lengths = torch::tensor(lengths, torch::kInt64);
  return b;
}

/// A shared character vocabulary of `texts`.
inline std::shared_ptr<const Vocabulary> vocabulary_of(const std::vector<std::string>& texts) {
  return std::make_shared<const Vocabulary>(Vocabulary::from_texts(texts));
}

/// Texts of the given lengths, of random letters from a ten-letter alphabet.
inline std::vector<std::string> random_texts(const std::vector<std::size_t>& lengths, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int> letter(0, 9);
  std::vector<std::string> texts;
  for (auto n : lengths) {
    std::string t;
    for (std::size_t k = 0; k < n; ++k) t.push_back(static_cast<char>('a' + letter(rng)));
    texts.push_back(t);
  }
  return texts;
}
/// `count` texts of `length` random letters.
inline std::vector<std::string> random_texts(std::size_t count, std::size_t length, unsigned seed) {
  return random_texts(std::vector<std::size_t>(count, length), seed);
}

// Lookups that throw when the name is missing; Catch2 reports the exception as the test's failure (this
// header comes before catch.hpp, which must be included last).

inline double metric(const LossOutput& out, const std::string& name) {
  for (const auto& [n, v] : out.metrics)
    if (n == name) return v.item<double>();
  throw std::runtime_error("no metric " + name);
}

inline std::vector<std::string> metric_names(const LossOutput& out) {
  std::vector<std::string> names;
  for (const auto& m : out.metrics) names.push_back(m.first);
  return names;
}

inline bool has(const std::vector<std::string>& names, const std::string& name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

inline torch::Tensor parameter(torch::nn::Module& m, const std::string& name) {
  for (const auto& p : m.named_parameters())
    if (p.key() == name) return p.value();
  throw std::runtime_error("no parameter " + name);
}

/// Zeroes the gradients of every part of tiny_joint_model and of `loss`, between two backward passes.
inline void zero_gradients(ModelParts& m, Loss& loss) {
  auto zero = [](torch::nn::Module& mod) {
    for (auto& p : mod.parameters())
      if (p.grad().defined()) p.grad().zero_();
  };
  zero(m.speech_encoder->module());
  zero(m.shared_encoder->module());
  zero(m.text_embedding->module());
  zero(*m.modality);
  if (loss.module()) zero(*loss.module());
}

/// The built-in plugins, loaded once per test executable.
inline const Registry& builtin_registry() {
  static const Registry* r = [] {
    auto* reg = new Registry();
    reg->load_directory(Registry::builtin_plugin_dir());
    return reg;
  }();
  return *r;
}

/// Names of the parameters (prefixed "speech_encoder.", "shared_encoder.", "text_embedding.",
/// "modality_embedding.", "loss.") whose .grad() is defined and not all zero.
inline std::vector<std::string> parameters_with_gradient(ModelParts& m, Loss& loss) {
  std::vector<std::string> out;
  auto scan = [&](const std::string& prefix, torch::nn::Module* mod) {
    if (!mod) return;
    for (const auto& p : mod->named_parameters())
      if (p.value().grad().defined() && p.value().grad().abs().sum().item<double>() > 0) out.push_back(prefix + p.key());
  };
  if (m.speech_encoder) scan("speech_encoder.", &m.speech_encoder->module());
  if (m.shared_encoder) scan("shared_encoder.", &m.shared_encoder->module());
  if (m.text_embedding) scan("text_embedding.", &m.text_embedding->module());
  if (m.modality) scan("modality_embedding.", m.modality.ptr().get());
  scan("loss.", loss.module());
  return out;
}

}  // namespace workbench::testing
