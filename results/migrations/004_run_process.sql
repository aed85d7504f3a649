-- Migration 4 of the workbench run store: the process that runs a run.
--
-- Applied by RunStore to a database at user_version 3 inside one BEGIN IMMEDIATE transaction that also
-- sets PRAGMA user_version = 4 (see 002 and results/README.md). Released migrations are never edited.

-- A run left 'running' by a process that died (kill -9, a power cut) would stay 'running' for ever.
-- With its pid and that process's start time (/proc/<pid>/stat field 22, clock ticks after boot: a pid
-- the kernel has since given to another process has another start time), `workbench runs` on the same
-- host tells a live run from a crashed one. NULL for runs recorded before this version.
ALTER TABLE runs ADD COLUMN pid INTEGER;
ALTER TABLE runs ADD COLUMN process_start TEXT;
