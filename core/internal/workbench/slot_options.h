#pragma once
// The core's keys of [objectives.<name>] and [evaluators.<name>] tables, typed, with their schemas.
#include <cstdint>
#include <string>

#include <torch/arg.h>

#include "workbench/options.h"

namespace workbench {

struct ObjectiveOptions {
  static const OptionSchema& schema();
  static ObjectiveOptions from(const Options& table);
  TORCH_ARG(double, weight) = 1.0;          ///< of this loss in the sum
  TORCH_ARG(std::string, data) = "train";  ///< the [data.<name>] it trains on
};

struct EvaluatorOptions {
  static const OptionSchema& schema();
  static EvaluatorOptions from(const Options& table);
  TORCH_ARG(std::string, data) = "dev";  ///< the [data.<name>] it evaluates on
  TORCH_ARG(std::int64_t, every) = 0;    ///< steps; 0 = at the start and the end only
};

}  // namespace workbench
