// Speech translation: the Transformer decoder's cache against recomputing the whole prefix, beam search
// against an exhaustive search, and an ST head fine-tuned through the runner on the Asterisk prompts.
// BLEU and chrF against sacreBLEU's published values are in test_translation_metrics.cpp.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <torch/nn/functional/loss.h>
#include <torch/optim/adam.h>

#include "decoder.h"
#include "../plugins/text/common/spm_api.h"
#include "runner_support.h"
#include "search.h"
#include "test_support.h"
#include "workbench/audio.h"
#include "workbench/registry.h"
#include "workbench/io.h"
#include "workbench/text.h"

#include <catch2/catch.hpp>

namespace fs = std::filesystem;
using namespace workbench;
using namespace workbench::transformer_decoder;
using workbench::testing::BuiltinPlugins;
using workbench::testing::MemoryRecorder;
using workbench::testing::TempDir;
using workbench::testing::write_file;

namespace {

TransformerDecoder tiny_decoder(std::int64_t vocab, std::int64_t memory_dim, double dropout = 0.0) {
  torch::manual_seed(7);
  TransformerDecoder d(DecoderOptions(vocab, memory_dim).dim(16).heads(2).ffn_dim(32).layers(2).dropout(dropout));
  return d;
}

}  // namespace

TEST_CASE("decoder: incremental steps over the cache give the teacher-forced logits", "[translation][decoder]") {
  torch::NoGradGuard no_grad;
  auto dec = tiny_decoder(9, 12);
  dec->eval();
  auto memory = torch::randn({3, 7, 12});
  auto lengths = torch::tensor({7, 4, 2}, torch::kLong);
  auto tokens = torch::randint(1, 9, {3, 6}, torch::kLong);
  auto full = dec->forward(tokens, memory, lengths);  // (3, 6, 9)
  auto cache = dec->start(memory, lengths);
  for (std::int64_t t = 0; t < tokens.size(1); ++t) {
    auto step = dec->step(cache, tokens.select(1, t));
    CHECK(torch::allclose(step, full.select(1, t), 1e-5, 1e-5));
  }
  // The memory's padding is invisible: changing it changes nothing.
  auto noisy = memory.clone();
  noisy[1].narrow(0, 4, 3).normal_();
  noisy[2].narrow(0, 2, 5).normal_();
  CHECK(torch::allclose(dec->forward(tokens, noisy, lengths), full, 1e-5, 1e-5));
}

TEST_CASE("decoder: a row's logits are the same alone and beside a longer one, in training mode", "[translation][decoder]") {
  auto dec = tiny_decoder(9, 12);  // dropout 0: training mode without randomness
  dec->train();
  auto memory = torch::randn({2, 9, 12});
  auto tokens = torch::randint(1, 9, {2, 8}, torch::kLong);
  tokens[0].narrow(0, 5, 3).zero_();  // row 0: 5 tokens, then padding
  auto lengths = torch::tensor({5, 9}, torch::kLong);
  auto both = dec->forward(tokens, memory, lengths);
  auto alone = dec->forward(tokens.narrow(0, 0, 1).narrow(1, 0, 5), memory.narrow(0, 0, 1).narrow(1, 0, 5),
                            lengths.narrow(0, 0, 1));
  CHECK(torch::allclose(both[0].narrow(0, 0, 5), alone[0], 1e-5, 1e-5));
}

TEST_CASE("decoder: greedy and beam search give the same with and without the cache", "[translation][decoder]") {
  torch::NoGradGuard no_grad;
  auto dec = tiny_decoder(11, 12);
  dec->eval();
  auto memory = torch::randn({4, 6, 12});
  auto lengths = torch::tensor({6, 3, 5, 1}, torch::kLong);
  SearchOptions o;
  o.bos = o.eos = 10;
  o.max_length = 12;
  // Greedy and a beam of 3, each with and without the cache: the same outputs, each within its row's limit.
  auto cached_equals_uncached = [&](const std::vector<std::int64_t>& limits) {
    for (std::int64_t beam : {1, 3}) {
      o.beam_size = beam;
      SearchOptions uncached = o;
      uncached.use_cache = false;
      auto search = beam == 1 ? greedy_search : beam_search;
      auto a = search(dec, memory, lengths, o);
      auto b = search(dec, memory, lengths, uncached);
      REQUIRE(a.size() == 4);
      for (std::size_t i = 0; i < a.size(); ++i) {
        CHECK(a[i].tokens == b[i].tokens);
        CHECK(a[i].log_prob == Approx(b[i].log_prob).margin(1e-4));
        CHECK(static_cast<std::int64_t>(a[i].tokens.size()) <= limits[i]);
      }
    }
  };
  cached_equals_uncached({12, 12, 12, 12});
  // Per-row limits from the memory's lengths: 10 + ceil(0.5 x frames), under max_length.
  o.max_length_per_frame = 0.5;
  CHECK(row_limits(lengths, o) == std::vector<std::int64_t>{12, 12, 12, 11});
  o.max_length_per_frame = 0.1;
  const auto limits = row_limits(lengths, o);
  CHECK(limits == std::vector<std::int64_t>{11, 11, 11, 11});
  cached_equals_uncached(limits);
  o.max_length_per_frame = 0;
  // A beam of one is greedy search.
  o.beam_size = 1;
  auto greedy = greedy_search(dec, memory, lengths, o);
  auto beam1 = beam_search(dec, memory, lengths, o);
  for (std::size_t i = 0; i < greedy.size(); ++i) {
    CHECK(greedy[i].tokens == beam1[i].tokens);
    CHECK(greedy[i].log_prob == Approx(beam1[i].log_prob).margin(1e-4));
  }
}

TEST_CASE("decoder: a wide beam finds the best output of an exhaustive search", "[translation][decoder]") {
  torch::NoGradGuard no_grad;
  // Ids: 0 padding, 1 and 2 ordinary, 3 the end. Outputs of up to 3 tokens: 1 + 2 + 4 + 8 = 15, so a beam
  // of 16 never prunes and must return the exact best.
  auto dec = tiny_decoder(4, 8);
  dec->eval();
  auto memory = torch::randn({3, 5, 8}) * 3;
  auto lengths = torch::tensor({5, 2, 4}, torch::kLong);
  SearchOptions o;
  o.bos = o.eos = 3;
  o.max_length = 3;
  o.beam_size = 16;
  std::vector<std::vector<std::int64_t>> all{{}};
  for (std::size_t start = 0; start < all.size(); ++start)
    if (all[start].size() < 3)
      for (std::int64_t k : {1, 2}) {
        auto y = all[start];
        y.push_back(k);
        all.push_back(y);
      }
  REQUIRE(all.size() == 15);
  for (double penalty : {0.0, 1.0}) {
    o.length_penalty = penalty;
    auto found = beam_search(dec, memory, lengths, o);
    for (std::int64_t b = 0; b < 3; ++b) {
      double best = -INFINITY;
      std::vector<std::int64_t> argbest;
      for (const auto& y : all) {
        const double lp = sequence_log_probs(dec, memory.narrow(0, b, 1), lengths.narrow(0, b, 1), {y}, o)[0];
        const double score = penalty == 0 ? lp : lp / std::pow(static_cast<double>(y.size() + 1), penalty);
        if (score > best) {
          best = score;
          argbest = y;
        }
      }
      INFO("row " << b << ", length penalty " << penalty);
      CHECK(found[static_cast<std::size_t>(b)].tokens == argbest);
      CHECK(found[static_cast<std::size_t>(b)].score == Approx(best).margin(1e-4));
    }
  }
}

TEST_CASE("decoder: learns to copy its memory, and decodes it greedily and with a beam", "[translation][decoder]") {
  // Memory: one-hot rows of a 3..6-token sequence over ids 1..5, each beside a one-hot of its position;
  // target: the same sequence.
  torch::manual_seed(3);
  const std::int64_t V = 7, eos = 6;
  auto dec = tiny_decoder(V, V + 6, 0.0);
  torch::optim::Adam opt(dec->parameters(), torch::optim::AdamOptions(3e-3));
  auto make = [&](std::int64_t B) {
    auto lengths = torch::randint(3, 7, {B}, torch::kLong);
    auto seq = torch::randint(1, 6, {B, 6}, torch::kLong) * (torch::arange(6).unsqueeze(0) < lengths.unsqueeze(1));
    auto memory = torch::cat({torch::one_hot(seq, V), torch::eye(6, torch::kLong).unsqueeze(0).expand({B, 6, 6})}, 2)
                      .to(torch::kFloat32);
    auto input = torch::cat({torch::full({B, 1}, eos, torch::kLong), seq}, 1);
    auto target = torch::cat({seq, torch::zeros({B, 1}, torch::kLong)}, 1);
    target.scatter_(1, lengths.unsqueeze(1), eos);
    return std::make_tuple(memory, lengths, input, target, seq);
  };
  dec->train();
  for (int step = 0; step < 400; ++step) {
    auto [memory, lengths, input, target, seq] = make(32);
    auto logits = dec->forward(input, memory, lengths);
    auto loss = torch::nn::functional::cross_entropy(logits.reshape({-1, V}), target.reshape({-1}),
                                                     torch::nn::functional::CrossEntropyFuncOptions().ignore_index(0));
    opt.zero_grad();
    loss.backward();
    opt.step();
  }
  dec->eval();
  torch::NoGradGuard no_grad;
  auto [memory, lengths, input, target, seq] = make(16);
  SearchOptions o;
  o.bos = o.eos = eos;
  o.max_length = 10;
  auto greedy = greedy_search(dec, memory, lengths, o);
  o.beam_size = 4;
  auto beam = beam_search(dec, memory, lengths, o);
  int greedy_right = 0, beam_right = 0;
  for (std::int64_t b = 0; b < 16; ++b) {
    std::vector<std::int64_t> want;
    for (std::int64_t t = 0; t < lengths[b].item<std::int64_t>(); ++t) want.push_back(seq[b][t].item<std::int64_t>());
    greedy_right += greedy[static_cast<std::size_t>(b)].tokens == want;
    beam_right += beam[static_cast<std::size_t>(b)].tokens == want;
  }
  CHECK(greedy_right >= 14);
  CHECK(beam_right >= 14);
}

namespace {

// Speech translation fr -> en on a few Asterisk prompts: the tiny joint model of runner_support.h with a
// character text embedding, a tiny decoder head and the translation evaluator.
const std::string kSpeechTranslation = R"(
[experiment]
name = "st-tiny"

[data.train]
plugin = "asterisk"
languages = ["fr"]
translate_to = "en"
max_per_language = 8
batch_seconds = 30.0

[data.dev]
plugin = "asterisk"
split = "dev"
languages = ["fr", "it"]
translate_to = "en"
max_per_language = 3
shuffle = false
)" + workbench::testing::kTinyEncoders + R"(
[model.text_embedding]
plugin = "char_embedding"

[objectives.st]
plugin = "transformer_decoder"
dim = 16
heads = 2
ffn_dim = 32
layers = 1
beam_size = 2
max_length = 30

[evaluators.translation]
plugin = "translation"
examples = 2

[trainer]
steps = 2
warmup_steps = 1
log_every = 1
threads = 2
progress = "none"
)";

void build(Runner& r, MemoryRecorder& recorder, const std::vector<std::string>& overrides, const std::string& ckpt = "") {
  r.resolve(ExperimentFile::parse_text(kSpeechTranslation, "st.toml", overrides));
  r.configure_runtime();
  r.prepare_data();
  r.build_model();
  r.create_components();
  r.connect();
  r.make_trainer(recorder, ckpt);
}

// id -> transcript as the asterisk dataset normalises it (lower-cased, white space collapsed).
std::map<std::string, std::string> english_prompts() {
  std::map<std::string, std::string> out;
  std::istringstream in(read_text_file("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz"));
  for (std::string line; std::getline(in, line);) {
    const auto colon = line.find(':');
    if (line.empty() || line[0] == ';' || colon == std::string::npos) continue;
    out[line.substr(0, colon)] = to_lower(normalize_space(line.substr(colon + 1)));
  }
  return out;
}

}  // namespace

TEST_CASE("speech translation through the runner: targets, metrics per direction, examples, eval from the checkpoint",
          "[translation][asterisk]") {
  if (!workbench::testing::have_asterisk()) {
    WARN("Asterisk prompts not installed (scripts/install-deps.sh); skipping");
    return;
  }
  TempDir dir("wbtest_st_");
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().verbose(false));
  MemoryRecorder recorder;
  build(runner, recorder, {}, dir.file("ckpt"));
  // Every French utterance's target is the English transcript of the same prompt id.
  const auto english = english_prompts();
  const auto& train = runner.data().at("train");
  REQUIRE(train.size() == 8);
  for (std::size_t i = 0; i < train.size(); ++i) {
    const std::string id = train.ids[i].substr(train.ids[i].find('/') + 1);
    REQUIRE(english.count(id) == 1);
    CHECK(train.targets[i] == english.at(id));
    CHECK(train.langs[i] == "fr");
  }
  runner.train();
  for (const std::string key : {"dev/st/bleu", "dev/st/chrf", "dev/st/bleu/fr-en", "dev/st/bleu/it-en",
                                "dev/st/chrf/fr-en", "dev/mt_zeroshot/bleu", "dev/mt_zeroshot/bleu/fr-en",
                                "dev/mt_zeroshot/chrf/it-en", "dev/st/bleu_pooled", "dev/st/bleu_pooled_p4", "dev/st/bleu_pooled_bp",
                                "st/loss", "st/accuracy", "st/nll"}) {
    INFO(key);
    CHECK(recorder.values.count(key) == 1);
  }
  const double st = recorder.values["dev/st/bleu"].rbegin()->second;
  CHECK(st == Approx((recorder.values["dev/st/bleu/fr-en"].rbegin()->second +
                      recorder.values["dev/st/bleu/it-en"].rbegin()->second) / 2));
  // Two examples per direction and task at each evaluation, with the English reference.
  const auto& last = recorder.examples.rbegin()->second;
  CHECK(last.size() == 8);  // {st, mt_zeroshot} x {fr-en, it-en} x 2
  for (const auto& e : last) {
    CHECK((e.task.rfind("dev/st/", 0) == 0 || e.task.rfind("dev/mt_zeroshot/", 0) == 0));
    const std::string id = e.id.substr(e.id.find('/') + 1);
    CHECK(e.reference == english.at(id));
  }
  // Evaluating the checkpoint again (every component, the decoder's vocabulary included) gives the same.
  BuiltinPlugins plugins2;
  Runner again(plugins2, RunnerOptions().verbose(false));
  MemoryRecorder recorder2;
  build(again, recorder2, {"init.checkpoint=\"" + dir.file("ckpt") + "/final.pt\"", "init.components=[\"all\"]"});
  again.evaluate();
  CHECK(recorder2.values["dev/st/chrf"][0] == Approx(recorder.values["dev/st/chrf"].rbegin()->second).margin(1e-12));
  CHECK(recorder2.values["dev/mt_zeroshot/chrf"][0] ==
        Approx(recorder.values["dev/mt_zeroshot/chrf"].rbegin()->second).margin(1e-12));
}

TEST_CASE("speech translation with SentencePiece targets: pieces of the English targets, kept in the checkpoint",
          "[translation][asterisk][sentencepiece]") {
  if (!workbench::testing::have_asterisk()) {
    WARN("Asterisk prompts not installed (scripts/install-deps.sh); skipping");
    return;
  }
  const std::string shim = Registry::builtin_plugin_dir() + "/sentencepiece/spm_shim.so";
  if (!fs::exists(shim)) {
    WARN("libsentencepiece not found at build time; skipping");
    return;
  }
  TempDir dir("wbtest_st_spm_");
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().verbose(false));
  MemoryRecorder recorder;
  build(runner, recorder, {"objectives.st.targets=\"sentencepiece\"", "objectives.st.target_vocab_size=40"},
        dir.file("ckpt"));
  // The head's buffer is a SentencePiece model of the training targets: each encodes without an unknown
  // piece and decodes back to itself, in fewer pieces than characters.
  auto buffers = runner.objectives().at(0).loss->module()->named_buffers();
  auto bytes = buffers["target_vocabulary"].contiguous();
  const std::string serialized(reinterpret_cast<const char*>(bytes.data_ptr<std::uint8_t>()),
                               static_cast<std::size_t>(bytes.numel()));
  const std::string tag = "sentencepiece\n";
  REQUIRE(serialized.compare(0, tag.size(), tag) == 0);
  static const spm::Api api = spm::Api::open(shim);
  spm::Processor sp(api, serialized.substr(tag.size()));
  CHECK(sp.piece_size() <= 40);
  std::size_t pieces = 0, characters = 0;
  for (const auto& target : runner.data().at("train").targets) {
    const auto ids = sp.encode(target);
    CHECK(std::find(ids.begin(), ids.end(), 0) == ids.end());  // 0: SentencePiece's <unk>
    CHECK(sp.decode(ids) == target);
    pieces += ids.size();
    characters += target.size();
  }
  CHECK(pieces < characters);
  // Its output layer has a row per piece, plus padding (0), unknown (1) and the end symbol.
  std::int64_t rows = 0;
  for (const auto& p : runner.objectives().at(0).loss->module()->named_parameters())
    if (p.key().find("embed") != std::string::npos) rows = std::max(rows, p.value().size(0));
  CHECK(rows == sp.piece_size() + 2);
  runner.train();
  CHECK(recorder.values.count("dev/st/chrf/fr-en") == 1);
  // The checkpoint decodes with its pieces: evaluating it again gives the same scores.
  BuiltinPlugins plugins2;
  Runner again(plugins2, RunnerOptions().verbose(false));
  MemoryRecorder recorder2;
  build(again, recorder2,
        {"objectives.st.targets=\"sentencepiece\"", "objectives.st.target_vocab_size=40",
         "init.checkpoint=\"" + dir.file("ckpt") + "/final.pt\"", "init.components=[\"all\"]"});
  again.evaluate();
  CHECK(recorder2.values["dev/st/chrf"][0] == Approx(recorder.values["dev/st/chrf"].rbegin()->second).margin(1e-12));
}

TEST_CASE("speech translation: multi-modal fine-tuning trains on text too - a head without targets says what to add",
          "[translation][asterisk]") {
  if (!workbench::testing::have_asterisk()) {
    WARN("Asterisk prompts not installed (scripts/install-deps.sh); skipping");
    return;
  }
  {
    BuiltinPlugins plugins;
    Runner runner(plugins, RunnerOptions().verbose(false));
    MemoryRecorder recorder;
    build(runner, recorder, {"objectives.st.input=\"both\"", "evaluators.translation.text_task=\"mt\""});
    runner.train();
    CHECK(recorder.values.count("st/text_loss") == 1);
    CHECK(recorder.values.count("st/loss") == 1);
    CHECK(recorder.values.count("dev/mt/bleu/fr-en") == 1);
    CHECK(recorder.values.count("dev/mt_zeroshot/bleu") == 0);
  }
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().verbose(false));
  MemoryRecorder recorder;
  CHECK_THROWS_WITH(build(runner, recorder, {"data.train.translate_to=\"\""}),
                    Catch::Matchers::Contains("translation targets") && Catch::Matchers::Contains("translate_to"));
}

TEST_CASE("speech translation from a manifest's target column, without a text side", "[translation][manifest]") {
  TempDir dir("wbtest_st_manifest_");
  std::string tsv = "id\tpath\ttext\tlang\ttarget\n";
  for (int i = 0; i < 6; ++i) {
    Audio a;
    a.sample_rate = 16000;
    a.samples.resize(static_cast<std::size_t>(6000 + 800 * i));
    for (std::size_t t = 0; t < a.samples.size(); ++t)
      a.samples[t] = static_cast<float>(0.2 * std::sin(2 * 3.14159265358979 * (300 + 40 * i) * static_cast<double>(t) / 16000.0));
    const std::string rel = "u" + std::to_string(i) + ".wav";
    write_audio(dir.file(rel), a);
    tsv += "u" + std::to_string(i) + "\t" + rel + "\tun deux\tfr\t" + (i % 2 ? "One  Two" : "two") + "\n";
  }
  write_file(dir.file("st.tsv"), tsv);
  const std::string text = "[data.train]\nplugin = \"manifest\"\npath = \"" + dir.file("st.tsv") + R"("
batch_seconds = 4.0

[model.speech_encoder]
plugin = "conformer"
d_model = 32
heads = 2
layers = 1
ffn_dim = 64
kernel_size = 7
subsampling_channels = 8

[objectives.st]
plugin = "transformer_decoder"
dim = 16
heads = 2
ffn_dim = 32
layers = 1
beam_size = 1

[evaluators.translation]
plugin = "translation"
data = "train"

[trainer]
steps = 1
warmup_steps = 1
threads = 2
progress = "none"
)";
  BuiltinPlugins plugins;
  Runner runner(plugins, RunnerOptions().verbose(false));
  MemoryRecorder recorder;
  runner.resolve(ExperimentFile::parse_text(text, "st_manifest.toml"));
  runner.configure_runtime();
  runner.prepare_data();
  const auto& data = runner.data().at("train");
  REQUIRE(data.size() == 6);
  CHECK(data.targets[0] == "two");
  CHECK(data.targets[1] == "one two");  // normalised as transcripts are: lower-cased, spaces collapsed
  runner.build_model();
  runner.create_components();
  runner.connect();
  runner.make_trainer(recorder, "");
  runner.train();
  CHECK(recorder.values.count("train/st/bleu/fr-en") == 1);
  CHECK(recorder.values.count("train/mt_zeroshot/bleu") == 0);  // no text embedding: no text translation
}
