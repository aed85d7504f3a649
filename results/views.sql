-- Views that keep ablation queries short (applied by RunStore to every database that lacks one of them;
-- each statement is CREATE VIEW IF NOT EXISTS, so applying the file again changes nothing). They read the
-- tables only, never write; a changed view is a new name, or a migration that drops the old one.

-- A sweep's runs with their point: one row per run tagged by `workbench sweep`. A (sweep, stage, point,
-- seed) run again after a failure has several runs; the newest is the one that counts (superseded_by
-- names it on the older ones).
CREATE VIEW IF NOT EXISTS sweep_runs AS
SELECT r.id AS run_id,
       sw.value AS sweep,
       st.value AS stage,
       pt.value AS point,
       CAST(sd.value AS INTEGER) AS seed,
       r.status,
       r.experiment_name,
       r.parent_run_id,
       sup.value AS superseded_by
FROM runs AS r
JOIN tags AS sw ON sw.run_id = r.id AND sw.key = 'sweep'
LEFT JOIN tags AS st ON st.run_id = r.id AND st.key = 'sweep.stage'
LEFT JOIN tags AS pt ON pt.run_id = r.id AND pt.key = 'sweep.point'
LEFT JOIN tags AS sd ON sd.run_id = r.id AND sd.key = 'sweep.seed'
LEFT JOIN tags AS sup ON sup.run_id = r.id AND sup.key = 'sweep.superseded_by';

-- Every (run, key): how many values, its first and last step, the final value (at the last step) and
-- the lowest and highest (NaN, stored as NULL, is left out of min and max).
CREATE VIEW IF NOT EXISTS metric_final AS
SELECT m.run_id, m.key,
       count(*) AS n,
       min(m.step) AS first_step,
       max(m.step) AS last_step,
       (SELECT l.value FROM metrics AS l WHERE l.run_id = m.run_id AND l.key = m.key ORDER BY l.step DESC LIMIT 1)
         AS final_value,
       min(m.value) AS min_value,
       max(m.value) AS max_value
FROM metrics AS m
GROUP BY m.run_id, m.key;

-- The best value of every (run, key) and the step it was reached at: the lowest for losses and error
-- rates (a path part 'cer', 'wer', 'error' or ending in 'loss'), the highest for everything else
-- (accuracies, BLEU, chrF, F1, recall). `workbench compare --agg best` uses the same rule.
CREATE VIEW IF NOT EXISTS metric_best AS
SELECT f.run_id, f.key,
       CASE WHEN f.lower THEN f.min_value ELSE f.max_value END AS best_value,
       (SELECT b.step FROM metrics AS b
        WHERE b.run_id = f.run_id AND b.key = f.key AND b.value = CASE WHEN f.lower THEN f.min_value ELSE f.max_value END
        ORDER BY b.step LIMIT 1) AS best_step,
       CASE WHEN f.lower THEN 'min' ELSE 'max' END AS direction
FROM (SELECT run_id, key, min_value, max_value,
             ('/' || key || '/' LIKE '%/cer/%' OR '/' || key || '/' LIKE '%/wer/%' OR
              '/' || key || '/' LIKE '%/error/%' OR '/' || key || '/' LIKE '%loss/%') AS lower
      FROM metric_final) AS f;

-- A fine-tuning (or continued) run next to the run it started from, with both sweep points: the
-- pre-training ablation a downstream number belongs to.
CREATE VIEW IF NOT EXISTS run_pairs AS
SELECT c.id AS child_id,
       c.experiment_name AS child_name,
       c.status AS child_status,
       p.id AS parent_id,
       p.experiment_name AS parent_name,
       p.status AS parent_status,
       cs.sweep AS sweep,
       cs.point AS child_point,
       ps.point AS parent_point,
       cs.seed AS seed
FROM runs AS c
JOIN runs AS p ON p.id = c.parent_run_id
LEFT JOIN sweep_runs AS cs ON cs.run_id = c.id
LEFT JOIN sweep_runs AS ps ON ps.run_id = p.id;
