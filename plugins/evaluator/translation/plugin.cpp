// The "translation" evaluator: a Translator's outputs scored against each utterance's target with corpus
// BLEU (sacreBLEU's 13a, unsmoothed by default) and chrF, per direction (<src>-<target>) and averaged over
// directions (mSLAM's CoVoST 2 X -> En averages). From speech ("st/...") and, when the model can read
// the source transcript (text embedding + shared encoder), from text ("mt_zeroshot/...": zero-shot when
// the head was fine-tuned on speech only). A few examples of each direction, spread over its utterances,
// go to the run store.
#include <algorithm>
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"

#include "bleu.h"
#include "chrf.h"

namespace workbench::translation {
namespace {

BleuOptions bleu_options(const Options& o) {
  BleuOptions b;
  b.tokenizer = o.get_string("tokenize") == "none" ? BleuTokenizer::None : BleuTokenizer::Mteval13a;
  const auto& s = o.get_string("smoothing");
  b.smoothing = s == "exp" ? BleuSmoothing::Exp : s == "floor" ? BleuSmoothing::Floor : s == "add-k" ? BleuSmoothing::AddK
                                                                                                   : BleuSmoothing::None;
  return b;
}

class TranslationEvaluator final : public Evaluator {
 public:
  explicit TranslationEvaluator(const Options& o)
      : name_(o.get_string("translator")),
        text_(o.get_string("text")),
        text_task_(o.get_string("text_task")),
        target_(o.get_string("target_language")),
        examples_(o.get_int("examples")),
        bleu_(bleu_options(o)),
        section_(o.section()) {
    if (text_task_.empty() || text_task_ == "st") o.fail("text_task", "needs a name other than \"st\"");
  }

  void connect(const Connections& connections) override {
    translator_ = &connections.require<Translator>(name_, "[" + section_ + "] (translation)", "translations",
                                                   "add a transformer_decoder objective, or set translator = \"<its name>\"");
  }

  std::vector<std::pair<std::string, double>> evaluate(const EvalContext& ctx) override {
    if (!translator_) throw std::logic_error("translation evaluator: evaluate() before connect()");
    std::vector<std::pair<std::string, double>> out;
    score(ctx, Translator::Source::Speech, "st", out);
    const bool text = text_ == "on" || (text_ == "auto" && translator_->supports(Translator::Source::Text, ctx.model));
    if (text) {
      if (!translator_->supports(Translator::Source::Text, ctx.model))
        throw ConfigError(fmt::format("[{}]: text = \"on\" but objective '{}' cannot read text with this model (it "
                                      "needs a text embedding and a shared encoder)",
                                      section_, name_));
      score(ctx, Translator::Source::Text, text_task_, out);
    }
    return out;
  }

 private:
  struct Direction {
    std::vector<std::string> ids, hyps, refs;
  };

  void score(const EvalContext& ctx, Translator::Source source, const std::string& task,
             std::vector<std::pair<std::string, double>>& out) {
    std::map<std::string, Direction> by_direction;
    for (const auto& cpu_batch : ctx.batches) {
      Batch batch = cpu_batch.to(ctx.device);
      const auto hyps = translator_->translate(batch, ctx.model, source);
      for (std::size_t b = 0; b < hyps.size(); ++b) {
        if (cpu_batch.targets.at(b).empty())
          throw DataError(fmt::format("[{}]: utterance '{}' has no translation target to score against (does its "
                                      "dataset set translate_to?)",
                                      section_, cpu_batch.ids[b]));
        const std::string direction = cpu_batch.langs[b] + "-" + target_;
        auto& d = by_direction[direction];
        d.ids.push_back(cpu_batch.ids[b]);
        d.hyps.push_back(hyps[b]);
        d.refs.push_back(cpu_batch.targets[b]);
      }
    }
    // Averages first (the first is a run's headline), then each direction.
    std::vector<std::pair<std::string, double>> each;
    double bleu_sum = 0, chrf_sum = 0;
    BleuStats pooled;
    for (const auto& [direction, d] : by_direction) {
      // Evaluation batches come sorted by length: examples spread evenly over them show short and long
      // utterances alike, not only the shortest.
      const auto count = static_cast<std::int64_t>(d.hyps.size()), keep = std::min<std::int64_t>(examples_, count);
      for (std::int64_t k = 0; ctx.examples && k < keep; ++k) {
        const auto i = static_cast<std::size_t>(k * count / keep);
        ctx.examples->push_back({task + "/" + direction, d.ids[i], d.refs[i], d.hyps[i]});
      }
      const auto bleu = corpus_bleu(d.hyps, {d.refs}, bleu_);
      pooled += bleu.stats;
      const double chrf = corpus_chrf(d.hyps, {d.refs});
      each.emplace_back(task + "/bleu/" + direction, bleu.score);
      each.emplace_back(task + "/chrf/" + direction, chrf);
      each.emplace_back(task + "/length_ratio/" + direction,
                        bleu.stats.ref_len > 0 ? static_cast<double>(bleu.stats.sys_len) / static_cast<double>(bleu.stats.ref_len) : 0.0);
      bleu_sum += bleu.score;
      chrf_sum += chrf;
    }
    const double n = by_direction.empty() ? 1.0 : static_cast<double>(by_direction.size());
    out.emplace_back(task + "/bleu", bleu_sum / n);
    out.emplace_back(task + "/chrf", chrf_sum / n);
    // Every direction's sentences as one corpus, with the n-gram precisions and brevity penalty that
    // sacreBLEU prints beside the score ("BLEU = 0.00 20.1/3.2/0.5/0.0 (BP = ...)"): what a BLEU of 0
    // is made of.
    const auto all = compute_bleu(pooled, bleu_);
    out.emplace_back(task + "/bleu_pooled", all.score);
    for (std::size_t k = 0; k < 4; ++k) out.emplace_back(task + "/bleu_pooled_p" + std::to_string(k + 1), all.precisions[k]);
    out.emplace_back(task + "/bleu_pooled_bp", all.brevity_penalty);
    out.insert(out.end(), each.begin(), each.end());
  }

  std::string name_, text_, text_task_, target_;
  std::int64_t examples_;
  BleuOptions bleu_;
  std::string section_;
  Translator* translator_ = nullptr;
};

PluginDescriptor describe() {
  return describe_plugin<TranslationEvaluator>(PluginKind::Evaluator, "translation", "1.0.0",
      "corpus BLEU (sacreBLEU 13a) and chrF of a translation head's outputs per direction and averaged, from speech "
      "(st/...) and zero-shot from the source text (mt_zeroshot/...)",
      OptionSchema()
          .add_string("translator", "st", "the objective whose translations are scored (a transformer_decoder)")
          .add_choice("text", "auto", {"auto", "on", "off"},
                      "also translate the source transcripts through the text embedding and shared encoder: auto = "
                      "when the model has both")
          .add_string("text_task", "mt_zeroshot",
                      "metric prefix of the text translations (\"mt\" when the head was also trained on text)")
          .add_string("target_language", "en", "the target language, for the direction names (<src>-<target>)")
          .add_int("examples", 5, "decoded examples per direction (spread evenly over its utterances) kept in the run store's examples table", 0)
          .add_choice("tokenize", "13a", {"13a", "none"}, "BLEU tokeniser (sacreBLEU's)")
          .add_choice("smoothing", "none", {"none", "exp", "floor", "add-k"},
                      "BLEU smoothing (sacreBLEU's corpus_bleu default is exp; none reports plain corpus BLEU)"));
}

}  // namespace
}  // namespace workbench::translation

WORKBENCH_PLUGIN(workbench::translation::describe)
