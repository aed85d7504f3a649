// The "retrieval" evaluator: zero-shot cross-modal retrieval through the shared encoder, with no
// fine-tuning: does pre-training put an utterance and its transcript near each other (SLAM section 3.3's
// alignment losses, TLM and STM, exist to do that)?
//   speech vector: the shared encoder's output on the speech alone, mean-pooled over valid frames;
//   text vector:   the shared encoder's output on the text alone, mean-pooled over valid tokens;
// both L2-normalised, compared by cosine similarity.
// Within each language, every utterance ranks all that language's texts (speech -> text) and every
// text all its utterances (text -> speech): recall@1, @5, @10 with the chance level k / N beside them.
// Across languages, speech in A is matched against the texts in B of the same prompt ids (the Asterisk
// prompts are parallel): the share whose nearest text is not the same prompt is xSIM's error rate
// (LASER's xsim.py in its `absolute` mode: plain top-1 cosine, no margin), chance 1 - 1/N.
#include <map>

#include <fmt/format.h>

#include "workbench/error.h"
#include "workbench/evaluator.h"
#include "workbench/plugin.h"
#include "workbench/text_embedding.h"

#include "retrieval_metrics.h"

namespace workbench::retrieval {
namespace {

// Rows scaled to unit L2 norm (a zero row stays zero).
torch::Tensor unit(const torch::Tensor& x) { return x / x.norm(2, 1, true).clamp_min(1e-12); }

struct Side {
  std::vector<torch::Tensor> speech, text;  // (D) each, normalised
  std::vector<std::string> keys;            // prompt id without the language
};

class RetrievalEvaluator final : public Evaluator {
 public:
  explicit RetrievalEvaluator(const Options& o) : ks_{1, 5, 10}, cross_lingual_(o.get_bool("cross_lingual")) {}

  std::vector<std::pair<std::string, double>> evaluate(const EvalContext& ctx) override {
    auto& text = ctx.model.require_text_embedding("retrieval");
    ctx.model.require_shared_encoder("retrieval");
    std::map<std::string, Side> by_lang;
    for (const auto& cpu_batch : ctx.batches) {
      if (cpu_batch.kind != BatchKind::Paired)
        throw ConfigError("retrieval evaluator: needs paired data (speech with its transcript)");
      Batch batch = cpu_batch.to(ctx.device);
      auto speech = ctx.model.speech_context(batch.features, batch.feature_lengths);
      auto sv = unit(masked_mean(speech.x, speech.lengths));
      auto [tokens, lengths] = text.tokenize(batch);
      auto context = ctx.model.shared_from_text(text.embed(tokens, lengths));
      auto tv = unit(masked_mean(context.x, context.lengths));
      sv = sv.to(torch::kCPU);
      tv = tv.to(torch::kCPU);
      for (std::int64_t b = 0; b < cpu_batch.size(); ++b) {
        const auto& lang = cpu_batch.langs[static_cast<std::size_t>(b)];
        std::string key = cpu_batch.ids[static_cast<std::size_t>(b)];
        if (key.rfind(lang + "/", 0) == 0) key = key.substr(lang.size() + 1);
        Side& side = by_lang[lang];
        side.speech.push_back(sv[b]);
        side.text.push_back(tv[b]);
        side.keys.push_back(key);
      }
    }
    std::vector<std::pair<std::string, double>> averages, detail;
    std::map<std::string, double> sum;
    for (const auto& [lang, side] : by_lang) {
      auto S = torch::stack(side.speech), T = torch::stack(side.text);
      auto sim = S.matmul(T.t());  // (N, N): speech rows, text columns
      auto s2t = correct_ranks(sim), t2s = correct_ranks(sim.t());
      const auto n = S.size(0);
      for (auto k : ks_) {
        const std::string at = fmt::format("@{}", k);
        const double a = recall_at(s2t, k), b = recall_at(t2s, k), c = chance_recall(n, k);
        detail.emplace_back("speech_to_text_r" + at + "/" + lang, a);
        detail.emplace_back("text_to_speech_r" + at + "/" + lang, b);
        sum["speech_to_text_r" + at] += a;
        sum["text_to_speech_r" + at] += b;
        sum["chance_r" + at] += c;
      }
      sum["utterances"] += static_cast<double>(n);
    }
    const double langs = by_lang.empty() ? 1.0 : static_cast<double>(by_lang.size());
    for (auto k : ks_)
      for (const char* what : {"speech_to_text_r", "text_to_speech_r", "chance_r"}) {
        const std::string key = fmt::format("{}@{}", what, k);
        averages.emplace_back(key, sum[key] / langs);
      }
    averages.emplace_back("utterances", sum["utterances"]);

    if (cross_lingual_ && by_lang.size() > 1) {
      double err_sum = 0, chance_sum = 0, pairs = 0;
      for (const auto& [a, sa] : by_lang)
        for (const auto& [b, sb] : by_lang) {
          if (a == b) continue;
          // The prompt ids both languages have, in a's order.
          std::map<std::string, std::size_t> in_b;
          for (std::size_t j = 0; j < sb.keys.size(); ++j) in_b.emplace(sb.keys[j], j);
          std::vector<torch::Tensor> qs, ts;
          for (std::size_t i = 0; i < sa.keys.size(); ++i)
            if (auto it = in_b.find(sa.keys[i]); it != in_b.end()) {
              qs.push_back(sa.speech[i]);
              ts.push_back(sb.text[it->second]);
            }
          if (qs.size() < 2) continue;
          auto ranks = correct_ranks(torch::stack(qs).matmul(torch::stack(ts).t()));
          const double err = 1.0 - recall_at(ranks, 1);
          const double chance = 1.0 - chance_recall(static_cast<std::int64_t>(qs.size()), 1);
          detail.emplace_back(fmt::format("xsim_error/{}-{}", a, b), err);
          err_sum += err;
          chance_sum += chance;
          pairs += 1;
        }
      if (pairs > 0) {
        averages.emplace_back("xsim_error", err_sum / pairs);
        averages.emplace_back("xsim_chance", chance_sum / pairs);
      }
    }
    std::vector<std::pair<std::string, double>> out;
    for (auto* part : {&averages, &detail})
      for (auto& [k, v] : *part) out.emplace_back("retrieval/" + k, v);
    return out;
  }

 private:
  std::vector<std::int64_t> ks_;
  bool cross_lingual_;
};

PluginDescriptor describe() {
  return describe_plugin<RetrievalEvaluator>(PluginKind::Evaluator, "retrieval", "1.0.0",
      "zero-shot speech<->text retrieval through the shared encoder: recall@1/5/10 per language and averaged (with chance), and cross-lingual xSIM-style error",
      OptionSchema().add_bool("cross_lingual", true,
                              "also match speech in one language against the texts of the same prompt ids in another"));
}

}  // namespace
}  // namespace workbench::retrieval

WORKBENCH_PLUGIN(workbench::retrieval::describe)
