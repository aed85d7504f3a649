-- The confusion matrix of the newest run that has one (the classification evaluator: language ID,
-- intent), at its last evaluation: one row per true class, with the count of each predicted class.
--   sqlite3 -header -column results/workbench.db < results/queries/confusion.sql
WITH run AS (SELECT max(run_id) AS id FROM metrics WHERE key LIKE '%/confusion/%/%'),
     cells AS (SELECT substr(m.key, 1, instr(m.key, '/confusion/') - 1) AS task,
                      substr(m.key, instr(m.key, '/confusion/') + 11) AS pair,
                      m.value
               FROM latest_metrics AS m, run
               WHERE m.run_id = run.id AND m.key LIKE '%/confusion/%/%'
               ORDER BY m.key)
SELECT (SELECT id FROM run) AS run,
       task,
       substr(pair, 1, instr(pair, '/') - 1) AS true_class,
       group_concat(substr(pair, instr(pair, '/') + 1) || ' ' || CAST(value AS INTEGER), '  ') AS predicted,
       CAST(sum(value) AS INTEGER) AS total
FROM cells
GROUP BY task, true_class
ORDER BY task, true_class;
