-- Schema of the workbench run store (results/workbench.db). Version 1.
--
-- This file is compiled into libworkbench_results (see results/CMakeLists.txt) and applied by
-- RunStore every time it opens a database whose user_version is below 1, so every statement must be
-- idempotent: CREATE ... IF NOT EXISTS only, no data changes.
--
-- Conventions:
--   * Timestamps in `runs` are ISO-8601 UTC text ('2024-05-01T12:34:56.789Z'); SQLite's date
--     functions understand them: julianday(ended_at) - julianday(started_at) is a duration in days.
--   * metrics.wall_time is seconds since the Unix epoch (REAL): datetime(wall_time, 'unixepoch').
--   * A NaN metric value is stored as NULL (SQLite has no NaN).
--   * Foreign keys are enforced per connection; RunStore turns them on. In the sqlite3 CLI run
--     `PRAGMA foreign_keys = ON;` before deleting runs if the cascade should apply.

CREATE TABLE IF NOT EXISTS runs (
  id              INTEGER PRIMARY KEY,
  experiment_name TEXT NOT NULL,
  experiment_path TEXT,
  config_toml     TEXT,                  -- fully resolved config, as TOML text
  config_hash     TEXT,                  -- sha256 of config_toml (hex)
  status          TEXT NOT NULL DEFAULT 'running'
                  CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
  started_at      TEXT NOT NULL,         -- ISO-8601 UTC
  ended_at        TEXT,                  -- ISO-8601 UTC; NULL while running
  host            TEXT,
  git_revision    TEXT,
  seed            INTEGER,
  torch_version   TEXT,
  device          TEXT,
  error_message   TEXT,                  -- NULL unless the run failed or was interrupted
  kind            TEXT NOT NULL DEFAULT 'train'  -- 'train' or 'dry-run'
);

-- Hyper-parameters, one row per flattened config key ('trainer.lr'). value_text is always set (the
-- value as written); value_num is set for numbers and booleans (0/1) and NULL otherwise, so that
-- numeric comparisons work: SELECT run_id FROM params WHERE key = 'trainer.lr' AND value_num < 1e-3.
CREATE TABLE IF NOT EXISTS params (
  run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key        TEXT NOT NULL,
  value_text TEXT NOT NULL,
  value_num  REAL,
  PRIMARY KEY (run_id, key)
);

-- Scalar metrics over training steps. Exactly one row per (run_id, key, step): logging the same
-- (run, key, step) again replaces value and wall_time.
CREATE TABLE IF NOT EXISTS metrics (
  run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  key       TEXT NOT NULL,
  step      INTEGER NOT NULL,
  value     REAL,                        -- NULL = NaN
  wall_time REAL NOT NULL,               -- seconds since the Unix epoch
  PRIMARY KEY (run_id, key, step)
);

-- The plugins (.so files) a run loaded, with the sha256 of each file's bytes.
CREATE TABLE IF NOT EXISTS plugins (
  run_id  INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
  kind    TEXT NOT NULL,
  name    TEXT NOT NULL,
  version TEXT,
  path    TEXT,
  sha256  TEXT,
  PRIMARY KEY (run_id, kind, name)
);

-- metrics_run_key duplicates the leading columns of the metrics primary key; it is kept as the
-- documented access path for per-(run, key) curves and costs little at metric-logging rates.
CREATE INDEX IF NOT EXISTS metrics_run_key ON metrics (run_id, key);
CREATE INDEX IF NOT EXISTS params_key_num ON params (key, value_num);
CREATE INDEX IF NOT EXISTS runs_experiment ON runs (experiment_name, started_at);

-- The value at the highest step of every (run, key).
CREATE VIEW IF NOT EXISTS latest_metrics AS
SELECT m.run_id, m.key, m.step, m.value
FROM metrics AS m
JOIN (SELECT run_id, key, max(step) AS step FROM metrics GROUP BY run_id, key) AS last
  USING (run_id, key, step);

-- One row per run; duration_s is NULL while the run has no ended_at.
CREATE VIEW IF NOT EXISTS run_summary AS
SELECT id, experiment_name, status, started_at, ended_at, seed, device,
       (julianday(ended_at) - julianday(started_at)) * 86400.0 AS duration_s,
       kind
FROM runs;

PRAGMA user_version = 1;
