-- Every metric of the newest training run with its first and last logged value, so that learning (and
-- collapse) shows at a glance: w2v_bert/contrastive_accuracy against contrastive_chance,
-- mlm_accuracy against mlm_majority_accuracy, code_usage_perplexity, span_bert/accuracy against
-- majority_accuracy, tlm text/speech accuracy, stm/accuracy.
--   sqlite3 -header -column results/workbench.db < results/queries/pretraining.sql
WITH run AS (SELECT max(id) AS id FROM runs WHERE kind = 'train'),
     span AS (SELECT m.key, min(m.step) AS first_step, max(m.step) AS last_step
              FROM metrics m, run WHERE m.run_id = run.id
              GROUP BY m.key)
SELECT span.key,
       span.first_step,
       round(f.value, 4) AS first_value,
       span.last_step,
       round(l.value, 4) AS last_value
FROM span, run
JOIN metrics f ON f.run_id = run.id AND f.key = span.key AND f.step = span.first_step
JOIN metrics l ON l.run_id = run.id AND l.key = span.key AND l.step = span.last_step
ORDER BY span.key;
