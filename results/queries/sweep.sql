-- The newest sweep (`workbench sweep`, docs/sweeps.md) run by run: each stage, point and seed with its
-- run, status and the final and best value of the run's headline metric (the views metric_final and
-- metric_best of results/views.sql). Runs superseded by a rerun of their point are left out.
--   sqlite3 -header -column results/workbench.db < results/queries/sweep.sql
-- For another sweep replace the body of `sw` with   SELECT 'my-sweep' AS name
-- For the mean and spread over seeds: workbench compare --sweep NAME
WITH sw AS (SELECT sweep AS name FROM sweep_runs ORDER BY run_id DESC LIMIT 1),
     cur AS (SELECT s.* FROM sweep_runs AS s, sw WHERE s.sweep = sw.name AND s.superseded_by IS NULL),
     head AS (SELECT run_id, value_text AS key FROM params WHERE key = 'derived.headline_metric')
SELECT cur.sweep, cur.stage, cur.point, cur.seed, cur.run_id AS run, cur.status, head.key AS metric,
       round(f.final_value, 4) AS final, round(b.best_value, 4) AS best, b.best_step
FROM cur
LEFT JOIN head ON head.run_id = cur.run_id
LEFT JOIN metric_final AS f ON f.run_id = cur.run_id AND f.key = head.key
LEFT JOIN metric_best AS b ON b.run_id = cur.run_id AND b.key = head.key
ORDER BY (SELECT min(c.run_id) FROM cur AS c WHERE c.stage = cur.stage), cur.point, cur.seed;
