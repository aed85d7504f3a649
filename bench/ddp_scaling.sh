#!/usr/bin/env bash
# Data-parallel scaling at the quickstart's shape: 2 ranks x 1 thread (Gloo over lo) against 1 rank x 2
# threads, with 1 rank x 1 thread as the base, on the same global batch (the quickstart's 32 s of audio,
# at most 16 utterances: 16 s and 8 per rank) in the same data order. Prints steps/s and the scaling
# efficiency, steps/s / (cores x the 1 x 1 steps/s), side by side.
#
#   bench/ddp_scaling.sh [--steps N] [--smoke]      (from the repository root, after scripts/build.sh)
#
# --smoke: one step each on the English prompts only (what ctest runs, so the benchmark cannot rot).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=60
languages='["en", "es", "fr", "it", "ru"]'
while (($#)); do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --smoke) steps=1; languages='["en"]'; shift ;;
    *) echo "usage: $0 [--steps N] [--smoke]" >&2; exit 2 ;;
  esac
done
wb=${WORKBENCH:-build/bin/workbench}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
db="$work/bench.db"

# SortaGrad off: the first epoch would otherwise run from the shortest batches, unlike the rest of training.
common=(experiments/quickstart.toml --db "$db" --set "trainer.steps=$steps" --set trainer.max_minutes=0
        --set trainer.eval_at_start=false --set evaluators.asr.every=0 --set 'trainer.progress="none"'
        --set "trainer.checkpoint_dir=\"$work/checkpoints\"" --set data.train.sortagrad=false
        --set "data.train.languages=$languages" --set "data.dev.languages=[\"en\"]")

run() {  # label, then workbench arguments
  local label="$1"; shift
  "$wb" run "${common[@]}" --tag "bench=$label" "$@" > "$work/$label.log" 2>&1 || {
    echo "ddp_scaling: the '$label' run failed:" >&2; tail -20 "$work/$label.log" >&2; exit 1; }
}
run 1x1 --set trainer.threads=1 --set trainer.blas_threads=1
run 1x2 --set trainer.threads=2 --set trainer.blas_threads=1
run 1x1+2blas --set trainer.threads=1 --set trainer.blas_threads=2
run 2x1 --nproc 2 --set trainer.threads=1 --set trainer.blas_threads=1 \
  --set data.train.batch_seconds=16.0 --set data.train.max_batch=8

sqlite3 -separator ' ' "$db" "
  SELECT t.value, s.value_num, d.value_num
  FROM runs r JOIN tags t ON t.run_id = r.id AND t.key = 'bench'
  JOIN params s ON s.run_id = r.id AND s.key = 'derived.steps_done'
  JOIN params d ON d.run_id = r.id AND d.key = 'derived.train_seconds'
  ORDER BY r.id" | awk -v steps="$steps" '
  { label[NR] = $1; sps[NR] = $2 / $3; secs[NR] = $3 }
  END {
    base = sps[1]
    printf "%-34s %6s %9s %9s %11s\n", "configuration (same global batch)", "steps", "train s", "steps/s", "efficiency"
    for (i = 1; i <= NR; ++i) {
      name = label[i] == "1x1" ? "1 rank  x 1 thread" : label[i] == "1x2" ? "1 rank  x 2 threads" : \
             label[i] == "2x1" ? "2 ranks x 1 thread (gloo, lo)" : "1 rank  x 1 thread + 2 BLAS threads"
      cores = label[i] == "1x1" ? 1 : 2
      printf "%-34s %6d %9.1f %9.3f %10.0f%%\n", name, steps, secs[i], sps[i], 100 * sps[i] / (cores * base)
      if (label[i] == "1x2") threads = sps[i]
      if (label[i] == "2x1") ranks = sps[i]
    }
    printf "2 ranks x 1 thread / 1 rank x 2 threads: %.2f\n", ranks / threads
  }'
