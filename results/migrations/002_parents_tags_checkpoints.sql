-- Migration 2 of the workbench run store: parent runs, tags, checkpoints.
--
-- Applied by RunStore to a database at user_version 1 (an existing file, or a fresh one right after
-- schema.sql), inside one BEGIN IMMEDIATE transaction that also sets PRAGMA user_version = 2; so this
-- file must not set user_version or open or close transactions itself. Released migrations are never
-- edited: a schema change is a new file NNN_*.sql and kSchemaVersion = NNN (see results/README.md).

-- The run this one continues from (a fine-tuning run's pre-training run). Deleting the parent keeps
-- the child and forgets the link. ADD COLUMN with REFERENCES needs a NULL default, which is the point.
ALTER TABLE runs ADD COLUMN parent_run_id INTEGER REFERENCES runs(id) ON DELETE SET NULL;
CREATE INDEX runs_parent ON runs (parent_run_id);

-- Free-form labels of a run ('ablation' = 'lr', 'paper' = 'mslam'), one value per key.
CREATE TABLE tags (
  run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key    TEXT NOT NULL,
  value  TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (run_id, key)
);
CREATE INDEX tags_key_value ON tags (key, value);

-- The checkpoint files a run wrote and still has on disk. A trainer that keeps only the last K
-- periodic checkpoints deletes the rows of the files it deletes, so every row names a file that
-- existed when it was recorded, with the sha256 of its bytes.
CREATE TABLE checkpoints (
  run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  step         INTEGER NOT NULL,
  path         TEXT NOT NULL,
  sha256       TEXT NOT NULL,
  kind         TEXT NOT NULL CHECK (kind IN ('periodic', 'best', 'final', 'interrupted')),
  metric_key   TEXT,                     -- the metric that made a 'best' checkpoint best, if any
  metric_value REAL,                     -- its value at `step`
  created_at   TEXT NOT NULL,            -- ISO-8601 UTC, like runs.started_at
  PRIMARY KEY (run_id, path)
);

-- A fine-tuning run next to its pre-training run, e.g. the parent's config to compare with:
--   SELECT child_id, parent_id, parent_config_toml FROM run_parents WHERE child_id = 12;
CREATE VIEW run_parents AS
SELECT c.id              AS child_id,
       c.experiment_name AS child_name,
       p.id              AS parent_id,
       p.experiment_name AS parent_name,
       p.config_toml     AS parent_config_toml
FROM runs AS c
JOIN runs AS p ON p.id = c.parent_run_id;

-- run_summary gains parent_run_id (last, so that queries naming the version-1 columns keep working).
DROP VIEW run_summary;
CREATE VIEW run_summary AS
SELECT id, experiment_name, status, started_at, ended_at, seed, device,
       (julianday(ended_at) - julianday(started_at)) * 86400.0 AS duration_s,
       kind,
       parent_run_id
FROM runs;
