-- liminald database schema, version 3 (PRAGMA user_version = 3). An older
-- database is brought here by migrations/<version>.sql when it is opened.
--
-- The events table is the append-only log. The other tables hold the state
-- that replaying the log gives, updated in the same transaction as the
-- events they follow from, so that a decision or a message's state is an
-- indexed lookup and a restart replays nothing. `liminald check` proves that
-- they agree with the log.

-- One row per conversation: its name, its next seq and its messages counted
-- by status (a tombstone counts as finished). compacted counts the messages
-- it ever compacted: its log may skip their seqs. forgotten_before is the
-- finished_at of the newest tombstone it dropped, NULL if none.
CREATE TABLE conversations (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    next_seq         INTEGER NOT NULL,
    received         INTEGER NOT NULL DEFAULT 0,
    in_progress      INTEGER NOT NULL DEFAULT 0,
    errored          INTEGER NOT NULL DEFAULT 0,
    finished         INTEGER NOT NULL DEFAULT 0,
    compacted        INTEGER NOT NULL DEFAULT 0,
    forgotten_before INTEGER
);

-- The log. pos is the position in the whole database, increasing in commit
-- order; seq the position in the conversation, from 0 and contiguous but
-- for the events of compacted messages; ts the
-- commit time in epoch milliseconds. type: 1 message_received,
-- 2 processing_started, 3 step_completed, 4 processing_finished,
-- 5 error_occurred, 6 lease_renewed, 7 message_released. The other columns
-- are set only for the types they belong to: received_at and fingerprint
-- (1), worker and lease_ms (2), step_index and output (3), error (5), token
-- and lease_ms (6), reason (7); fingerprint, worker, a start's lease_ms and
-- reason only when given.
CREATE TABLE events (
    pos             INTEGER PRIMARY KEY,
    conversation_id INTEGER NOT NULL REFERENCES conversations (id),
    seq             INTEGER NOT NULL,
    ts              INTEGER NOT NULL,
    type            INTEGER NOT NULL,
    message_id      TEXT    NOT NULL,
    received_at     INTEGER,
    step_index      INTEGER,
    output          BLOB,
    error           TEXT,
    fingerprint     TEXT,
    worker          TEXT,
    lease_ms        INTEGER,
    token           INTEGER,
    reason          TEXT,
    UNIQUE (conversation_id, seq)
);

-- One row per received message. status: 1 received, 2 in_progress,
-- 3 errored, 4 finished. last_step is the highest completed step index, or
-- NULL; started_seq the seq of the latest processing_started (the fencing
-- token; 0 if never started); last_type, last_seq and last_ts the message's
-- latest event; error the latest error text; fingerprint that of its
-- message_received; worker that of its latest processing_started;
-- lease_until when the current token's lease lapses (epoch ms, 0 for no
-- lease); attempts its processing_started events since it was received or
-- released. A row with compacted = 1 is a tombstone: a finished message
-- whose events and steps were deleted, keeping its finish's seq (last_seq)
-- and ts (last_ts, its finished_at), attempts and fingerprint; its other
-- columns are 0 or NULL.
CREATE TABLE messages (
    conversation_id INTEGER NOT NULL,
    message_id      TEXT    NOT NULL,
    status          INTEGER NOT NULL,
    received_at     INTEGER NOT NULL,
    received_seq    INTEGER NOT NULL,
    started_seq     INTEGER NOT NULL,
    last_step       INTEGER,
    error           TEXT,
    last_type       INTEGER NOT NULL,
    last_seq        INTEGER NOT NULL,
    last_ts         INTEGER NOT NULL DEFAULT 0,
    fingerprint     TEXT,
    worker          TEXT,
    lease_until     INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    compacted       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (conversation_id, message_id)
) WITHOUT ROWID;

-- What compaction looks for, oldest first: finished messages not yet
-- compacted, and tombstones. A message enters the first only when it
-- finishes, so the writes of its lifecycle before that pay nothing.
CREATE INDEX finished_messages ON messages (last_ts) WHERE status = 4 AND compacted = 0;
CREATE INDEX tombstones ON messages (last_ts) WHERE compacted = 1;

-- One row per completed step; its output is in the event at seq.
CREATE TABLE steps (
    conversation_id INTEGER NOT NULL,
    message_id      TEXT    NOT NULL,
    step_index      INTEGER NOT NULL,
    seq             INTEGER NOT NULL,
    PRIMARY KEY (conversation_id, message_id, step_index)
) WITHOUT ROWID;

-- Totals over the whole database, one row, so that stats read no table scan.
-- messages counts tombstones too; tombstones counts those kept, compacted
-- the messages ever compacted, dropped the tombstones ever dropped, and
-- forgotten_before is the newest forgotten_before of any conversation.
CREATE TABLE totals (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    conversations INTEGER NOT NULL,
    messages      INTEGER NOT NULL,
    events        INTEGER NOT NULL,
    compacted     INTEGER NOT NULL DEFAULT 0,
    tombstones    INTEGER NOT NULL DEFAULT 0,
    dropped       INTEGER NOT NULL DEFAULT 0,
    forgotten_before INTEGER
);
INSERT INTO totals (id, conversations, messages, events) VALUES (1, 0, 0, 0);
