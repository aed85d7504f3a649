#pragma once
// [trainer]: the optimiser, the learning-rate schedule, freezing, checkpoints, threads and logging, as a
// typed options struct (LibTorch style: chained setters) with its schema beside it.
#include <cstdint>
#include <string>
#include <vector>

#include <torch/arg.h>

#include "workbench/options.h"

namespace workbench {

struct TrainerOptions {
  /// The [trainer] table's keys, types, defaults and documentation.
  static const OptionSchema& schema();
  /// The one place that reads [trainer] by key. `table` must hold every key of schema() (as a resolved
  /// experiment's does); it is kept as `source`, so that later checks can name where a value was set.
  static TrainerOptions from(const Options& table);
  /// Every option at its default, `source` filled in the same way (tests and tools).
  static TrainerOptions defaults();

  TORCH_ARG(std::int64_t, steps) = 1000;
  TORCH_ARG(double, max_minutes) = 0;
  /// Peak learning rate (AdamW).
  TORCH_ARG(double, lr) = 1e-3;
  /// "inverse_sqrt" (warm-up then peak * sqrt(warmup / step): Transformer, w2v-BERT, mSLAM) or
  /// "tri_stage" (fairseq2's wav2vec 2.0 / w2v-BERT fine-tuning: warm-up, hold, exponential decay).
  TORCH_ARG(std::string, schedule) = "inverse_sqrt";
  TORCH_ARG(std::int64_t, warmup_steps) = 500;
  /// tri_stage: the shares of trainer.steps spent warming up, holding and decaying (sum 1).
  TORCH_ARG(double, tri_stage_warmup) = 0.1;
  TORCH_ARG(double, tri_stage_hold) = 0.4;
  TORCH_ARG(double, tri_stage_decay) = 0.5;
  /// tri_stage: the learning rate starts at start_lr_scale * lr and ends at final_lr_scale * lr.
  TORCH_ARG(double, start_lr_scale) = 0.01;
  TORCH_ARG(double, final_lr_scale) = 0.05;
  TORCH_ARG(double, adam_beta1) = 0.9;
  TORCH_ARG(double, adam_beta2) = 0.98;
  TORCH_ARG(double, adam_eps) = 1e-9;
  TORCH_ARG(double, weight_decay) = 0;
  TORCH_ARG(double, clip_norm) = 5;
  /// A step whose loss or gradient is not finite: "skip" (no update, the run goes on) or "abort" (the
  /// run fails, naming the objective and the step). Either way it is recorded as train/nonfinite/<what>.
  TORCH_ARG(std::string, nonfinite) = "skip";
  /// nonfinite = skip: this many non-finite steps in a row fail the run (0 = no limit).
  TORCH_ARG(std::int64_t, max_nonfinite_skips) = 20;
  /// Components kept out of the optimizer: "speech_encoder", "text_embedding", "shared_encoder",
  /// "modality_embedding", or "objectives.<name>".
  TORCH_ARG(std::vector<std::string>, freeze) = {};
  /// > 0: the frozen components join the optimizer after this many steps (fairseq2's
  /// freeze_encoder_for_n_steps); 0: they stay frozen for the whole run.
  TORCH_ARG(std::int64_t, freeze_for_steps) = 0;
  /// Learning-rate multiplier per component (same names as freeze); the rest train at 1.
  TORCH_ARG(FloatTable, lr_multipliers) = {};
  TORCH_ARG(std::int64_t, threads) = 0;
  TORCH_ARG(std::int64_t, blas_threads) = 1;
  /// Keep freed memory in the process instead of returning it to the system (keep_freed_memory in
  /// runtime.h), so that each step's large activations reuse resident pages.
  TORCH_ARG(bool, keep_freed_memory) = true;
  TORCH_ARG(std::string, device) = "auto";
  TORCH_ARG(std::int64_t, log_every) = 20;
  TORCH_ARG(bool, eval_at_start) = true;
  TORCH_ARG(std::string, checkpoint_dir) = "checkpoints";
  /// Periodic checkpoints every N steps and/or every M minutes of training (0 = off).
  TORCH_ARG(std::int64_t, checkpoint_every) = 0;
  TORCH_ARG(double, checkpoint_every_minutes) = 0;
  /// How many periodic checkpoints are kept (the oldest are deleted).
  TORCH_ARG(std::int64_t, keep_checkpoints) = 2;
  /// An evaluation metric ("dev/cer"): its best value's checkpoint is kept as best.pt. "" = off.
  TORCH_ARG(std::string, keep_best) = "";
  /// "min" or "max": which way keep_best is better.
  TORCH_ARG(std::string, keep_best_mode) = "min";
  TORCH_ARG(std::string, progress) = "auto";
  /// Make each training batch one step ahead on another thread (PrefetchBatcher); the batches are the same.
  TORCH_ARG(bool, prefetch) = true;

 public:
  /// Where each value came from, for error messages (Options::fail). Empty for structs built in code.
  Options source{"trainer"};
};

}  // namespace workbench
