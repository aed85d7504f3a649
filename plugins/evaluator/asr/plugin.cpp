// The "asr" evaluator: greedy CTC decoding (best path: argmax per frame, merge repeats, drop blanks), or
// an RNN-T head's own decoding (a Transcriber), then character and word error rates (Levenshtein), per language and over all languages.
#include <map>
#include <stdexcept>

#include <fmt/format.h>

#include "workbench/edit_distance.h"
#include "workbench/error.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"
#include "workbench/text.h"
#include "workbench/vocabulary.h"

namespace workbench::asr {
namespace {

/// Best-path decoding of one utterance: ids (T) -> ids without repeats and blanks.
std::vector<std::int64_t> collapse(const std::int64_t* ids, std::int64_t length) {
  std::vector<std::int64_t> out;
  std::int64_t prev = -1;
  for (std::int64_t t = 0; t < length; ++t) {
    if (ids[t] != prev && ids[t] != Vocabulary::kBlank) out.push_back(ids[t]);
    prev = ids[t];
  }
  return out;
}

class AsrEvaluator final : public Evaluator {
 public:
  explicit AsrEvaluator(const Options& o) : predictor_name_(o.get_string("predictor")), options_(o) {}

  void connect(const Connections& connections) override {
    // A CTC head is decoded here (best path); a sequence head (RNN-T) decodes itself.
    for (const auto& e : connections.objectives()) {
      if (e.name != predictor_name_) continue;
      if ((transcriber_ = dynamic_cast<Transcriber*>(e.component))) return;
    }
    predictor_ = &connections.require<FramePredictor>(predictor_name_, "[" + options_.section() + "] (asr)",
                                                       "frame posteriors or transcripts",
                                                       "add a ctc objective (or an rnnt one), or set predictor = \"<its name>\"");
  }

  std::vector<std::pair<std::string, double>> evaluate(const EvalContext& ctx) override {
    if (!predictor_ && !transcriber_) throw std::logic_error("asr evaluator: evaluate() before connect()");
    std::map<std::string, ErrorCount> cer, wer, cer_raw, wer_raw;
    ErrorCount cer_all, wer_all;
    for (const auto& cpu_batch : ctx.batches) {
      Batch batch = cpu_batch.to(ctx.device);
      std::vector<std::string> hyps;
      if (transcriber_) {
        hyps = transcriber_->transcribe(batch, ctx.model);
      } else {
        auto [log_probs, lengths] = predictor_->frame_log_probs(batch, ctx.model);
        auto best = log_probs.argmax(-1).to(torch::kCPU).contiguous();
        auto lens = lengths.to(torch::kCPU);
        for (std::int64_t b = 0; b < best.size(0); ++b)
          hyps.push_back(predictor_->vocabulary().decode(
              collapse(best[b].data_ptr<std::int64_t>(), lens[b].item<std::int64_t>())));
      }
      for (std::int64_t b = 0; b < cpu_batch.size(); ++b) {
        const std::string& hyp = hyps.at(static_cast<std::size_t>(b));
        const auto& ref = cpu_batch.texts[static_cast<std::size_t>(b)];
        const auto& lang = cpu_batch.langs[static_cast<std::size_t>(b)];
        // Reported as the field reports: both sides normalised (case, punctuation, spaces); the raw
        // strings under their own keys.
        const std::string ref_n = normalize_for_scoring(ref), hyp_n = normalize_for_scoring(hyp);
        auto c = char_errors(ref_n, hyp_n);
        auto w = word_errors(ref_n, hyp_n);
        cer[lang] += c;
        wer[lang] += w;
        cer_all += c;
        wer_all += w;
        cer_raw[lang] += char_errors(ref, hyp);
        wer_raw[lang] += word_errors(ref, hyp);
      }
    }
    // Averages first (the first is a run's headline), then each language.
    std::vector<std::pair<std::string, double>> out, per_language;
    // "cer"/"wer" average the per-language rates, so that every language weighs the same (mSLAM's
    // averages over languages); "cer_pooled" pools all characters.
    double cer_mean = 0, wer_mean = 0;
    for (const auto& [lang, c] : cer) {
      per_language.emplace_back("cer/" + lang, c.rate());
      per_language.emplace_back("wer/" + lang, wer[lang].rate());
      cer_mean += c.rate();
      wer_mean += wer[lang].rate();
    }
    const double n = cer.empty() ? 1.0 : static_cast<double>(cer.size());
    out.emplace_back("cer", cer_mean / n);
    out.emplace_back("wer", wer_mean / n);
    out.emplace_back("cer_pooled", cer_all.rate());
    out.emplace_back("wer_pooled", wer_all.rate());
    double cer_raw_mean = 0, wer_raw_mean = 0;
    for (const auto& [lang, c] : cer_raw) {
      cer_raw_mean += c.rate();
      wer_raw_mean += wer_raw[lang].rate();
    }
    out.emplace_back("cer_raw", cer_raw_mean / n);
    out.emplace_back("wer_raw", wer_raw_mean / n);
    out.insert(out.end(), per_language.begin(), per_language.end());
    return out;
  }

 private:
  std::string predictor_name_;
  Options options_;
  FramePredictor* predictor_ = nullptr;
  Transcriber* transcriber_ = nullptr;
};

PluginDescriptor describe() {
  return describe_plugin<AsrEvaluator>(PluginKind::Evaluator, "asr", "1.2.0",  // 1.2: RNN-T transcripts
      "greedy CTC decoding, or the transcripts of a sequence head (rnnt); CER and WER (normalised: case, punctuation, spaces; raw under cer_raw, wer_raw) per language and averaged over languages",
      OptionSchema()
          .add_string("predictor", "ctc", "the objective whose CTC posteriors are decoded, or whose transcripts (rnnt) are scored"));
}

}  // namespace
}  // namespace workbench::asr

WORKBENCH_PLUGIN(workbench::asr::describe)
