-- The plugins the most recent run (highest id) loaded: kind, name, version, .so path and its sha256,
-- to check that two runs used the same plugin binaries.
--   sqlite3 -header -column results/workbench.db < results/queries/plugins_of_last_run.sql
-- For another run replace `SELECT max(id) FROM runs` with its id.
SELECT pl.run_id, pl.kind, pl.name, pl.version, pl.path, pl.sha256
FROM plugins AS pl
WHERE pl.run_id = (SELECT max(id) FROM runs)
ORDER BY pl.kind, pl.name;
