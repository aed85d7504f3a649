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

}  // namespace workbench
