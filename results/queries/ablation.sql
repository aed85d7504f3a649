-- Ablation table: one row per finished run of one experiment, with chosen params as columns and the
-- final (last-step) value of chosen metrics.
--   sqlite3 -header -column results/workbench.db < results/queries/ablation.sql
-- To adapt:
--   * experiment: by default the experiment of the most recent run; to pick one, replace the body of
--     `exp` with   SELECT 'my_experiment' AS name
--   * params: one `max(CASE key WHEN '<param key>' THEN value_text END) AS <column>` line per param in
--     `p` (value_text shows the value as written; use value_num to sort or compare numerically);
--   * metrics: one such line per metric key in `m` (final value; use `metrics` and min(value) instead of
--     `latest_metrics` for the best value over the run);
--   * then list the new columns in the final SELECT.
WITH exp AS (
  SELECT experiment_name AS name FROM runs ORDER BY id DESC LIMIT 1
),
p AS (
  SELECT run_id,
         max(CASE key WHEN 'trainer.lr'                   THEN value_text END) AS lr,
         max(CASE key WHEN 'trainer.batch_size'           THEN value_text END) AS batch_size,
         max(CASE key WHEN 'model.speech_encoder.d_model' THEN value_text END) AS d_model
  FROM params
  GROUP BY run_id
),
m AS (
  SELECT run_id,
         max(CASE key WHEN 'dev/cer'    THEN value END) AS dev_cer,
         max(CASE key WHEN 'dev/loss'   THEN value END) AS dev_loss,
         max(CASE key WHEN 'train/loss' THEN value END) AS train_loss,
         max(step)                                      AS last_step
  FROM latest_metrics
  GROUP BY run_id
)
SELECT r.id, r.experiment_name AS experiment, r.seed,
       p.lr, p.batch_size, p.d_model,
       m.dev_cer, m.dev_loss, m.train_loss, m.last_step
FROM runs AS r
JOIN exp ON r.experiment_name = exp.name
LEFT JOIN p ON p.run_id = r.id
LEFT JOIN m ON m.run_id = r.id
WHERE r.status = 'finished'
ORDER BY m.dev_cer IS NULL, m.dev_cer, r.id;
