-- Recent runs, newest first: status, duration, parent run (a fine-tuning run's pre-training run) and
-- dev CER ('dev/cer': the value at the last logged step, and the best value over the run). NULL where a
-- run has not ended, has no parent or logged no dev CER.
--   sqlite3 -header -column results/workbench.db < results/queries/runs.sql
-- Change LIMIT for more history; add `WHERE s.kind = 'train'` to hide dry runs.
SELECT s.id,
       s.experiment_name                                          AS experiment,
       s.kind,
       s.status,
       s.started_at,
       round(s.duration_s, 1)                                     AS duration_s,
       s.seed,
       s.device,
       s.parent_run_id                                            AS parent,
       cer.step                                                   AS cer_step,
       cer.value                                                  AS final_dev_cer,
       (SELECT min(value) FROM metrics
         WHERE run_id = s.id AND key = 'dev/cer')                 AS best_dev_cer
FROM run_summary AS s
LEFT JOIN latest_metrics AS cer ON cer.run_id = s.id AND cer.key = 'dev/cer'
ORDER BY s.id DESC
LIMIT 20;
