-- Speech translation runs (experiments/finetune/st.toml) side by side: where each started (its parent
-- run and the run's `init` tag), what the head was trained on (speech only, or speech and text: mSLAM's
-- multi-modal fine-tuning), and its final dev BLEU and chrF (averages over the X -> En directions) from
-- speech and from the source text (zero-shot when trained on speech only).
--   sqlite3 -header -column results/workbench.db < results/queries/translation.sql
WITH st AS (SELECT id, parent_run_id FROM runs
            WHERE experiment_name = 'finetune-st' AND status = 'finished' AND kind = 'train'),
     last AS (SELECT m.run_id, m.key, m.value, m.step FROM latest_metrics AS m JOIN st ON st.id = m.run_id)
SELECT st.id AS run,
       CASE WHEN st.parent_run_id IS NULL THEN 'random init' ELSE 'run ' || st.parent_run_id END AS init,
       coalesce((SELECT value FROM tags WHERE run_id = st.id AND key = 'init'), '') AS init_tag,
       CASE WHEN EXISTS (SELECT 1 FROM last WHERE run_id = st.id AND key = 'dev/mt/bleu') THEN 'speech+text'
            ELSE 'speech' END AS trained_on,
       (SELECT step FROM last WHERE run_id = st.id AND key = 'dev/st/bleu') AS step,
       round((SELECT value FROM last WHERE run_id = st.id AND key = 'dev/st/bleu'), 2) AS st_bleu,
       round((SELECT value FROM last WHERE run_id = st.id AND key = 'dev/st/chrf'), 2) AS st_chrf,
       round((SELECT value FROM last WHERE run_id = st.id AND key IN ('dev/mt_zeroshot/bleu', 'dev/mt/bleu')), 2)
         AS text_bleu,
       round((SELECT value FROM last WHERE run_id = st.id AND key IN ('dev/mt_zeroshot/chrf', 'dev/mt/chrf')), 2)
         AS text_chrf
FROM st
ORDER BY st.id;
