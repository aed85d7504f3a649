-- Every metric of the most recent run (highest id) over its steps: one row per (key, step), with the
-- wall-clock time of the sample and the seconds since the run started.
--   sqlite3 -header -column results/workbench.db < results/queries/metrics_of_last_run.sql
-- For another run replace `SELECT max(id) FROM runs` with its id; to plot one curve add
-- `AND m.key = 'train/loss'` to the WHERE clause.
WITH last AS (SELECT id, started_at FROM runs WHERE id = (SELECT max(id) FROM runs))
SELECT last.id                                                         AS run_id,
       m.key,
       m.step,
       m.value,
       strftime('%Y-%m-%dT%H:%M:%fZ', m.wall_time, 'unixepoch')        AS wall_time_utc,
       round((m.wall_time - (julianday(last.started_at) - 2440587.5) * 86400.0), 3) AS elapsed_s
FROM metrics AS m
JOIN last ON m.run_id = last.id
ORDER BY m.key, m.step;
