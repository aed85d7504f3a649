// The "asr" evaluator, checked by hand: greedy CTC decoding (repeats merged, blanks dropped, a blank
// between two equal symbols keeping both), per-language CER and WER, the macro average over languages
// against the pooled rate, and the capability it connects to.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "test_support.h"
#include "workbench/error.h"
#include "workbench/evaluator.h"
#include "workbench/registry.h"
#include "workbench/vocabulary.h"

#include <catch2/catch.hpp>

using namespace workbench;
using Catch::Matchers::Contains;

namespace {

const Registry& registry() {
  static const Registry* r = [] {
    auto* reg = new Registry();
    reg->load_directory(Registry::builtin_plugin_dir());
    return reg;
  }();
  return *r;
}

// The characters of "ab a": 0 blank, 1 unknown, then space, a, b by code point.
std::shared_ptr<const Vocabulary> vocabulary() {
  static auto v = std::make_shared<const Vocabulary>(Vocabulary::from_texts({"ab a"}));
  return v;
}

/// Frame posteriors chosen per utterance id: the best symbol of each frame, as one-hot log-probabilities.
class ScriptedPredictor final : public Loss, public FramePredictor {
 public:
  explicit ScriptedPredictor(std::map<std::string, std::string> frames) : frames_(std::move(frames)) {}
  std::vector<BatchKind> accepts() const override { return {BatchKind::Paired}; }
  LossOutput compute(const Batch&, ModelParts&, const StepInfo&) override { throw std::logic_error("not used"); }
  const Vocabulary& vocabulary() const override { return *::vocabulary(); }
  /// Each frame is a character of the script; '_' is blank.
  std::pair<torch::Tensor, torch::Tensor> frame_log_probs(const Batch& batch, ModelParts&) override {
    const auto B = static_cast<std::int64_t>(batch.ids.size());
    std::int64_t T = 1;
    for (const auto& id : batch.ids) T = std::max<std::int64_t>(T, static_cast<std::int64_t>(frames_.at(id).size()));
    const auto V = ::vocabulary()->size();
    auto lp = torch::full({B, T, V}, -10.0);
    auto lengths = torch::zeros({B}, torch::kInt64);
    for (std::int64_t b = 0; b < B; ++b) {
      const auto& script = frames_.at(batch.ids[static_cast<std::size_t>(b)]);
      for (std::int64_t t = 0; t < static_cast<std::int64_t>(script.size()); ++t) {
        const char c = script[static_cast<std::size_t>(t)];
        const auto id = c == '_' ? Vocabulary::kBlank : ::vocabulary()->encode(std::string(1, c)).at(0);
        lp[b][t][id] = 0.0;
      }
      // Frames past the length prefer 'a': the evaluator must not read them.
      for (std::int64_t t = static_cast<std::int64_t>(script.size()); t < T; ++t)
        lp[b][t][::vocabulary()->encode("a").at(0)] = 0.0;
      lengths[b] = static_cast<std::int64_t>(script.size());
    }
    return {lp, lengths};
  }

 private:
  std::map<std::string, std::string> frames_;
};

Batch batch_of(const std::vector<std::tuple<std::string, std::string, std::string>>& rows) {  // id, lang, ref
  Batch b;
  b.kind = BatchKind::Paired;
  for (const auto& [id, lang, ref] : rows) {
    b.ids.push_back(id);
    b.langs.push_back(lang);
    b.texts.push_back(ref);
  }
  return b;
}

std::shared_ptr<Evaluator> make_asr(const std::string& predictor = "ctc") {
  Options o("evaluators.asr");
  for (const auto& spec : registry().get(PluginKind::Evaluator, "asr", "t").descriptor.options.specs())
    o.set(spec.name, spec.default_value, "default");
  o.set("predictor", predictor, "test");
  return registry().create_as<Evaluator>(PluginKind::Evaluator, "asr", o, BuildContext());
}

std::map<std::string, double> as_map(const std::vector<std::pair<std::string, double>>& m) {
  return {m.begin(), m.end()};
}

}  // namespace

TEST_CASE("asr: greedy CTC decoding merges repeats, drops blanks, keeps a repeat split by a blank", "[asr]") {
  ScriptedPredictor predictor({{"1", "aa_ab"},    // a a | blank | a b -> "aab"
                               {"2", "a__a"},     // blanks between equal symbols keep both: "aa"
                               {"3", "aaaa"},     // one symbol held: "a"
                               {"4", "____"},     // all blank: ""
                               {"5", "_a_ _b"}}); // "a b"
  auto asr = make_asr();
  asr->connect(Connections({{"ctc", "scripted", &predictor}}));
  ModelParts model;
  // Each reference equals the expected hypothesis, so every error rate is 0 exactly when decoding is right.
  std::vector<Batch> batches = {batch_of({{"1", "en", "aab"}, {"2", "en", "aa"}, {"3", "en", "a"}}),
                                batch_of({{"5", "en", "a b"}})};
  auto m = as_map(asr->evaluate({batches, model, torch::kCPU}));
  CHECK(m.at("cer") == 0.0);
  CHECK(m.at("wer") == 0.0);
  // The all-blank row against "ab": two deletions of two characters, one of one word.
  auto blank = as_map(asr->evaluate({{batch_of({{"4", "en", "ab"}})}, model, torch::kCPU}));
  CHECK(blank.at("cer") == 1.0);
  CHECK(blank.at("wer") == 1.0);
}

TEST_CASE("asr: cer and wer average the languages - the pooled rates count every character alike", "[asr]") {
  // en: "ab" decoded right (0 of 2 characters wrong). es: "aaaa" decoded as "a" (3 deletions of 4).
  ScriptedPredictor predictor({{"en1", "a_b"}, {"es1", "aaaa"}});
  auto asr = make_asr();
  asr->connect(Connections({{"ctc", "scripted", &predictor}}));
  ModelParts model;
  std::vector<Batch> batches = {batch_of({{"en1", "en", "ab"}, {"es1", "es", "aaaa"}})};
  auto m = as_map(asr->evaluate({batches, model, torch::kCPU}));
  CHECK(m.at("cer/en") == 0.0);
  CHECK(m.at("cer/es") == Approx(0.75));
  CHECK(m.at("cer") == Approx((0.0 + 0.75) / 2));  // macro: each language weighs the same
  CHECK(m.at("cer_pooled") == Approx(3.0 / 6.0));   // pooled: 3 errors over 6 reference characters
  CHECK(m.at("wer/en") == 0.0);
  CHECK(m.at("wer/es") == 1.0);  // one word, wrong
  CHECK(m.at("wer") == Approx(0.5));
  CHECK(m.at("wer_pooled") == Approx(0.5));
}

TEST_CASE("asr: cer and wer are scored on normalised text, the raw strings under cer_raw and wer_raw", "[asr]") {
  ScriptedPredictor predictor(std::map<std::string, std::string>{{"1", "a_ _b"}});  // decodes to "a b"
  auto asr = make_asr();
  asr->connect(Connections({{"ctc", "scripted", &predictor}}));
  ModelParts model;
  // Upper case and punctuation in the reference: no error once normalised, three raw (A, ',' and '.').
  auto m = as_map(asr->evaluate({{batch_of({{"1", "en", "A, b."}})}, model, torch::kCPU}));
  CHECK(m.at("cer") == 0.0);
  CHECK(m.at("wer") == 0.0);
  CHECK(m.at("cer_raw") == Approx(3.0 / 5.0));  // "A, b." is 5 characters
  CHECK(m.at("wer_raw") == Approx(1.0));        // both words differ
}

TEST_CASE("asr: its predictor is connected by name, and a missing one says what to add", "[asr][errors]") {
  auto asr = make_asr("ctc");
  const std::string msg =
      workbench::testing::error_message<ConfigError>([&] { asr->connect(Connections()); });
  CHECK_THAT(msg, Contains("frame posteriors") && Contains("'ctc'") && Contains("add a ctc objective"));
  ModelParts model;
  std::vector<Batch> none;
  CHECK_THROWS_AS(asr->evaluate({none, model, torch::kCPU}), std::logic_error);  // never before connect
}
