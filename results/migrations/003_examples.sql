-- Migration 3 of the workbench run store: decoded examples kept for inspection.
--
-- Applied by RunStore to a database at user_version 2 inside one BEGIN IMMEDIATE transaction that also
-- sets PRAGMA user_version = 3 (see 002 and results/README.md). Released migrations are never edited.

-- What an evaluator decoded, next to what it should have: a speech translation's reference and
-- hypothesis, per evaluation step. `task` carries the data name and the direction ("dev/st/fr-en").
-- One row per (run_id, step, task, utt_id): evaluating the same step again replaces its rows.
CREATE TABLE examples (
  run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step       INTEGER NOT NULL,
  task       TEXT NOT NULL,
  utt_id     TEXT NOT NULL,
  reference  TEXT NOT NULL,
  hypothesis TEXT NOT NULL,
  PRIMARY KEY (run_id, step, task, utt_id)
);
