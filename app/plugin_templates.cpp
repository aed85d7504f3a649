// The starter projects `workbench new-plugin KIND NAME` writes: one real, small component of each plugin
// kind, with an experiment that runs it. Each builds against the installed SDK alone; tests/test_sdk.cpp
// builds every one.
#include "plugin_templates.h"

#include <stdexcept>

namespace workbench::app {

namespace {

const char* kLossSource = R"tpl(// @NAME@: a workbench loss plugin. Spoken language identification: mean-pool the speech encoder's
// output over valid frames, a linear layer, cross-entropy against the utterance's language.
// Build: cmake -S . -B build -DCMAKE_PREFIX_PATH=<workbench prefix> && cmake --build build
#include <algorithm>

#include <torch/nn/functional/loss.h>
#include <torch/nn/modules/linear.h>

#include <workbench/error.h>
#include <workbench/loss.h>
#include <workbench/plugin.h>

namespace {

struct HeadImpl : torch::nn::Module {
  HeadImpl(std::int64_t dim, std::int64_t classes) { linear = register_module("linear", torch::nn::Linear(dim, classes)); }
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(Head);

class LanguageIdLoss final : public workbench::Loss {
 public:
  LanguageIdLoss(const workbench::Options& options, const workbench::BuildContext& context)
      : languages_(options.get_strings("languages")) {
    if (languages_.empty()) options.fail("languages", "needs at least one language");
    // It reads the speech encoder's output, whose width is speech_dim; model_dim is the shared
    // encoder's, which differs from it whenever the experiment has one.
    head_ = Head(context.speech_dim, static_cast<std::int64_t>(languages_.size()));
    head_->to(context.device);
  }

  std::vector<workbench::BatchKind> accepts() const override {
    return {workbench::BatchKind::Paired, workbench::BatchKind::Speech};
  }
  torch::nn::Module* module() override { return head_.get(); }

  workbench::LossOutput compute(const workbench::Batch& batch, workbench::ModelParts& model,
                                const workbench::StepInfo&) override {
    auto& speech = model.require_speech_encoder("@NAME@");
    auto encoded = speech.forward(batch.features, batch.feature_lengths);  // x (B, T', Ds), lengths after subsampling
    auto pooled = workbench::masked_mean(encoded.x, encoded.lengths);      // (B, Ds): valid frames only
    auto logits = head_->linear(pooled);
    std::vector<std::int64_t> ids;
    for (const auto& lang : batch.langs) {
      auto it = std::find(languages_.begin(), languages_.end(), lang);
      if (it == languages_.end()) throw workbench::DataError("@NAME@: language '" + lang + "' is not in its languages option");
      ids.push_back(it - languages_.begin());
    }
    auto targets = torch::tensor(ids, torch::kInt64).to(logits.device());
    auto loss = torch::nn::functional::cross_entropy(logits, targets);
    workbench::LossOutput out;
    out.loss = loss;
    out.metrics.emplace_back("loss", loss.detach());
    out.metrics.emplace_back("accuracy", (logits.detach().argmax(-1) == targets).to(torch::kFloat32).mean());
    return out;
  }

 private:
  std::vector<std::string> languages_;
  Head head_{nullptr};
};

workbench::PluginDescriptor describe() {
  return workbench::describe_plugin<LanguageIdLoss>(
      workbench::PluginKind::Loss, "@NAME@", "0.1.0", "spoken language identification from the pooled speech encoder output",
      workbench::OptionSchema().add_strings("languages", {"en", "es", "fr", "it", "ru"}, "the languages to tell apart"));
}

}  // namespace

WORKBENCH_PLUGIN(describe)
)tpl";

const char* kEncoderSource = R"tpl(// @NAME@: a workbench encoder plugin. embed(): every 4 filterbank frames stacked (4x subsampling, 40 ms)
// and projected to d_model; encode(): a bidirectional LSTM over the valid frames only (packed, so padding
// never reaches its state). (B, T, F) -> (B, ceil(T / 4), d_model).
// Build: cmake -S . -B build -DCMAKE_PREFIX_PATH=<workbench prefix> && cmake --build build
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/rnn.h>
#include <torch/nn/utils/rnn.h>

#include <workbench/encoder.h>
#include <workbench/error.h>
#include <workbench/plugin.h>

namespace {

constexpr std::int64_t kStack = 4;

struct NetImpl : torch::nn::Module {
  NetImpl(std::int64_t input_dim, std::int64_t d_model, std::int64_t layers) {
    project = register_module("project", torch::nn::Linear(input_dim * kStack, d_model));
    lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(d_model, d_model / 2)
                                                       .num_layers(layers)
                                                       .bidirectional(true)
                                                       .batch_first(true)));
  }
  torch::nn::Linear project{nullptr};
  torch::nn::LSTM lstm{nullptr};
};
TORCH_MODULE(Net);

class StackedLstmEncoder final : public workbench::Encoder {
 public:
  StackedLstmEncoder(const workbench::Options& o, const workbench::BuildContext& c) : d_model_(o.get_int("d_model")) {
    if (c.input_dim <= 0) throw workbench::ConfigError("[" + o.section() + "]: @NAME@ needs the input dimension");
    if (d_model_ % 2 != 0) o.fail("d_model", "must be even: each direction of the LSTM gives d_model / 2");
    net_ = Net(c.input_dim, d_model_, o.get_int("layers"));
    net_->to(c.device);
  }

  torch::nn::Module& module() override { return *net_; }
  std::int64_t output_dim() const override { return d_model_; }

  workbench::EncoderOutput embed(const torch::Tensor& features, const torch::Tensor& lengths) override {
    const std::int64_t B = features.size(0), T = features.size(1), F = features.size(2);
    const std::int64_t frames = (T + kStack - 1) / kStack;
    // Pad the time axis to a multiple of 4 (zeros, past every row's end), then stack.
    auto x = torch::constant_pad_nd(features, {0, 0, 0, frames * kStack - T});
    x = x.reshape({B, frames, kStack * F});
    auto out_lengths = torch::div(lengths + (kStack - 1), kStack, "floor").clamp_min(1);
    return {net_->project(x), out_lengths};
  }

  workbench::EncoderOutput encode(const workbench::EncoderOutput& e) override {
    namespace rnn = torch::nn::utils::rnn;
    auto packed = rnn::pack_padded_sequence(e.x, e.lengths.to(torch::kCPU), /*batch_first=*/true,
                                            /*enforce_sorted=*/false);
    auto out = std::get<0>(net_->lstm->forward_with_packed_input(packed));
    auto padded = std::get<0>(rnn::pad_packed_sequence(out, /*batch_first=*/true, 0.0, e.x.size(1)));
    return {padded, e.lengths};
  }

 private:
  std::int64_t d_model_;
  Net net_{nullptr};
};

workbench::PluginDescriptor describe() {
  return workbench::describe_plugin<StackedLstmEncoder>(
      workbench::PluginKind::Encoder, "@NAME@", "0.1.0", "4x frame stacking, then a bidirectional LSTM",
      workbench::OptionSchema()
          .add_int("d_model", 128, "output dimension D (both directions together)", 2)
          .add_int("layers", 2, "LSTM layers", 1));
}

}  // namespace

WORKBENCH_PLUGIN(describe)
)tpl";

const char* kTextEmbeddingSource = R"tpl(// @NAME@: a workbench text-embedding plugin. Byte-level text input: the UTF-8 bytes of each transcript
// (ids 1..256; 0 is padding, 257 [MASK]), a table, sinusoidal positions and a LayerNorm, in the shared
// encoder's dimension (model_dim). No tokenizer to train, and every script is covered.
// Build: cmake -S . -B build -DCMAKE_PREFIX_PATH=<workbench prefix> && cmake --build build
#include <algorithm>

#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/normalization.h>

#include <workbench/error.h>
#include <workbench/plugin.h>
#include <workbench/text_embedding.h>

namespace {

constexpr std::int64_t kRows = 258;  // padding, 256 bytes, [MASK]

struct TableImpl : torch::nn::Module {
  explicit TableImpl(std::int64_t dim) {
    table = register_module("table", torch::nn::Embedding(torch::nn::EmbeddingOptions(kRows, dim).padding_idx(0)));
    norm = register_module("norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
  }
  torch::nn::Embedding table{nullptr};
  torch::nn::LayerNorm norm{nullptr};
};
TORCH_MODULE(Table);

class ByteEmbedding final : public workbench::TextEmbedding {
 public:
  ByteEmbedding(const workbench::Options& o, const workbench::BuildContext& c)
      : max_length_(o.get_int("max_length")), dim_(c.model_dim), device_(c.device) {
    if (dim_ <= 0) throw workbench::ConfigError("[" + o.section() + "]: @NAME@ needs a shared encoder (model_dim)");
    table_ = Table(dim_);
    table_->to(c.device);
  }

  torch::nn::Module& module() override { return *table_; }
  std::int64_t output_dim() const override { return dim_; }
  std::int64_t vocab_size() const override { return kRows; }
  std::int64_t mask_id() const override { return kRows - 1; }
  std::int64_t first_regular_id() const override { return 1; }
  std::int64_t end_regular_id() const override { return kRows - 1; }

  std::pair<torch::Tensor, torch::Tensor> tokenize(const workbench::Batch& batch) override {
    if (batch.texts.empty()) throw workbench::DataError("@NAME@: a batch without text");
    const auto B = static_cast<std::int64_t>(batch.texts.size());
    std::int64_t L = 1;
    for (const auto& t : batch.texts) L = std::max<std::int64_t>(L, std::min<std::int64_t>(t.size(), max_length_));
    auto ids = torch::zeros({B, L}, torch::kInt64);
    auto lengths = torch::zeros({B}, torch::kInt64);
    auto a = ids.accessor<std::int64_t, 2>();
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& t = batch.texts[static_cast<std::size_t>(b)];
      const auto n = std::min<std::int64_t>(static_cast<std::int64_t>(t.size()), max_length_);
      for (std::int64_t i = 0; i < n; ++i) a[b][i] = static_cast<unsigned char>(t[static_cast<std::size_t>(i)]) + 1;
      lengths[b] = n;
    }
    return {ids.to(device_), lengths.to(device_)};
  }

  workbench::EncoderOutput embed(const torch::Tensor& tokens, const torch::Tensor& lengths) override {
    auto x = table_->table(tokens) + workbench::sinusoidal_positions(tokens.size(1), dim_).to(tokens.device());
    return {table_->norm(x), lengths};
  }

 private:
  std::int64_t max_length_, dim_;
  c10::Device device_;
  Table table_{nullptr};
};

workbench::PluginDescriptor describe() {
  return workbench::describe_plugin<ByteEmbedding>(
      workbench::PluginKind::TextEmbedding, "@NAME@", "0.1.0", "UTF-8 bytes + sinusoidal positions + LayerNorm",
      workbench::OptionSchema().add_int("max_length", 512, "longest text in bytes; longer ones are cut", 1));
}

}  // namespace

WORKBENCH_PLUGIN(describe)
)tpl";

const char* kDatasetSource = R"tpl(// @NAME@: a workbench dataset plugin. A folder of audio files and a transcript list of `id: text` lines
// (the format of the Asterisk prompts' core-sounds-XX.txt; .gz is read too): utterance `id` is
// <audio_dir>/<id><extension>. Lines starting with ';' and ids without an audio file are skipped.
// Build: cmake -S . -B build -DCMAKE_PREFIX_PATH=<workbench prefix> && cmake --build build
#include <algorithm>
#include <cctype>
#include <filesystem>
#include <sstream>

#include <workbench/dataset.h>
#include <workbench/error.h>
#include <workbench/io.h>
#include <workbench/plugin.h>

namespace {

class PromptListDataset final : public workbench::Dataset {
 public:
  explicit PromptListDataset(const workbench::Options& o)
      : audio_dir_(o.get_string("audio_dir")),
        transcripts_(o.get_string("transcripts")),
        lang_(o.get_string("lang")),
        extension_(o.get_string("extension")),
        limit_(o.get_int("max_utterances")) {
    if (audio_dir_.empty()) o.fail("audio_dir", "needs the folder of audio files");
    if (transcripts_.empty()) o.fail("transcripts", "needs the file of `id: text` lines");
  }

  workbench::BatchKind kind() const override { return workbench::BatchKind::Paired; }

  std::vector<workbench::Utterance> load(const workbench::BuildContext& context) override {
    std::istringstream lines(workbench::read_text_file(transcripts_));  // DataError naming the file
    std::vector<workbench::Utterance> out;
    std::string line;
    while (std::getline(lines, line) && (limit_ == 0 || static_cast<std::int64_t>(out.size()) < limit_)) {
      const auto colon = line.find(':');
      if (line.empty() || line[0] == ';' || colon == std::string::npos) continue;
      workbench::Utterance u;
      u.id = line.substr(0, colon);
      u.lang = lang_;
      u.path = (std::filesystem::path(audio_dir_) / (u.id + extension_)).string();
      if (!std::filesystem::exists(u.path)) continue;
      for (char ch : line.substr(colon + 1)) u.text += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      u.text.erase(0, u.text.find_first_not_of(' '));
      out.push_back(std::move(u));
    }
    if (out.empty())
      throw workbench::DataError(transcripts_ + ": no line names an audio file in " + audio_dir_);
    if (context.load_audio) workbench::load_utterance_audio(out, context.sample_rate, "(listed in " + transcripts_ + ")");
    return out;
  }

 private:
  std::string audio_dir_, transcripts_, lang_, extension_;
  std::int64_t limit_;
};

workbench::PluginDescriptor describe() {
  return workbench::describe_plugin<PromptListDataset>(
      workbench::PluginKind::Dataset, "@NAME@", "0.1.0", "a folder of audio files and a list of `id: text` transcripts",
      workbench::OptionSchema()
          .add_string("audio_dir", "", "folder of the audio files")
          .add_string("transcripts", "", "`id: text` lines (.gz allowed)")
          .add_string("lang", "en", "the language of every utterance (ISO 639-1)")
          .add_string("extension", ".wav", "appended to an id to name its file")
          .add_int("max_utterances", 0, "keep the first N (0 = all)", 0));
}

}  // namespace

WORKBENCH_PLUGIN(describe)
)tpl";

const char* kEvaluatorSource = R"tpl(// @NAME@: a workbench evaluator plugin. How often the CTC head's best symbol is blank on the valid frames,
// per language and averaged over languages: a run whose blank share stays near 1 has collapsed, whatever
// its loss says. It reads the posteriors of the objective named by `predictor` through the
// FramePredictor capability, connected before training.
// Build: cmake -S . -B build -DCMAKE_PREFIX_PATH=<workbench prefix> && cmake --build build
#include <map>

#include <workbench/capabilities.h>
#include <workbench/encoder.h>
#include <workbench/evaluator.h>
#include <workbench/plugin.h>

namespace {

class BlankShareEvaluator final : public workbench::Evaluator {
 public:
  explicit BlankShareEvaluator(const workbench::Options& o) : name_(o.get_string("predictor")), section_(o.section()) {}

  void connect(const workbench::Connections& c) override {
    predictor_ = &c.require<workbench::FramePredictor>(name_, "[" + section_ + "] (@NAME@)", "frame posteriors",
                                                        "add a ctc objective");
  }

  std::vector<std::pair<std::string, double>> evaluate(const workbench::EvalContext& ctx) override {
    std::map<std::string, std::pair<double, double>> per_lang;  // blank frames, valid frames
    for (const auto& cpu_batch : ctx.batches) {
      auto batch = cpu_batch.to(ctx.device);
      auto [log_probs, lengths] = predictor_->frame_log_probs(batch, ctx.model);
      auto valid = ~workbench::padding_mask(lengths, log_probs.size(1));
      auto blank = (log_probs.argmax(-1) == 0) & valid;
      auto blank_rows = blank.sum(1).to(torch::kCPU), valid_rows = valid.sum(1).to(torch::kCPU);
      for (std::int64_t b = 0; b < blank_rows.size(0); ++b) {
        auto& [n_blank, n_valid] = per_lang[cpu_batch.langs[static_cast<std::size_t>(b)]];
        n_blank += blank_rows[b].item<double>();
        n_valid += valid_rows[b].item<double>();
      }
    }
    std::vector<std::pair<std::string, double>> out;
    double mean = 0;
    for (const auto& [lang, counts] : per_lang) {
      const double share = counts.second > 0 ? counts.first / counts.second : 0.0;
      out.emplace_back("blank_share/" + lang, share);
      mean += share;
    }
    out.emplace_back("blank_share", per_lang.empty() ? 0.0 : mean / static_cast<double>(per_lang.size()));
    return out;
  }

 private:
  std::string name_, section_;
  workbench::FramePredictor* predictor_ = nullptr;
};

workbench::PluginDescriptor describe() {
  return workbench::describe_plugin<BlankShareEvaluator>(
      workbench::PluginKind::Evaluator, "@NAME@", "0.1.0", "share of valid frames whose best CTC symbol is blank",
      workbench::OptionSchema().add_string("predictor", "ctc", "the objective whose posteriors are read"));
}

}  // namespace

WORKBENCH_PLUGIN(describe)
)tpl";

// The experiments: a few steps on a slice of the Asterisk prompts (Debian's asterisk-core-sounds-*).
const char* kExperimentHead = R"tpl(# A few steps with the @KIND@ plugin @NAME@ on a small slice of the Asterisk prompts.
#   workbench run experiment.toml
[experiment]
name = "@NAME@-smoke"

[plugins]
paths = ["build"]

[trainer]
steps = 3
warmup_steps = 2
log_every = 1
)tpl";

const char* kConformer = R"tpl(
[model.speech_encoder]
plugin = "conformer"
d_model = 64
ffn_dim = 128
heads = 2
layers = 1
kernel_size = 7
subsampling_channels = 8
)tpl";

const char* kAsteriskTrain = R"tpl(
[data.train]
plugin = "asterisk"
split = "train"
languages = ["en", "es"]
max_per_language = 16
)tpl";

const char* kLossExperiment = R"tpl(
# A shared encoder narrower than the speech encoder: @NAME@ reads the speech encoder (64 wide), CTC the
# shared encoder (48 wide).
[model.shared_encoder]
plugin = "conformer"
frontend = "projection"
d_model = 48
ffn_dim = 96
heads = 2
layers = 1
kernel_size = 7

[objectives.ctc]
plugin = "ctc"

[objectives.@NAME@]
plugin = "@NAME@"
weight = 0.5
languages = ["en", "es"]
)tpl";

const char* kEncoderExperiment = R"tpl(
[model.speech_encoder]
plugin = "@NAME@"
d_model = 64
layers = 1

[objectives.ctc]
plugin = "ctc"
)tpl";

const char* kTextEmbeddingExperiment = R"tpl(
[data.text]
plugin = "text"
fortunes = false
languages = ["en", "es"]
max_per_language = 64

[model.shared_encoder]
plugin = "conformer"
frontend = "projection"
d_model = 48
ffn_dim = 96
heads = 2
layers = 1
kernel_size = 7

[model.text_embedding]
plugin = "@NAME@"

[objectives.ctc]
plugin = "ctc"

[objectives.span_bert]
plugin = "span_bert"
data = "text"
)tpl";

const char* kDatasetExperiment = R"tpl(
[data.train]
plugin = "@NAME@"
audio_dir = "/usr/share/asterisk/sounds/en"
transcripts = "/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"
max_utterances = 24

[objectives.ctc]
plugin = "ctc"
)tpl";

const char* kEvaluatorExperiment = R"tpl(
[data.dev]
plugin = "asterisk"
split = "dev"
languages = ["en", "es"]
max_per_language = 8

[objectives.ctc]
plugin = "ctc"

[evaluators.@NAME@]
plugin = "@NAME@"
data = "dev"
)tpl";

}  // namespace

const std::vector<std::string>& template_kinds() {
  static const std::vector<std::string> kinds = {"loss", "encoder", "text_embedding", "dataset", "evaluator"};
  return kinds;
}

PluginTemplate plugin_template(const std::string& kind) {
  std::string head = kExperimentHead;
  if (kind == "loss") return {kLossSource, head + kAsteriskTrain + kConformer + kLossExperiment};
  if (kind == "encoder") return {kEncoderSource, head + kAsteriskTrain + kEncoderExperiment};
  if (kind == "text_embedding")
    return {kTextEmbeddingSource, head + kAsteriskTrain + kConformer + kTextEmbeddingExperiment};
  if (kind == "dataset") return {kDatasetSource, head + kConformer + kDatasetExperiment};
  if (kind == "evaluator") return {kEvaluatorSource, head + kAsteriskTrain + kConformer + kEvaluatorExperiment};
  throw std::invalid_argument(kind);
}

}  // namespace workbench::app
