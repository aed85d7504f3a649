-- What the newest run that kept decoded examples (the translation evaluator) produced at its last
-- evaluation: each example's task ("dev/st/fr-en"), utterance id, reference and hypothesis.
--   sqlite3 -header -column results/workbench.db < results/queries/examples.sql
WITH run AS (SELECT max(run_id) AS id FROM examples),
     last AS (SELECT max(e.step) AS step FROM examples AS e, run WHERE e.run_id = run.id)
SELECT e.run_id AS run, e.step, e.task, e.utt_id, e.reference, e.hypothesis
FROM examples AS e, run, last
WHERE e.run_id = run.id AND e.step = last.step
ORDER BY e.task, e.utt_id;
