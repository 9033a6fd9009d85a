-- Version 1 -> 2 (protocol 2: leases, fencing, attempts, fingerprints).
-- New columns are NULL or 0 for what version 1 could not record: no event
-- had a fingerprint, a worker or a lease. A message's attempts are its
-- processing_started events (version 1 had no releases), and its last_ts the
-- ts of its latest event: one lookup a message for last_ts, and one grouped
-- scan of the log for attempts.

ALTER TABLE events ADD COLUMN fingerprint TEXT;
ALTER TABLE events ADD COLUMN worker TEXT;
ALTER TABLE events ADD COLUMN lease_ms INTEGER;
ALTER TABLE events ADD COLUMN token INTEGER;
ALTER TABLE events ADD COLUMN reason TEXT;

ALTER TABLE messages ADD COLUMN last_ts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN fingerprint TEXT;
ALTER TABLE messages ADD COLUMN worker TEXT;
ALTER TABLE messages ADD COLUMN lease_until INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;

UPDATE messages SET last_ts = e.ts
FROM events e
WHERE e.conversation_id = messages.conversation_id AND e.seq = messages.last_seq;

UPDATE messages SET attempts = s.n
FROM (SELECT conversation_id, message_id, count(*) AS n FROM events WHERE type = 2
      GROUP BY conversation_id, message_id) AS s
WHERE s.conversation_id = messages.conversation_id AND s.message_id = messages.message_id;
