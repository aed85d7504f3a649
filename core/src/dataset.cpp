#include "workbench/dataset.h"

#include <mutex>

#include <ATen/Parallel.h>

#include "workbench/audio.h"
#include "workbench/error.h"

namespace workbench {

void load_utterance_audio(std::vector<Utterance>& utterances, std::int64_t sample_rate, const std::string& context) {
  // Decoding and resampling dominate a dataset's start-up; the files are independent.
  std::mutex mutex;
  std::string first_error;
  at::parallel_for(0, static_cast<std::int64_t>(utterances.size()), 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      auto& u = utterances[static_cast<std::size_t>(i)];
      try {
        u.samples = load_audio(u.path, sample_rate).samples;
      } catch (const std::exception& e) {
        std::lock_guard<std::mutex> lock(mutex);
        if (first_error.empty()) first_error = context.empty() ? e.what() : std::string(e.what()) + " " + context;
      }
    }
  });
  if (!first_error.empty()) throw DataError(first_error);
}

void load_utterance_audio(std::vector<Utterance>& utterances, const BuildContext& ctx, const std::string& context) {
  if (ctx.on_bad_audio != "skip") return load_utterance_audio(utterances, ctx.sample_rate, context);
  std::vector<std::string> why(utterances.size());
  at::parallel_for(0, static_cast<std::int64_t>(utterances.size()), 1, [&](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      auto& u = utterances[static_cast<std::size_t>(i)];
      try {
        u.samples = load_audio(u.path, ctx.sample_rate).samples;
      } catch (const std::exception& e) {
        why[static_cast<std::size_t>(i)] = e.what();  // each slot is written by one thread only
      }
    }
  });
  std::vector<Utterance> kept;
  kept.reserve(utterances.size());
  for (std::size_t i = 0; i < utterances.size(); ++i) {
    if (why[i].empty()) {
      kept.push_back(std::move(utterances[i]));
    } else if (ctx.skipped_audio) {
      ctx.skipped_audio->emplace_back(utterances[i].path, why[i]);
    }
  }
  utterances = std::move(kept);
}

}  // namespace workbench
