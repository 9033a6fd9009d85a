-- Version 2 -> 3 (retention: compaction, tombstones, horizons). Nothing was
-- ever compacted in a version-2 database: every new column is 0 or NULL.
-- The two partial indexes are built from the finished messages, the only
-- rows that enter them.

ALTER TABLE conversations ADD COLUMN compacted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conversations ADD COLUMN forgotten_before INTEGER;

ALTER TABLE messages ADD COLUMN compacted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX finished_messages ON messages (last_ts) WHERE status = 4 AND compacted = 0;
CREATE INDEX tombstones ON messages (last_ts) WHERE compacted = 1;

ALTER TABLE totals ADD COLUMN compacted INTEGER NOT NULL DEFAULT 0;
ALTER TABLE totals ADD COLUMN tombstones INTEGER NOT NULL DEFAULT 0;
ALTER TABLE totals ADD COLUMN dropped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE totals ADD COLUMN forgotten_before INTEGER;
