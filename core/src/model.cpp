#include "workbench/model.h"

#include <cmath>

#include <fmt/format.h>
#include <torch/nn/init.h>

#include "workbench/error.h"

namespace workbench {

ModalityEmbeddingImpl::ModalityEmbeddingImpl(std::int64_t dim) {
  table = register_module("table", torch::nn::Embedding(2, dim));
  torch::NoGradGuard no_grad;
  table->weight.zero_();
}

torch::Tensor sinusoidal_positions(std::int64_t length, std::int64_t dim) {
  auto pos = torch::arange(length, torch::kFloat32).unsqueeze(1);                    // (L, 1)
  auto i = torch::arange(0, dim, 2, torch::kFloat32);                                // (ceil(D/2))
  auto freq = torch::exp(i * (-std::log(10000.0) / static_cast<double>(dim)));       // 1 / 10000^(2i/D)
  auto angles = pos * freq.unsqueeze(0);                                             // (L, ceil(D/2))
  auto table = torch::zeros({length, dim});
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(0, torch::indexing::None, 2)}, torch::sin(angles));
  auto cos = torch::cos(angles);
  table.index_put_({torch::indexing::Slice(), torch::indexing::Slice(1, torch::indexing::None, 2)},
                   cos.index({torch::indexing::Slice(), torch::indexing::Slice(0, dim / 2)}));
  return table;
}

namespace {

torch::Tensor gather_rows(const torch::Tensor& x, const torch::Tensor& index) {
  return torch::gather(x, 1, index.unsqueeze(-1).expand({index.size(0), index.size(1), x.size(2)}));
}

torch::Tensor add_modality(const ModalityEmbedding& m, const torch::Tensor& x, std::int64_t which) {
  if (!m) return x;
  return x + m->table->weight[which].to(x.dtype());
}

}  // namespace

torch::Tensor JointOutput::speech() const { return gather_rows(joint.x, speech_index); }
torch::Tensor JointOutput::text() const { return gather_rows(joint.x, text_index); }

std::vector<std::pair<std::string, torch::nn::Module*>> ModelParts::named_modules() const {
  std::vector<std::pair<std::string, torch::nn::Module*>> out;
  if (speech_encoder) out.emplace_back("speech_encoder", &speech_encoder->module());
  if (text_embedding) out.emplace_back("text_embedding", &text_embedding->module());
  if (shared_encoder) out.emplace_back("shared_encoder", &shared_encoder->module());
  if (modality) out.emplace_back("modality_embedding", modality.ptr().get());
  return out;
}

Encoder& ModelParts::require_speech_encoder(const std::string& who) const {
  if (!speech_encoder) throw ConfigError(fmt::format("{} needs [model.speech_encoder]", who));
  return *speech_encoder;
}
TextEmbedding& ModelParts::require_text_embedding(const std::string& who) const {
  if (!text_embedding) throw ConfigError(fmt::format("{} needs [model.text_embedding]", who));
  return *text_embedding;
}
Encoder& ModelParts::require_shared_encoder(const std::string& who) const {
  if (!shared_encoder) throw ConfigError(fmt::format("{} needs [model.shared_encoder]", who));
  return *shared_encoder;
}

EncoderOutput ModelParts::shared_from_speech(const EncoderOutput& contrastive) {
  auto& shared = require_shared_encoder("the shared encoder's speech path");
  auto projected = shared.embed(contrastive.x, contrastive.lengths);
  projected.x = add_modality(modality, projected.x, 0);
  return shared.encode(projected);
}

EncoderOutput ModelParts::shared_from_text(const EncoderOutput& embedded_text) {
  auto& shared = require_shared_encoder("the shared encoder's text path");
  return shared.encode({add_modality(modality, embedded_text.x, 1), embedded_text.lengths});
}

JointOutput ModelParts::shared_from_pair(const EncoderOutput& contrastive, const EncoderOutput& embedded_text) {
  auto& shared = require_shared_encoder("a speech ++ text objective");
  auto speech = shared.embed(contrastive.x, contrastive.lengths);
  auto sx = add_modality(modality, speech.x, 0);
  auto tx = add_modality(modality, embedded_text.x, 1);
  const auto B = sx.size(0), Ts = sx.size(1), Lt = tx.size(1);
  auto s_len = speech.lengths.to(torch::kLong), t_len = embedded_text.lengths.to(torch::kLong);
  auto total = s_len + t_len;
  // The joint length: the longest pair's on the CPU, where reading it is free; elsewhere the bound Ts + Lt,
  // so that nothing waits on the device (the extra columns are padding, which every statistic leaves out).
  const auto T = sx.device().is_cpu() ? std::max<std::int64_t>(total.max().item<std::int64_t>(), 1)
                                      : std::max<std::int64_t>(Ts + Lt, 1);
  // Padding positions scatter into a spare column T, which is cut off afterwards.
  auto s_pos = torch::arange(Ts, s_len.options()).unsqueeze(0).expand({B, Ts});
  auto s_valid = s_pos < s_len.unsqueeze(1);
  auto t_pos = torch::arange(Lt, t_len.options()).unsqueeze(0).expand({B, Lt});
  auto t_valid = t_pos < t_len.unsqueeze(1);
  auto s_target = torch::where(s_valid, s_pos, torch::full_like(s_pos, T));
  auto t_target = torch::where(t_valid, t_pos + s_len.unsqueeze(1), torch::full_like(t_pos, T));
  auto index = torch::cat({s_target, t_target}, 1);                                  // (B, Ts + Lt)
  auto values = torch::cat({sx, tx}, 1);                                              // (B, Ts + Lt, D)
  auto joint = torch::zeros({B, T + 1, sx.size(2)}, sx.options())
                   .scatter(1, index.unsqueeze(-1).expand_as(values), values)
                   .narrow(1, 0, T);
  JointOutput out;
  out.joint = shared.encode({joint, total});
  out.speech_index = torch::where(s_valid, s_target, torch::zeros_like(s_target));
  out.text_index = torch::where(t_valid, t_target, torch::zeros_like(t_target));
  return out;
}

EncoderOutput ModelParts::speech_context(const torch::Tensor& features, const torch::Tensor& lengths) {
  auto contrastive = require_speech_encoder("speech").forward(features, lengths);
  if (!shared_encoder) return contrastive;
  return shared_from_speech(contrastive);
}

}  // namespace workbench
