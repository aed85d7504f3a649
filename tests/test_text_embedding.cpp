// The text-embedding plugins (char_embedding: mSLAM; sentencepiece_embedding: SLAM), loaded through the
// registry: table sizes and special ids, tokenize() (padding, the max_length cut, SentencePiece's ids
// shifted by one), that embed() is LayerNorm(table + sinusoidal positions), the errors, and that the
// SentencePiece model travels in the module's buffers.
#include <torch/types.h>
#include <torch/nn/functional/normalization.h>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "workbench/batch.h"
#include "workbench/error.h"
#include "workbench/registry.h"
#include "workbench/text_embedding.h"
#include "workbench/vocabulary.h"

// The plugin's own door to libsentencepiece (a test linked with libsentencepiece crashes before main:
// see spm_api.h), used here to decode the plugin's ids independently of the plugin.
#include "../plugins/text/common/spm_api.h"

#include <catch2/catch.hpp>

using namespace workbench;

namespace {

/// Matches an exception whose what() contains every one of `parts`.
class MessageContains : public Catch::MatcherBase<std::exception> {
 public:
  MessageContains(std::initializer_list<std::string> parts) : parts_(parts) {}
  bool match(const std::exception& e) const override {
    const std::string what = e.what();
    for (const auto& p : parts_)
      if (what.find(p) == std::string::npos) return false;
    return true;
  }
  std::string describe() const override {
    std::string out = "has a message containing";
    for (const auto& p : parts_) out += " \"" + p + "\"";
    return out;
  }

 private:
  std::vector<std::string> parts_;
};

const Registry& registry() {
  static const Registry* r = [] {
    auto* reg = new Registry();
    reg->load_directory(Registry::builtin_plugin_dir());
    return reg;
  }();
  return *r;
}

/// Every option of the plugin at its default, as the core would hand them over.
Options defaults(const std::string& name) {
  const auto& plugin = registry().get(PluginKind::TextEmbedding, name, "test");
  Options o("model.text_embedding");
  for (const auto& spec : plugin.descriptor.options.specs()) o.set(spec.name, spec.default_value, "default");
  return o;
}

std::shared_ptr<TextEmbedding> make(const std::string& name, const Options& options, const BuildContext& ctx) {
  return registry().create_as<TextEmbedding>(PluginKind::TextEmbedding, name, options, ctx);
}

/// A text batch as the core builds it: vocabulary ids, zero-padded.
Batch text_batch(const Vocabulary& vocabulary, const std::vector<std::string>& texts) {
  Batch b;
  b.kind = BatchKind::Text;
  std::vector<std::vector<std::int64_t>> ids;
  std::int64_t longest = 1;
  for (const auto& t : texts) {
    ids.push_back(vocabulary.encode(t));
    longest = std::max<std::int64_t>(longest, static_cast<std::int64_t>(ids.back().size()));
  }
  const auto n = static_cast<std::int64_t>(texts.size());
  b.tokens = torch::zeros({n, longest}, torch::kInt64);
  b.token_lengths = torch::empty({n}, torch::kInt64);
  for (std::int64_t r = 0; r < n; ++r) {
    const auto& row = ids[static_cast<std::size_t>(r)];
    for (std::size_t i = 0; i < row.size(); ++i) b.tokens[r][static_cast<std::int64_t>(i)] = row[i];
    b.token_lengths[r] = static_cast<std::int64_t>(row.size());
    b.ids.push_back("t" + std::to_string(r));
    b.langs.push_back("en");
    b.texts.push_back(texts[static_cast<std::size_t>(r)]);
  }
  return b;
}

torch::Tensor parameter(torch::nn::Module& m, const std::string& key) {
  auto named = m.named_parameters();
  auto* found = named.find(key);
  REQUIRE(found != nullptr);
  return *found;
}

/// What embed() must compute, from the module's own parameters: LayerNorm(table[ids] + positions).
torch::Tensor expected_embedding(TextEmbedding& e, const torch::Tensor& tokens) {
  auto& m = e.module();
  auto table = parameter(m, "table.weight");
  auto x = table.index_select(0, tokens.reshape({-1})).reshape({tokens.size(0), tokens.size(1), table.size(1)});
  x = x + sinusoidal_positions(tokens.size(1), table.size(1)).unsqueeze(0);
  return torch::nn::functional::layer_norm(
      x, torch::nn::functional::LayerNormFuncOptions({table.size(1)})
             .weight(parameter(m, "norm.weight"))
             .bias(parameter(m, "norm.bias"))
             .eps(1e-5));
}

const std::shared_ptr<const Vocabulary> kVocabulary =
    std::make_shared<const Vocabulary>(Vocabulary::from_texts({"abc", "hello"}));  // a b c e h l o: 9 ids

BuildContext char_context(std::int64_t dim = 16, std::shared_ptr<const Vocabulary> vocabulary = kVocabulary) {
  BuildContext ctx;
  ctx.model_dim = dim;
  ctx.vocabulary = std::move(vocabulary);
  return ctx;
}

}  // namespace

TEST_CASE("char_embedding: table of vocabulary + 1 rows, mask in the last row", "[text_embedding]") {
  REQUIRE(kVocabulary->size() == 9);
  auto e = make("char_embedding", defaults("char_embedding"), char_context());
  CHECK(e->output_dim() == 16);
  CHECK(e->vocab_size() == 10);
  CHECK(e->mask_id() == 9);
  CHECK(e->first_regular_id() == 2);
  CHECK(e->end_regular_id() == 9);
  CHECK(parameter(e->module(), "table.weight").sizes() == torch::IntArrayRef({10, 16}));
  // Padding (id 0) is a zero row.
  CHECK(parameter(e->module(), "table.weight")[0].abs().sum().item<double>() == 0.0);
}

TEST_CASE("char_embedding: a fixed vocab_size gives that table and too small a one is a ConfigError",
          "[text_embedding]") {
  auto o = defaults("char_embedding");
  o.set("vocab_size", std::int64_t{4096}, "test");
  auto e = make("char_embedding", o, char_context());
  CHECK(e->vocab_size() == 4096);
  CHECK(e->mask_id() == 4095);
  CHECK(e->end_regular_id() == 9);
  CHECK(parameter(e->module(), "table.weight").size(0) == 4096);

  o.set("vocab_size", std::int64_t{9}, "test");  // one short: no row left for [MASK]
  CHECK_THROWS_MATCHES(make("char_embedding", o, char_context()), ConfigError, MessageContains({"vocab_size"}));
  o.set("vocab_size", std::int64_t{10}, "test");
  CHECK(make("char_embedding", o, char_context())->vocab_size() == 10);
}

TEST_CASE("char_embedding: a dry run's vocabulary (blank and unknown only) still builds the configured table",
          "[text_embedding]") {
  auto empty = std::make_shared<const Vocabulary>(Vocabulary::from_texts({}));
  REQUIRE(empty->size() == 2);
  auto o = defaults("char_embedding");
  o.set("vocab_size", std::int64_t{4096}, "test");
  auto fixed = make("char_embedding", o, char_context(8, empty));
  CHECK(fixed->vocab_size() == 4096);
  CHECK(fixed->mask_id() == 4095);
  auto sized = make("char_embedding", defaults("char_embedding"), char_context(8, empty));
  CHECK(sized->vocab_size() == 3);
  CHECK(sized->mask_id() == 2);
  CHECK(sized->first_regular_id() == sized->end_regular_id());  // no characters to draw from
}

TEST_CASE("char_embedding: missing model_dim or vocabulary is a ConfigError", "[text_embedding]") {
  CHECK_THROWS_AS(make("char_embedding", defaults("char_embedding"), char_context(0)), ConfigError);
  BuildContext no_vocabulary;
  no_vocabulary.model_dim = 8;
  CHECK_THROWS_AS(make("char_embedding", defaults("char_embedding"), no_vocabulary), ConfigError);
}

TEST_CASE("char_embedding: tokenize passes the vocabulary ids through and cuts at max_length", "[text_embedding]") {
  auto batch = text_batch(*kVocabulary, {"hello", "abc", "a"});
  auto e = make("char_embedding", defaults("char_embedding"), char_context());
  auto [tokens, lengths] = e->tokenize(batch);
  CHECK(tokens.equal(batch.tokens));
  CHECK(lengths.equal(batch.token_lengths));
  CHECK(tokens[2][1].item<std::int64_t>() == 0);  // padding
  CHECK(((tokens >= 2) & (tokens < e->end_regular_id()) | (tokens == 0)).all().item<bool>());

  auto o = defaults("char_embedding");
  o.set("max_length", std::int64_t{3}, "test");
  auto cut = make("char_embedding", o, char_context());
  auto [t3, l3] = cut->tokenize(batch);
  CHECK(t3.sizes() == torch::IntArrayRef({3, 3}));
  CHECK(t3.equal(batch.tokens.narrow(1, 0, 3)));
  CHECK(l3.equal(torch::tensor({3, 3, 1}, torch::kInt64)));

  Batch speech;
  speech.kind = BatchKind::Speech;
  CHECK_THROWS_AS(e->tokenize(speech), DataError);
}

TEST_CASE("char_embedding: embed is LayerNorm(table + sinusoidal positions)", "[text_embedding]") {
  auto e = make("char_embedding", defaults("char_embedding"), char_context());
  e->module().eval();
  const auto a = kVocabulary->encode("a")[0];
  const auto b = kVocabulary->encode("b")[0];
  // Row 0: a a b; row 1: b a (padded).
  auto tokens = torch::tensor({a, a, b, b, a, std::int64_t{0}}, torch::kInt64).reshape({2, 3});
  auto lengths = torch::tensor({3, 2}, torch::kInt64);
  torch::NoGradGuard no_grad;
  auto out = e->embed(tokens, lengths);
  CHECK(out.x.sizes() == torch::IntArrayRef({2, 3, 16}));
  CHECK(out.x.scalar_type() == torch::kFloat32);
  CHECK(out.lengths.equal(lengths));
  CHECK(torch::allclose(out.x, expected_embedding(*e, tokens), 1e-5, 1e-5));
  // The same token at two positions differs (the positions are added) ...
  CHECK_FALSE(torch::allclose(out.x[0][0], out.x[0][1], 1e-3, 1e-3));
  // ... and the same token at the same position is the same vector in every row.
  CHECK(torch::allclose(out.x[0][1], out.x[1][1]));
  // LayerNorm at initialisation (weight 1, bias 0): zero mean and unit variance per vector.
  CHECK(out.x.mean(-1).abs().max().item<double>() < 1e-5);
  // Longer input than any seen before: the position cache grows.
  auto long_tokens = torch::full({1, 700}, a, torch::kInt64);
  auto long_out = e->embed(long_tokens, torch::tensor({700}, torch::kInt64));
  CHECK(torch::allclose(long_out.x, expected_embedding(*e, long_tokens), 1e-4, 1e-4));
}

TEST_CASE("char_embedding: dropout after the norm acts in training only", "[text_embedding]") {
  auto o = defaults("char_embedding");
  o.set("dropout", 0.5, "test");
  auto e = make("char_embedding", o, char_context());
  auto tokens = torch::full({2, 40}, kVocabulary->encode("h")[0], torch::kInt64);
  auto lengths = torch::tensor({40, 40}, torch::kInt64);
  torch::NoGradGuard no_grad;
  e->module().train();
  auto train = e->embed(tokens, lengths).x;
  CHECK((train == 0).to(torch::kFloat32).mean().item<double>() > 0.3);
  e->module().eval();
  CHECK(torch::allclose(e->embed(tokens, lengths).x, expected_embedding(*e, tokens), 1e-5, 1e-5));
}

namespace {

/// Without libsentencepiece-dev the plugin is not built, and its tests pass with a warning.
#define REQUIRE_SENTENCEPIECE()                                                              \
  if (!registry().find(PluginKind::TextEmbedding, "sentencepiece_embedding")) {                    \
    WARN("sentencepiece_embedding is not built (libsentencepiece-dev missing); skipped");    \
    return;                                                                                  \
  }

const spm::Api& spm_api() {
  static const spm::Api api = spm::Api::open(Registry::builtin_plugin_dir() + "/sentencepiece/spm_shim.so");
  return api;
}

const std::vector<std::string> kWords = {
    "the",     "cat",    "sat",     "on",      "mat",     "a",        "dog",      "ran",      "to",       "house",
    "green",   "little", "river",   "under",   "bridge",  "every",    "day",      "morning",  "quickly",  "slowly",
    "light",   "night",  "over",    "hill",    "small",   "bird",     "sings",    "song",     "near",     "window",
    "old",     "man",    "reads",   "book",    "blue",    "sky",      "rain",     "falls",    "garden",   "flowers",
    "winter",  "summer", "kitchen", "table",   "chair",   "yellow",   "mountain", "village",  "teacher",  "student",
    "writes",  "letter", "strong",  "wind",    "across",  "valley",   "bright",   "star",     "shines",   "above",
    "quiet",   "street", "people",  "walk",    "through", "market",   "fresh",    "bread",    "warm",     "coffee",
    "happy",   "child",  "plays",   "with",    "red",     "ball",     "friends",  "laugh",    "together", "evening"};

/// A few hundred deterministic sentences from a small word list.
const std::vector<std::string>& sentences() {
  static const std::vector<std::string> out = [] {
    const auto& words = kWords;
    std::vector<std::string> s;
    std::uint32_t x = 12345;
    for (int i = 0; i < 400; ++i) {
      std::string line;
      const int n = 4 + i % 7;
      for (int k = 0; k < n; ++k) {
        x = x * 1664525u + 1013904223u;
        if (k) line += ' ';
        line += words[(x >> 8) % words.size()];
      }
      s.push_back(line);
    }
    return s;
  }();
  return out;
}

BuildContext sp_context(const std::vector<std::string>* texts = &sentences(), std::int64_t dim = 16) {
  BuildContext ctx;
  ctx.model_dim = dim;
  ctx.training_texts = texts;
  ctx.vocabulary = kVocabulary;
  ctx.seed = 7;
  return ctx;
}

Options sp_options(std::int64_t vocab_size = 100) {
  auto o = defaults("sentencepiece_embedding");
  o.set("vocab_size", vocab_size, "test");
  return o;
}

torch::Tensor model_buffer(TextEmbedding& e) {
  auto named = e.module().named_buffers();
  auto* found = named.find("sentencepiece_model");
  REQUIRE(found != nullptr);
  return *found;
}

std::string buffer_bytes(TextEmbedding& e) {
  auto b = model_buffer(e).to(torch::kCPU).contiguous();
  return std::string(reinterpret_cast<const char*>(b.data_ptr<std::uint8_t>()), static_cast<std::size_t>(b.numel()));
}

Batch texts_batch(const std::vector<std::string>& texts) {
  Batch b;
  b.kind = BatchKind::Text;
  b.texts = texts;
  for (std::size_t i = 0; i < texts.size(); ++i) {
    b.ids.push_back("s" + std::to_string(i));
    b.langs.push_back("en");
  }
  return b;
}

}  // namespace

TEST_CASE("sentencepiece_embedding: trained at start-up with ids = piece + 1 that decode back", "[text_embedding]") {
  REQUIRE_SENTENCEPIECE();
  auto e = make("sentencepiece_embedding", sp_options(), sp_context());
  CHECK(e->vocab_size() == 102);  // 100 pieces (<unk> included), padding, [MASK]
  CHECK(e->mask_id() == 101);
  CHECK(e->first_regular_id() == 2);  // 0 = padding, 1 = <unk>
  CHECK(e->end_regular_id() == 101);
  CHECK(parameter(e->module(), "table.weight").sizes() == torch::IntArrayRef({102, 16}));

  // The proto is a uint8 buffer of the module, so checkpoints carry it.
  auto buffer = model_buffer(*e);
  CHECK(buffer.scalar_type() == torch::kUInt8);
  CHECK(buffer.dim() == 1);
  spm::Processor sp(spm_api(), buffer_bytes(*e));
  CHECK(sp.piece_size() == 100);
  // The same texts and seed train the same model (a restarted run gets the same tokenizer).
  CHECK(buffer_bytes(*make("sentencepiece_embedding", sp_options(), sp_context())) == buffer_bytes(*e));

  const std::vector<std::string> texts = {"the cat sat on the mat", "a dog", "every morning the old man reads a book"};
  auto [tokens, lengths] = e->tokenize(texts_batch(texts));
  CHECK(tokens.scalar_type() == torch::kInt64);
  CHECK(tokens.size(0) == 3);
  CHECK(lengths.max().item<std::int64_t>() == tokens.size(1));
  for (std::int64_t r = 0; r < 3; ++r) {
    const auto n = lengths[r].item<std::int64_t>();
    REQUIRE(n > 0);
    std::vector<int> ours;
    for (std::int64_t i = 0; i < n; ++i) ours.push_back(static_cast<int>(tokens[r][i].item<std::int64_t>() - 1));
    CHECK(ours == sp.encode(texts[static_cast<std::size_t>(r)]));  // our id = SentencePiece id + 1
    CHECK(sp.decode(ours) == texts[static_cast<std::size_t>(r)]);
    // Regular ids only (every character was seen in training), then zero padding.
    auto row = tokens[r];
    CHECK(((row.narrow(0, 0, n) >= e->first_regular_id()) & (row.narrow(0, 0, n) < e->end_regular_id()))
              .all()
              .item<bool>());
    CHECK((row.narrow(0, n, tokens.size(1) - n) == 0).all().item<bool>());
  }

  // An unseen character is <unk>, our id 1.
  auto [unk, unk_len] = e->tokenize(texts_batch({"zzz"}));
  CHECK((unk.narrow(1, 0, unk_len[0].item<std::int64_t>()) == 1).any().item<bool>());

  // embed: (B, L, D), LayerNorm(table + positions).
  e->module().eval();
  torch::NoGradGuard no_grad;
  auto out = e->embed(tokens, lengths);
  CHECK(out.x.sizes() == torch::IntArrayRef({3, tokens.size(1), 16}));
  CHECK(torch::allclose(out.x, expected_embedding(*e, tokens), 1e-5, 1e-5));
}

TEST_CASE("sentencepiece_embedding: max_length cuts the pieces", "[text_embedding]") {
  REQUIRE_SENTENCEPIECE();
  auto o = sp_options();
  o.set("max_length", std::int64_t{3}, "test");
  auto e = make("sentencepiece_embedding", o, sp_context());
  auto [tokens, lengths] = e->tokenize(texts_batch({"every morning the old man reads a book", "a"}));
  CHECK(tokens.size(1) == 3);
  CHECK(lengths[0].item<std::int64_t>() == 3);
  CHECK(lengths[1].item<std::int64_t>() <= 3);
  CHECK_THROWS_AS(e->tokenize(Batch{}), DataError);
}

TEST_CASE("sentencepiece_embedding: the bpe/char/word model types train too", "[text_embedding]") {
  REQUIRE_SENTENCEPIECE();
  for (const char* type : {"bpe", "char", "word"}) {
    // char ignores vocab_size; word needs exactly the word count + <unk> or fewer.
    const std::string t = type;
    auto o = sp_options(t == "word" ? static_cast<std::int64_t>(kWords.size()) + 1 : 100);
    o.set("model_type", std::string(type), "test");
    auto e = make("sentencepiece_embedding", o, sp_context());
    spm::Processor sp(spm_api(), buffer_bytes(*e));
    CHECK(e->vocab_size() == sp.piece_size() + 2);
    auto [tokens, lengths] = e->tokenize(texts_batch({"the cat sat"}));
    std::vector<int> ids;
    for (std::int64_t i = 0; i < lengths[0].item<std::int64_t>(); ++i)
      ids.push_back(static_cast<int>(tokens[0][i].item<std::int64_t>() - 1));
    CHECK(sp.decode(ids) == "the cat sat");
  }
}

TEST_CASE("sentencepiece_embedding: a vocab_size the texts cannot support is a ConfigError", "[text_embedding]") {
  REQUIRE_SENTENCEPIECE();
  CHECK_THROWS_MATCHES(make("sentencepiece_embedding", sp_options(5000), sp_context()), ConfigError,
                       MessageContains({"vocab_size", "Vocabulary size"}));
  // Smaller than the alphabet.
  CHECK_THROWS_MATCHES(make("sentencepiece_embedding", sp_options(5), sp_context()), ConfigError,
                       MessageContains({"vocab_size", "required_chars"}));
}

TEST_CASE("sentencepiece_embedding: loads a .model file and names a missing one in a DataError", "[text_embedding]") {
  REQUIRE_SENTENCEPIECE();
  auto trained = make("sentencepiece_embedding", sp_options(), sp_context());
  const auto path = std::filesystem::temp_directory_path() / "workbench_test_spm.model";
  {
    std::ofstream out(path, std::ios::binary);
    out << buffer_bytes(*trained);
  }
  auto o = sp_options(3);  // vocab_size is the trainer's: a model file brings its own
  o.set("model", path.string(), "test");
  auto loaded = make("sentencepiece_embedding", o, sp_context(nullptr));
  CHECK(loaded->vocab_size() == trained->vocab_size());
  CHECK(buffer_bytes(*loaded) == buffer_bytes(*trained));
  auto batch = texts_batch({"the little bird sings", "rain falls on the garden"});
  CHECK(loaded->tokenize(batch).first.equal(trained->tokenize(batch).first));
  std::filesystem::remove(path);

  o.set("model", std::string("no/such/dir/missing.model"), "test");
  CHECK_THROWS_MATCHES(make("sentencepiece_embedding", o, sp_context()), DataError,
                       MessageContains({"no/such/dir/missing.model"}));
}

TEST_CASE("sentencepiece_embedding: a dry run builds vocab_size + 2 rows and tokenize explains", "[text_embedding]") {
  REQUIRE_SENTENCEPIECE();
  auto dry = make("sentencepiece_embedding", sp_options(300), sp_context(nullptr));
  CHECK(dry->vocab_size() == 302);
  CHECK(dry->mask_id() == 301);
  CHECK(parameter(dry->module(), "table.weight").size(0) == 302);
  CHECK(model_buffer(*dry).numel() == 0);
  CHECK_THROWS_MATCHES(dry->tokenize(texts_batch({"the cat"})), ConfigError,
                       MessageContains({"no training texts"}));
  const std::vector<std::string> none;
  CHECK(make("sentencepiece_embedding", sp_options(300), sp_context(&none))->vocab_size() == 302);
}

TEST_CASE("sentencepiece_embedding: a model restored into the buffer (a checkpoint) is used", "[text_embedding]") {
  REQUIRE_SENTENCEPIECE();
  auto trained = make("sentencepiece_embedding", sp_options(), sp_context());
  auto restored = make("sentencepiece_embedding", sp_options(), sp_context(nullptr));
  REQUIRE(restored->vocab_size() == trained->vocab_size());
  {
    torch::NoGradGuard no_grad;
    model_buffer(*restored).set_(model_buffer(*trained).clone());
  }
  auto batch = texts_batch({"the old man reads", "a blue sky"});
  CHECK(restored->tokenize(batch).first.equal(trained->tokenize(batch).first));
}

