-- Version 1 to 2: retention's indexes order by finished_ts, which changes
-- only at a message's finish, instead of last_ts, which every event of a
-- message changes; so the updates of a message before its finish are HOT
-- (see schema.sql). ADD COLUMN ... STORED computes it for every row.
ALTER TABLE messages ADD COLUMN finished_ts bigint GENERATED ALWAYS AS (CASE WHEN status = 4 THEN last_ts END) STORED;
ALTER TABLE messages SET (fillfactor = 80);
DROP INDEX finished_messages;
DROP INDEX tombstones;
CREATE INDEX finished_messages ON messages (finished_ts) WHERE finished_ts IS NOT NULL AND NOT compacted;
CREATE INDEX tombstones ON messages (finished_ts) WHERE compacted;
