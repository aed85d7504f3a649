#!/bin/bash
# Pre-train experiments/mslam.toml, then fine-tune every downstream task from it and, as the baseline,
# from random initialisation; prints the comparison (results/queries/finetune.sql and, for speech
# translation, translation.sql). About 2.5 hours on 2 CPU cores (speech translation alone takes 1.5: two
# 45-minute runs). PRETRAINED=<run id> skips the
# pre-training and starts from that run.
#   experiments/finetune/run_all.sh            # DB=results/workbench.db WB=./build/bin/workbench
set -euo pipefail
DB=${DB:-results/workbench.db}
WB=${WB:-./build/bin/workbench}
TASKS=${TASKS:-asr_ctc asr_rnnt langid intent st}
if [ -z "${PRETRAINED:-}" ]; then
  "$WB" run experiments/mslam.toml --db "$DB" --tag study=finetune
  PRETRAINED=$(sqlite3 "$DB" "SELECT max(id) FROM runs WHERE experiment_name = 'mslam-tiny' AND kind = 'train'
                               AND status = 'finished'")
fi
for task in $TASKS; do
  "$WB" run "experiments/finetune/$task.toml" --db "$DB" --set "init.from_run=$PRETRAINED" \
    --tag study=finetune --tag init=pretrained
  "$WB" run "experiments/finetune/$task.toml" --db "$DB" --tag study=finetune --tag init=random
done
sqlite3 -header -column "$DB" < results/queries/finetune.sql
sqlite3 -header -column "$DB" < results/queries/translation.sql
