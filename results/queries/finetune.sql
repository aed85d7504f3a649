-- Every finished fine-tuning run (experiments/finetune/*.toml) with its starting point (the pre-training
-- run it came from, or random initialisation) and its final dev metrics beside their baselines
-- (majority class and chance for the classifiers). The pre-training run's own config and metrics are a
-- join away: runs.parent_run_id, or the run_parents view.
--   sqlite3 -header -column results/workbench.db < results/queries/finetune.sql
WITH ft AS (SELECT id, experiment_name, parent_run_id FROM runs
            WHERE experiment_name LIKE 'finetune-%' AND status = 'finished' AND kind = 'train')
SELECT substr(ft.experiment_name, 10) AS task,
       CASE WHEN ft.parent_run_id IS NULL THEN 'random init' ELSE 'run ' || ft.parent_run_id END AS init,
       ft.id AS run,
       substr(m.key, 5) AS metric,
       round(m.value, 3) AS final,
       m.step AS step
FROM ft
JOIN latest_metrics AS m ON m.run_id = ft.id
WHERE m.key IN ('dev/cer', 'dev/wer',
                'dev/langid/accuracy', 'dev/langid/macro_f1', 'dev/langid/majority', 'dev/langid/chance',
                'dev/intent/accuracy', 'dev/intent/macro_f1', 'dev/intent/majority', 'dev/intent/chance',
                'dev/st/bleu', 'dev/st/chrf', 'dev/mt_zeroshot/bleu', 'dev/mt/bleu')
ORDER BY task, metric, init;
