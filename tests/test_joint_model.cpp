// The joint speech-text model's core paths (core/src/model.cpp): the modality embedding, the sinusoidal
// position table, the shared encoder's speech, text and packed speech ++ text paths (JointOutput), and
// speech_context; and the text side of the data pipeline (core/src/data.cpp): text prepare_data and
// collate, BucketBatcher on text, and the LanguageSampler's temperature sampling (XLM / mSLAM, T = 3).
#include <torch/nn/module.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "joint_fixture.h"
#include "workbench/batch.h"
#include "workbench/data.h"
#include "workbench/encoder.h"
#include "workbench/error.h"
#include "workbench/model.h"
#include "workbench/text_embedding.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

using namespace workbench;
using namespace workbench::testing;
using Catch::Matchers::Contains;

namespace {

/// A shared encoder that changes nothing: embed and encode pass their input through, so that the joint
/// output is exactly the packed input (plus the modality rows).
class PassThroughEncoder final : public Encoder {
 public:
  explicit PassThroughEncoder(std::int64_t dim) : dim_(dim) {}
  torch::nn::Module& module() override { return module_; }
  std::int64_t output_dim() const override { return dim_; }
  EncoderOutput embed(const torch::Tensor& x, const torch::Tensor& lengths) override {
    ++embeds;
    return {x, lengths};
  }
  EncoderOutput encode(const EncoderOutput& e) override {
    ++encodes;
    seen_lengths = e.lengths;
    return e;
  }
  torch::nn::Module module_;
  int embeds = 0, encodes = 0;
  torch::Tensor seen_lengths;

 private:
  std::int64_t dim_;
};

constexpr std::int64_t kD = 4;
constexpr double kSentinel = 1e4;  // written into padding, which must never reach a row

/// (B, T, D) random vectors with kSentinel after each row's length.
torch::Tensor padded_random(const std::vector<std::int64_t>& lengths, std::int64_t T, std::int64_t D) {
  auto x = torch::randn({static_cast<std::int64_t>(lengths.size()), T, D});
  for (std::size_t b = 0; b < lengths.size(); ++b)
    if (lengths[b] < T) x[static_cast<std::int64_t>(b)].narrow(0, lengths[b], T - lengths[b]).fill_(kSentinel);
  return x;
}

/// A ModelParts with the pass-through shared encoder and a modality embedding with rows 100 (speech)
/// and 200 (text), so that each output position tells which half it came from.
ModelParts pass_through_model(std::shared_ptr<PassThroughEncoder>& shared, bool modality = true) {
  ModelParts m;
  shared = std::make_shared<PassThroughEncoder>(kD);
  m.shared_encoder = shared;
  if (modality) {
    m.modality = ModalityEmbedding(kD);
    torch::NoGradGuard no_grad;
    m.modality->table->weight[0].fill_(100.0);
    m.modality->table->weight[1].fill_(200.0);
  }
  return m;
}

/// Text PreparedData: `counts` examples per language, each with `1 + i % 9` tokens (ids 2..).
PreparedData text_data(const std::map<std::string, int>& counts) {
  PreparedData d;
  d.name = "text";
  d.kind = BatchKind::Text;
  for (const auto& [lang, n] : counts)
    for (int i = 0; i < n; ++i) {
      std::vector<std::int64_t> tokens;
      for (int k = 0; k < 1 + i % 9; ++k) tokens.push_back(2 + (i + k) % 5);
      d.tokens.push_back(tokens);
      d.ids.push_back(lang + "/" + std::to_string(i));
      d.langs.push_back(lang);
      d.texts.push_back(std::string(tokens.size(), 'a'));
    }
  return d;
}

std::map<std::string, double> as_map(const std::vector<std::pair<std::string, double>>& v) {
  return {v.begin(), v.end()};
}

}  // namespace

// --- modality embedding and positions ----------------------------------------------------------------

TEST_CASE("ModalityEmbedding: a (2, D) table that starts at zero and is trained", "[model][modality]") {
  ModalityEmbedding m(6);
  auto w = m->table->weight;
  CHECK(w.sizes() == torch::IntArrayRef({2, 6}));
  CHECK(w.abs().sum().item<double>() == 0.0);
  CHECK(w.requires_grad());
  auto params = m->named_parameters();
  CHECK(params.size() == 1);
  CHECK(params.contains("table.weight"));
}

TEST_CASE("modality embedding: the speech row gets the speech gradient, the text row the text one",
          "[model][modality]") {
  auto vocabulary = Vocabulary::from_texts({"abcdefgh"});
  ModelParts m = tiny_joint_model(5, 6, kD, vocabulary.size());
  auto w = m.modality->table->weight;
  REQUIRE(w.abs().sum().item<double>() == 0.0);

  auto features = torch::randn({2, 7, 5});
  auto f_len = torch::tensor(std::vector<std::int64_t>{7, 4}, torch::kInt64);
  auto tokens = torch::tensor(std::vector<std::int64_t>{2, 3, 4, 2, 3, 0}, torch::kInt64).reshape({2, 3});
  auto t_len = torch::tensor(std::vector<std::int64_t>{3, 2}, torch::kInt64);

  SECTION("speech path: only row 0") {
    auto out = m.shared_from_speech(m.speech_encoder->forward(features, f_len));
    out.x.masked_select(~padding_mask(out.lengths, out.x.size(1)).unsqueeze(-1)).pow(2).sum().backward();
    REQUIRE(w.grad().defined());
    CHECK(w.grad()[0].abs().sum().item<double>() > 0);
    CHECK(w.grad()[1].abs().sum().item<double>() == 0.0);
  }
  SECTION("text path: only row 1") {
    auto out = m.shared_from_text(m.text_embedding->embed(tokens, t_len));
    out.x.masked_select(~padding_mask(out.lengths, out.x.size(1)).unsqueeze(-1)).pow(2).sum().backward();
    REQUIRE(w.grad().defined());
    CHECK(w.grad()[0].abs().sum().item<double>() == 0.0);
    CHECK(w.grad()[1].abs().sum().item<double>() > 0);
  }
  SECTION("speech ++ text: both rows") {
    auto out = m.shared_from_pair(m.speech_encoder->forward(features, f_len), m.text_embedding->embed(tokens, t_len));
    (out.speech().pow(2).sum() + out.text().pow(2).sum()).backward();
    REQUIRE(w.grad().defined());
    CHECK(w.grad()[0].abs().sum().item<double>() > 0);
    CHECK(w.grad()[1].abs().sum().item<double>() > 0);
  }
}

TEST_CASE("sinusoidal_positions: sin on even channels, cos on odd, 1/10000^(2i/D)", "[model][positions]") {
  for (std::int64_t D : {6, 5, 16}) {
    INFO("D = " << D);
    const std::int64_t L = 50;
    auto pe = sinusoidal_positions(L, D);
    REQUIRE(pe.sizes() == torch::IntArrayRef({L, D}));
    REQUIRE(pe.dtype() == torch::kFloat32);
    auto a = pe.accessor<float, 2>();
    for (std::int64_t pos : {0, 1, 7, 49})
      for (std::int64_t c = 0; c < D; ++c) {
        const std::int64_t i2 = c - c % 2;  // 2i
        const double angle = static_cast<double>(pos) / std::pow(10000.0, static_cast<double>(i2) / static_cast<double>(D));
        const double expected = c % 2 == 0 ? std::sin(angle) : std::cos(angle);
        INFO("pos " << pos << " channel " << c);
        CHECK(a[pos][c] == Approx(expected).margin(1e-5));
      }
  }
  // Position 0 is (0, 1, 0, 1, ...).
  auto row0 = sinusoidal_positions(3, 8)[0];
  CHECK(row0.equal(torch::tensor({0.f, 1.f, 0.f, 1.f, 0.f, 1.f, 0.f, 1.f})));
  // The last pair of D = 16 at position 49: angle 49 / 10000^(14/16).
  CHECK(sinusoidal_positions(50, 16)[49][14].item<double>() == Approx(std::sin(49.0 / std::pow(10000.0, 14.0 / 16.0))).margin(1e-6));
}

// --- the shared encoder's paths ----------------------------------------------------------------------

TEST_CASE("shared_from_pair packs each row as its speech frames, then its text tokens, then padding",
          "[model][joint]") {
  std::shared_ptr<PassThroughEncoder> shared;
  ModelParts m = pass_through_model(shared);
  const std::vector<std::int64_t> s_len = {5, 2, 0, 3}, t_len = {3, 4, 1, 0};
  const std::int64_t Ts = 5, Lt = 4;
  auto sx = padded_random(s_len, Ts, kD), tx = padded_random(t_len, Lt, kD);
  auto out = m.shared_from_pair({sx, torch::tensor(s_len, torch::kInt64)}, {tx, torch::tensor(t_len, torch::kInt64)});
  CHECK(shared->embeds == 1);  // the projection runs on the speech half only
  CHECK(shared->encodes == 1);

  // Lengths Ls + Lt; the joint width is the longest row.
  CHECK(out.joint.lengths.equal(torch::tensor(std::vector<std::int64_t>{8, 6, 1, 3})));
  CHECK(shared->seen_lengths.equal(out.joint.lengths));
  REQUIRE(out.joint.x.sizes() == torch::IntArrayRef({4, 8, kD}));
  for (std::size_t b = 0; b < s_len.size(); ++b) {
    const auto r = static_cast<std::int64_t>(b);
    INFO("row " << b);
    auto row = out.joint.x[r];
    const std::int64_t ls = s_len[b], lt = t_len[b];
    if (ls > 0) CHECK(torch::allclose(row.narrow(0, 0, ls), sx[r].narrow(0, 0, ls) + 100.0));
    if (lt > 0) CHECK(torch::allclose(row.narrow(0, ls, lt), tx[r].narrow(0, 0, lt) + 200.0));
    if (ls + lt < 8) CHECK(row.narrow(0, ls + lt, 8 - ls - lt).abs().sum().item<double>() == 0.0);
    // No padding inside a row, and no sentinel anywhere.
    CHECK((row.abs() < 1000).all().item<bool>());

    // The indices map each half back to its joint positions; padding indexes 0.
    auto si = out.speech_index[r], ti = out.text_index[r];
    REQUIRE(si.size(0) == Ts);
    REQUIRE(ti.size(0) == Lt);
    for (std::int64_t t = 0; t < Ts; ++t) CHECK(si[t].item<std::int64_t>() == (t < ls ? t : 0));
    for (std::int64_t t = 0; t < Lt; ++t) CHECK(ti[t].item<std::int64_t>() == (t < lt ? ls + t : 0));
  }
  CHECK(out.speech_index.dtype() == torch::kInt64);
  CHECK(out.text_index.dtype() == torch::kInt64);

  // speech() and text() give each half back in its own order and shape.
  auto speech = out.speech(), text = out.text();
  REQUIRE(speech.sizes() == torch::IntArrayRef({4, Ts, kD}));
  REQUIRE(text.sizes() == torch::IntArrayRef({4, Lt, kD}));
  auto s_valid = ~padding_mask(torch::tensor(s_len, torch::kInt64), Ts);
  auto t_valid = ~padding_mask(torch::tensor(t_len, torch::kInt64), Lt);
  CHECK(torch::allclose(speech.masked_select(s_valid.unsqueeze(-1)), (sx + 100.0).masked_select(s_valid.unsqueeze(-1))));
  CHECK(torch::allclose(text.masked_select(t_valid.unsqueeze(-1)), (tx + 200.0).masked_select(t_valid.unsqueeze(-1))));
}

TEST_CASE("shared_from_pair without a modality embedding packs the inputs unchanged", "[model][joint]") {
  std::shared_ptr<PassThroughEncoder> shared;
  ModelParts m = pass_through_model(shared, /*modality=*/false);
  const std::vector<std::int64_t> s_len = {3, 1}, t_len = {1, 2};
  auto sx = padded_random(s_len, 3, kD), tx = padded_random(t_len, 2, kD);
  auto out = m.shared_from_pair({sx, torch::tensor(s_len, torch::kInt64)}, {tx, torch::tensor(t_len, torch::kInt64)});
  REQUIRE(out.joint.x.sizes() == torch::IntArrayRef({2, 4, kD}));
  CHECK(out.joint.x[0].narrow(0, 0, 3).equal(sx[0]));
  CHECK(out.joint.x[0][3].equal(tx[0][0]));
  CHECK(out.joint.x[1][0].equal(sx[1][0]));
  CHECK(out.joint.x[1].narrow(0, 1, 2).equal(tx[1]));
  CHECK(out.joint.x[1][3].abs().sum().item<double>() == 0.0);
}

TEST_CASE("shared_from_pair: padding of either half never changes a row's output", "[model][joint]") {
  // The tiny shared encoder mixes positions (a masked row mean), as attention would.
  auto vocabulary = Vocabulary::from_texts({"abcdefgh"});
  ModelParts m = tiny_joint_model(5, 6, kD, vocabulary.size());
  const std::vector<std::int64_t> s_len = {4, 2}, t_len = {2, 5};
  auto sx = padded_random(s_len, 4, 6), tx = padded_random(t_len, 5, kD);
  auto s_l = torch::tensor(s_len, torch::kInt64), t_l = torch::tensor(t_len, torch::kInt64);
  auto a = m.shared_from_pair({sx, s_l}, {tx, t_l});
  auto sx2 = sx.clone(), tx2 = tx.clone();
  sx2[1].narrow(0, 2, 2).fill_(-7.0);
  tx2[0].narrow(0, 2, 3).fill_(3.0);
  auto b = m.shared_from_pair({sx2, s_l}, {tx2, t_l});
  CHECK(a.joint.lengths.equal(torch::tensor(std::vector<std::int64_t>{6, 7})));
  REQUIRE(a.joint.x.sizes() == torch::IntArrayRef({2, 7, kD}));
  CHECK(torch::allclose(a.joint.x.narrow(1, 0, 6)[0], b.joint.x.narrow(1, 0, 6)[0]));
  CHECK(torch::allclose(a.joint.x[1], b.joint.x[1]));
  CHECK(torch::allclose(a.speech()[0], b.speech()[0]));
  CHECK(torch::allclose(a.text()[1], b.text()[1]));
}

TEST_CASE("shared_from_speech and shared_from_text add their modality row and run the shared encoder",
          "[model][joint]") {
  std::shared_ptr<PassThroughEncoder> shared;
  ModelParts m = pass_through_model(shared);
  auto x = torch::randn({2, 3, kD});
  auto len = torch::tensor(std::vector<std::int64_t>{3, 2}, torch::kInt64);
  auto s = m.shared_from_speech({x, len});
  CHECK(shared->embeds == 1);  // the projection
  CHECK(shared->encodes == 1);
  CHECK(torch::allclose(s.x, x + 100.0));
  CHECK(s.lengths.equal(len));
  auto t = m.shared_from_text({x, len});
  CHECK(shared->embeds == 1);  // text is already in the shared encoder's dimension
  CHECK(shared->encodes == 2);
  CHECK(torch::allclose(t.x, x + 200.0));
  CHECK(t.lengths.equal(len));
}

TEST_CASE("speech_context: through the shared encoder when there is one, else the speech encoder's output",
          "[model][joint]") {
  auto vocabulary = Vocabulary::from_texts({"abc"});
  ModelParts m = tiny_joint_model(5, 6, kD, vocabulary.size());
  auto features = torch::randn({2, 7, 5});
  auto len = torch::tensor(std::vector<std::int64_t>{7, 3}, torch::kInt64);
  auto joint = m.speech_context(features, len);
  auto expected = m.shared_from_speech(m.speech_encoder->forward(features, len));
  REQUIRE(joint.x.sizes() == torch::IntArrayRef({2, 7, kD}));
  CHECK(torch::allclose(joint.x, expected.x));
  CHECK(joint.lengths.equal(len));

  ModelParts speech_only;
  speech_only.speech_encoder = m.speech_encoder;
  auto alone = speech_only.speech_context(features, len);
  REQUIRE(alone.x.sizes() == torch::IntArrayRef({2, 7, 6}));
  CHECK(torch::allclose(alone.x, m.speech_encoder->forward(features, len).x));
}

TEST_CASE("the shared paths name the part they miss", "[model][errors]") {
  ModelParts none;
  auto x = torch::randn({1, 2, kD});
  auto len = torch::tensor(std::vector<std::int64_t>{2}, torch::kInt64);
  CHECK_THROWS_WITH(none.shared_from_pair({x, len}, {x, len}), Contains("[model.shared_encoder]"));
  CHECK_THROWS_AS(none.shared_from_speech({x, len}), ConfigError);
  CHECK_THROWS_AS(none.shared_from_text({x, len}), ConfigError);
  CHECK_THROWS_WITH(none.speech_context(x, len), Contains("[model.speech_encoder]"));
  CHECK_THROWS_WITH(none.require_text_embedding("span_bert"), Contains("span_bert") && Contains("[model.text_embedding]"));
}

// --- text data ---------------------------------------------------------------------------------------

TEST_CASE("prepare_data on text: no features, the non-empty texts, lengths in tokens", "[data][text]") {
  std::vector<Utterance> utts(4);
  const std::vector<std::string> texts = {"hello", "", "ab", "a b c"};
  for (std::size_t i = 0; i < utts.size(); ++i) {
    utts[i].id = "t" + std::to_string(i);
    utts[i].lang = i % 2 ? "fr" : "en";
    utts[i].text = texts[i];
  }
  auto vocabulary = Vocabulary::from_texts(texts);
  PreparedData d = prepare_data("text", BatchKind::Text, std::move(utts), {}, &vocabulary, 0.0);
  CHECK(d.kind == BatchKind::Text);
  REQUIRE(d.size() == 3);  // the empty text is dropped
  CHECK(d.ids == std::vector<std::string>{"t0", "t2", "t3"});
  CHECK(d.langs == std::vector<std::string>{"en", "en", "fr"});
  CHECK(d.features.empty());
  CHECK(d.seconds == 0.0);
  CHECK(d.tokens[0] == vocabulary.encode("hello"));
  CHECK(d.length(0) == 5);
  CHECK(d.length(1) == 2);
  CHECK(d.length(2) == 5);
}

TEST_CASE("collate on text leaves the speech fields undefined and pads the tokens with 0", "[data][text]") {
  PreparedData d = text_data({{"en", 5}});  // 1..5 tokens
  Batch b = collate(d, {4, 0, 2});
  CHECK(b.kind == BatchKind::Text);
  CHECK_FALSE(b.features.defined());
  CHECK_FALSE(b.feature_lengths.defined());
  REQUIRE(b.tokens.sizes() == torch::IntArrayRef({3, 5}));
  CHECK(b.token_lengths.equal(torch::tensor(std::vector<std::int64_t>{5, 1, 3})));
  for (std::int64_t r = 0; r < 3; ++r) {
    const auto& t = d.tokens[std::vector<std::size_t>{4, 0, 2}[static_cast<std::size_t>(r)]];
    for (std::int64_t k = 0; k < 5; ++k)
      CHECK(b.tokens[r][k].item<std::int64_t>() == (k < static_cast<std::int64_t>(t.size()) ? t[static_cast<std::size_t>(k)] : 0));
  }
  CHECK(b.ids == std::vector<std::string>{"en/4", "en/0", "en/2"});
  CHECK(b.size() == 3);
}

TEST_CASE("BucketBatcher on text: max_batch, no audio budget, each example once per epoch", "[data][text][batcher]") {
  PreparedData d = text_data({{"en", 70}, {"fr", 60}});
  BatchingOptions o;
  o.max_batch = 16;
  o.batch_seconds = 0.01;  // would cut audio into single utterances; text ignores it
  BucketBatcher batcher(d, o, 3);
  CHECK(batcher.kind() == BatchKind::Text);
  CHECK(batcher.batches_per_epoch() == 9);  // ceil(130 / 16)
  std::multiset<std::string> seen;
  for (std::size_t i = 0; i < batcher.batches_per_epoch(); ++i) {
    Batch b = batcher.next();
    CHECK(b.kind == BatchKind::Text);
    CHECK_FALSE(b.features.defined());
    CHECK(b.size() <= 16);
    CHECK(b.tokens.size(1) == b.token_lengths.max().item<std::int64_t>());
    seen.insert(b.ids.begin(), b.ids.end());
  }
  CHECK(seen.size() == 130);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 130);
  CHECK(batcher.epoch() == 0);
  batcher.next();
  CHECK(batcher.epoch() == 1);

  // all(): deterministic, in token-length order, full batches but the last.
  auto all = batcher.all();
  REQUIRE(all.size() == 9);
  std::int64_t previous = 0, total = 0;
  for (std::size_t i = 0; i < all.size(); ++i) {
    CHECK(all[i].size() == (i + 1 < all.size() ? 16 : 130 - 8 * 16));
    auto lengths = all[i].token_lengths;
    CHECK(lengths.min().item<std::int64_t>() >= previous);
    previous = lengths.max().item<std::int64_t>();
    total += all[i].size();
  }
  CHECK(total == 130);
}

// --- language sampling -------------------------------------------------------------------------------

TEST_CASE("LanguageSampler: q_l proportional to share^(1/T)", "[data][sampler]") {
  PreparedData d = text_data({{"en", 600}, {"fr", 300}, {"sw", 100}});
  BatchingOptions o;
  o.max_batch = 50;

  auto q1 = LanguageSampler(d, o, 1.0, 1).probabilities();
  REQUIRE(q1.size() == 3);
  CHECK(q1[0].first == "en");
  CHECK(q1[1].first == "fr");
  CHECK(q1[2].first == "sw");
  CHECK(q1[0].second == Approx(0.6));  // T = 1 follows the data
  CHECK(q1[1].second == Approx(0.3));
  CHECK(q1[2].second == Approx(0.1));

  // T = 3 (mSLAM): 0.6^(1/3), 0.3^(1/3), 0.1^(1/3) normalised.
  auto q3 = as_map(LanguageSampler(d, o, 3.0, 1).probabilities());
  const double z = std::cbrt(0.6) + std::cbrt(0.3) + std::cbrt(0.1);
  CHECK(q3["en"] == Approx(std::cbrt(0.6) / z).epsilon(1e-9));
  CHECK(q3["fr"] == Approx(std::cbrt(0.3) / z).epsilon(1e-9));
  CHECK(q3["sw"] == Approx(std::cbrt(0.1) / z).epsilon(1e-9));
  CHECK(q3["en"] == Approx(0.4266).margin(1e-4));
  CHECK(q3["fr"] == Approx(0.3386).margin(1e-4));
  CHECK(q3["sw"] == Approx(0.2348).margin(1e-4));
  CHECK(q3["en"] + q3["fr"] + q3["sw"] == Approx(1.0));

  // A large T is near uniform.
  for (const auto& [lang, q] : LanguageSampler(d, o, 1000.0, 1).probabilities()) {
    INFO(lang);
    CHECK(q == Approx(1.0 / 3).margin(0.002));
  }

  CHECK_THROWS_AS(LanguageSampler(d, o, 0.0, 1), std::invalid_argument);
  CHECK_THROWS_AS(LanguageSampler(d, o, -1.0, 1), std::invalid_argument);
  PreparedData empty;
  empty.name = "nothing";
  empty.kind = BatchKind::Text;
  CHECK_THROWS_AS(LanguageSampler(empty, o, 3.0, 1), DataError);
}

TEST_CASE("LanguageSampler: batches follow q_l, uniform within a language, in length order", "[data][sampler]") {
  PreparedData d = text_data({{"en", 600}, {"fr", 300}, {"sw", 100}});
  BatchingOptions o;
  o.max_batch = 50;
  LanguageSampler sampler(d, o, 3.0, 7);
  CHECK(sampler.kind() == BatchKind::Text);
  auto q = as_map(sampler.probabilities());
  std::map<std::string, double> count;
  std::map<std::size_t, int> per_example;
  double total = 0;
  for (int i = 0; i < 400; ++i) {
    auto idx = sampler.next_indices();
    REQUIRE(idx.size() == 50);  // text: max_batch, no audio budget
    for (std::size_t k = 1; k < idx.size(); ++k) CHECK(d.length(idx[k - 1]) <= d.length(idx[k]));
    for (auto j : idx) {
      count[d.langs[j]] += 1;
      ++per_example[j];
      total += 1;
    }
  }
  for (const auto& lang : {"en", "fr", "sw"}) {
    INFO(lang);
    CHECK(count[lang] / total == Approx(q[lang]).margin(0.01));
  }
  // 20000 draws, sw (q 0.23) over 100 examples: about 47 each, none left out.
  int sw_seen = 0, sw_min = 1 << 30, sw_max = 0;
  for (std::size_t j = 0; j < d.size(); ++j)
    if (d.langs[j] == "sw") {
      sw_seen += per_example.count(j) > 0;
      sw_min = std::min(sw_min, per_example[j]);
      sw_max = std::max(sw_max, per_example[j]);
    }
  CHECK(sw_seen == 100);
  CHECK(sw_min > 20);
  CHECK(sw_max < 85);

  // next() collates the same kind of batch.
  Batch b = sampler.next();
  CHECK(b.kind == BatchKind::Text);
  CHECK(b.size() == 50);
  CHECK_FALSE(b.features.defined());

  // Same seed, same batches.
  LanguageSampler a1(d, o, 3.0, 11), a2(d, o, 3.0, 11);
  CHECK(a1.next_indices() == a2.next_indices());
}

TEST_CASE("LanguageSampler: batches are bucketed by length, so that little of them is padding", "[data][sampler]") {
  // Lengths 1..9 tokens. Fifty random sentences almost always include a 9, so a batch drawn at random is
  // about 1 - 5/9 = 44% padding; cut from a length-sorted pool, batches hold sentences of like length.
  PreparedData d = text_data({{"en", 600}, {"fr", 300}, {"sw", 100}});
  BatchingOptions o;
  o.max_batch = 50;
  LanguageSampler sampler(d, o, 3.0, 13);
  auto padding_share = [&](const std::vector<std::size_t>& idx) {
    std::int64_t longest = 0, tokens = 0;
    for (auto j : idx) {
      longest = std::max(longest, d.length(j));
      tokens += d.length(j);
    }
    return 1.0 - static_cast<double>(tokens) / static_cast<double>(longest * static_cast<std::int64_t>(idx.size()));
  };
  std::mt19937 rng(13);
  std::uniform_int_distribution<std::size_t> any(0, d.size() - 1);
  double bucketed = 0, random = 0;
  const int n = 64;
  for (int i = 0; i < n; ++i) {
    bucketed += padding_share(sampler.next_indices());
    std::vector<std::size_t> idx;
    for (int k = 0; k < 50; ++k) idx.push_back(any(rng));
    random += padding_share(idx);
  }
  CHECK(random / n > 0.35);
  CHECK(bucketed / n < 0.1);
}

TEST_CASE("LanguageSampler on audio: batches stay under the padded-audio budget", "[data][sampler]") {
  PreparedData d;
  d.name = "speech";
  d.kind = BatchKind::Speech;
  std::mt19937 rng(3);
  std::uniform_int_distribution<std::int64_t> frames(50, 400);
  for (int i = 0; i < 60; ++i) {
    d.features.push_back(torch::zeros({frames(rng), 3}));
    d.tokens.emplace_back();
    d.ids.push_back("u" + std::to_string(i));
    d.langs.push_back(i < 40 ? "en" : "es");
    d.texts.emplace_back();
  }
  BatchingOptions o;
  o.batch_seconds = 12;  // 1200 frames at 100 per second
  o.max_batch = 64;
  LanguageSampler sampler(d, o, 2.0, 5);
  for (int i = 0; i < 50; ++i) {
    auto idx = sampler.next_indices();
    REQUIRE_FALSE(idx.empty());
    std::int64_t longest = 0;
    for (auto j : idx) longest = std::max(longest, d.length(j));
    CHECK(longest * static_cast<std::int64_t>(idx.size()) <= 1200);
  }
  Batch b = sampler.next();
  CHECK(b.features.defined());
  CHECK(b.features.size(1) == b.feature_lengths.max().item<std::int64_t>());
}

TEST_CASE("LanguageSampler: a restored state draws what the first sampler would have drawn next",
          "[data][sampler][resume]") {
  PreparedData d = text_data({{"en", 60}, {"fr", 30}, {"sw", 10}});
  BatchingOptions o;
  o.max_batch = 4;
  LanguageSampler first(d, o, 3.0, 5);
  for (int i = 0; i < 7; ++i) first.next_indices();  // part of a pool is still queued
  LanguageSampler resumed(d, o, 3.0, 99);
  resumed.restore(first.state());
  for (int i = 0; i < 100; ++i) {
    INFO("batch " << i);
    CHECK(resumed.next_indices() == first.next_indices());
  }
  CHECK_THROWS_AS(resumed.restore(BucketBatcher(d, o, 1).state()), DataError);
}
