#include "workbench/trainer_options.h"

#include <cmath>

#include "workbench/error.h"

namespace workbench {

const OptionSchema& TrainerOptions::schema() {
  static const OptionSchema schema =
      OptionSchema()
          .add_int("steps", 1000, "optimizer steps", 0)
          .add_float("max_minutes", 0.0, "stop training after this much wall time (0 = no limit); the run still "
                                          "evaluates and checkpoints", 0)
          .add_float("lr", 1e-3, "peak learning rate (AdamW)", 0)
          .add_choice("schedule", "inverse_sqrt", {"inverse_sqrt", "tri_stage"},
                      "inverse_sqrt: linear warm-up over warmup_steps, then lr * sqrt(warmup / step) (Transformer, "
                      "w2v-BERT, mSLAM); tri_stage: warm-up, hold, exponential decay over trainer.steps (fairseq2's "
                      "fine-tuning recipe)")
          .add_int("warmup_steps", 500, "inverse_sqrt: linear warm-up steps", 0)
          .add_float("tri_stage_warmup", 0.1, "tri_stage: share of the steps spent warming up", 0, 1)
          .add_float("tri_stage_hold", 0.4, "tri_stage: share of the steps held at lr", 0, 1)
          .add_float("tri_stage_decay", 0.5, "tri_stage: share of the steps decaying to final_lr_scale * lr", 0, 1)
          .add_float("start_lr_scale", 0.01, "tri_stage: the warm-up starts at this times lr", 0, 1)
          .add_float("final_lr_scale", 0.05, "tri_stage: the decay ends at this times lr", 1e-12, 1)
          .add_float("adam_beta1", 0.9, "AdamW beta1", 0, 1)
          .add_float("adam_beta2", 0.98, "AdamW beta2", 0, 1)
          .add_float("adam_eps", 1e-9, "AdamW epsilon", 0)
          .add_float("weight_decay", 0.0, "decoupled weight decay (AdamW); 0 = plain Adam", 0)
          .add_float("clip_norm", 5.0, "gradient clipping: max global L2 norm (0 = off)", 0)
          .add_choice("nonfinite", "skip", {"skip", "abort"},
                      "a step with a non-finite loss or gradient: skip its update, or fail the run naming the "
                      "objective; either way recorded as train/nonfinite/<objective>")
          .add_int("max_nonfinite_skips", 20, "nonfinite = skip: this many such steps in a row fail the run (0 = no "
                                              "limit)", 0)
          .add_strings("freeze", {},
                       "components kept out of the optimizer: speech_encoder, text_embedding, shared_encoder, "
                       "modality_embedding, objectives.<name>")
          .add_int("freeze_for_steps", 0,
                   "> 0: the frozen components start training after this many steps (fairseq2's "
                   "freeze_encoder_for_n_steps); 0: frozen for the whole run", 0)
          .add_float_table("lr_multipliers", {},
                           "learning-rate multiplier per component, e.g. { speech_encoder = 0.1, \"objectives.ctc\" = "
                           "10 }; the others train at 1", 0)
          .add_int("threads", 0, "intra-op threads (0 = number of cores)", 0)
          .add_int("blas_threads", 1, "OpenBLAS threads (0 = leave as is); one avoids fighting torch's own pool", 0)
          .add_bool("keep_freed_memory", true,
                    "keep freed memory in the process (glibc's mmap and trim thresholds raised to 1 GiB), so that a "
                    "step's large activations reuse resident pages instead of faulting in new ones: about 20% of a "
                    "CPU step at torchaudio's Conformer shape; the resident size then stays near its peak")
          .add_choice("device", "auto", {"auto", "cpu", "cuda"}, "auto = CUDA when available")
          .add_int("log_every", 20, "record training metrics every N steps", 1)
          .add_bool("eval_at_start", true, "evaluate before the first step (step 0)")
          .add_string("checkpoint_dir", "checkpoints",
                      "where checkpoints go, under run-<id>/ (relative to the working dir)")
          .add_int("checkpoint_every", 0, "write a periodic checkpoint every N steps (0 = off)", 0)
          .add_float("checkpoint_every_minutes", 0.0, "write a periodic checkpoint every M minutes of training (0 = off)",
                     0)
          .add_int("keep_checkpoints", 2, "periodic checkpoints kept; older ones are deleted", 1)
          .add_string("keep_best", "",
                      "an evaluation metric (\"dev/cer\"): the checkpoint at its best value is kept as best.pt")
          .add_choice("keep_best_mode", "min", {"min", "max"}, "whether a lower or a higher keep_best is better")
          .add_choice("progress", "auto", {"auto", "tty", "lines", "none"},
                      "auto = one updating line on a terminal, plain lines otherwise")
          .add_bool("prefetch", true,
                    "make each training batch one step ahead, on another thread (the same batches, in the same order)");
  return schema;
}

TrainerOptions TrainerOptions::from(const Options& t) {
  TrainerOptions o;
  o.steps(t.get_int("steps"))
      .max_minutes(t.get_float("max_minutes"))
      .lr(t.get_float("lr"))
      .schedule(t.get_string("schedule"))
      .warmup_steps(t.get_int("warmup_steps"))
      .tri_stage_warmup(t.get_float("tri_stage_warmup"))
      .tri_stage_hold(t.get_float("tri_stage_hold"))
      .tri_stage_decay(t.get_float("tri_stage_decay"))
      .start_lr_scale(t.get_float("start_lr_scale"))
      .final_lr_scale(t.get_float("final_lr_scale"))
      .adam_beta1(t.get_float("adam_beta1"))
      .adam_beta2(t.get_float("adam_beta2"))
      .adam_eps(t.get_float("adam_eps"))
      .weight_decay(t.get_float("weight_decay"))
      .clip_norm(t.get_float("clip_norm"))
      .nonfinite(t.get_string("nonfinite"))
      .max_nonfinite_skips(t.get_int("max_nonfinite_skips"))
      .freeze(t.get_strings("freeze"))
      .freeze_for_steps(t.get_int("freeze_for_steps"))
      .lr_multipliers(t.get_float_table("lr_multipliers"))
      .threads(t.get_int("threads"))
      .blas_threads(t.get_int("blas_threads"))
      .keep_freed_memory(t.get_bool("keep_freed_memory"))
      .device(t.get_string("device"))
      .log_every(t.get_int("log_every"))
      .eval_at_start(t.get_bool("eval_at_start"))
      .checkpoint_dir(t.get_string("checkpoint_dir"))
      .checkpoint_every(t.get_int("checkpoint_every"))
      .checkpoint_every_minutes(t.get_float("checkpoint_every_minutes"))
      .keep_checkpoints(t.get_int("keep_checkpoints"))
      .keep_best(t.get_string("keep_best"))
      .keep_best_mode(t.get_string("keep_best_mode"))
      .progress(t.get_string("progress"))
      .prefetch(t.get_bool("prefetch"));
  if (o.schedule() == "tri_stage") {
    const double sum = o.tri_stage_warmup() + o.tri_stage_hold() + o.tri_stage_decay();
    if (std::abs(sum - 1.0) > 1e-6)
      t.fail("tri_stage_decay", "tri_stage_warmup + tri_stage_hold + tri_stage_decay must add up to 1, not " +
                                    std::to_string(sum));
  }
  o.source = t;
  return o;
}

TrainerOptions TrainerOptions::defaults() {
  Options t("trainer");
  for (const auto& spec : schema().specs()) t.set(spec.name, spec.default_value, "default");
  return from(t);
}

}  // namespace workbench
