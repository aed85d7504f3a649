-- Only the params that differ between the two most recent runs ("show only what differs"): run_a is
-- the older, run_b the newer; a key present in only one run shows NULL on the other side. Numeric
-- values that are equal but written differently ('1e-4' vs '0.0001') do not count as different.
--   sqlite3 -header -column results/workbench.db < results/queries/params_diff.sql
-- To compare other runs, replace the body of `pair` with their ids, e.g.
--   SELECT 12 AS a, 17 AS b
-- (find ids with queries/runs.sql).
WITH pair AS (
  SELECT (SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET 1) AS a,
         (SELECT id FROM runs ORDER BY id DESC LIMIT 1)          AS b
),
keys AS (
  SELECT DISTINCT params.key FROM params, pair WHERE params.run_id IN (pair.a, pair.b)
)
SELECT keys.key,
       pair.a          AS run_a,
       pa.value_text   AS value_a,
       pair.b          AS run_b,
       pb.value_text   AS value_b
FROM keys
CROSS JOIN pair
LEFT JOIN params AS pa ON pa.run_id = pair.a AND pa.key = keys.key
LEFT JOIN params AS pb ON pb.run_id = pair.b AND pb.key = keys.key
WHERE pa.value_text IS NOT pb.value_text
  AND NOT (pa.value_num IS NOT NULL AND pa.value_num IS pb.value_num)
ORDER BY keys.key;
