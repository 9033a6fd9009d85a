// Package pgstore is the event log of SPEC §10 in a PostgreSQL database
// that several daemons share: the store behind the socket when the db
// setting is a postgres:// URL. It keeps the tables of the SQLite store
// (see schema.sql) and asks package conversation, as that store does, for
// every rule: it gathers what a rule needs by indexed lookups, and writes
// what the rule answers.
//
// # Writes
//
// A writer goroutine takes the requests waiting and writes them in one
// transaction with one COMMIT (group commit), and answers them once COMMIT
// returned. A store runs one writer by default (Options.Writers); with
// more, each on its own connection, one batch locks and reads while
// another waits for its COMMIT: within a daemon they are several batches
// as several daemons' batches are, and the same locks order them. A run of
// requests that must be written in order (an import's, compaction's) goes
// to one writer whole. A batch locks the rows of the conversations it
// writes to (SELECT ... FOR UPDATE, in name order, after inserting those
// it does not know to exist), then reads the database's clock once, then
// the messages and steps its requests name, all in one round trip. The
// conversation's row lock serializes the writers of one conversation
// across daemons: each batch judges on the state the one before it
// committed, so seqs stay contiguous, and of concurrent first deliveries
// of a message through several daemons exactly one is answered start.
// Every time a rule reads (leases, quarantine, retention) is that one
// reading of the database's clock (clock_timestamp()), so daemons with
// skewed clocks agree.
//
// # Positions
//
// pos must increase in commit order across daemons, and a subscriber that
// read an event at pos p must never later find an event below p that it
// has not seen. A sequence would not do: two transactions take 5 and 6,
// the one with 6 commits first, and a reader that saw 6 has missed 5.
//
// Every batch that changes something ends with
//
//	UPDATE positions SET next = next + n, ... RETURNING next - n
//
// on the one row of positions, then inserts its events at those positions,
// then commits, in one round trip. The row lock that UPDATE takes is held
// until COMMIT, so the batches of all daemons pass this tail one at a time:
// a batch gets its positions only after the batch before it (in the order
// of the lock) committed, and it reads that batch's committed next (READ
// COMMITTED re-reads a row it waited for). So positions are given in
// commit order, without gaps (a batch that rolls back rolls its UPDATE
// back too), and PostgreSQL makes a transaction visible before it releases
// its locks: any snapshot that sees the events of a batch sees those of
// every batch before it. A reader of `pos >= p ORDER BY pos` thus reads a
// prefix of the log that only grows at its end. The cost: the tails of
// concurrent batches, their COMMIT included, do not overlap; the rest of
// the batches (their locks, reads, rules and other writes) do, and group
// commit puts many requests into each tail.
//
// # Subscriptions
//
// The table is the truth. A feed goroutine reads the events from the
// position it reached on, in pos order, and hands them to the
// subscriptions; it looks when a batch of this store committed (its own
// events, when they follow on, are handed on without a read), when
// PostgreSQL notifies the channel liminald_events (each batch notifies it
// as it commits: LISTEN/NOTIFY is the wake-up for events other daemons
// wrote), and every Options.Poll (50 ms by default) in case a notification
// was lost with a connection.
//
// # Failures
//
// When PostgreSQL cannot be reached, or fails, writes and reads answer
// errors wrapping conversation.ErrUnavailable, and the store reconnects by
// itself (pgxpool). A write whose COMMIT got no answer may have committed:
// it is answered unavailable, and its retry with expected_seq finds it.
// Open waits for PostgreSQL with a backoff, up to Options.ConnectTimeout,
// logging what it waits for. An acknowledged write is as durable as
// PostgreSQL's settings make a commit: fsync on and synchronous_commit on
// (the defaults) for an acknowledged write to survive a crash of the
// server's machine.
//
// # Offline tools
//
// Check and Export read one snapshot (a read-only REPEATABLE READ
// transaction) beside the daemons serving the database; Import writes
// through a Store's writer, judged by the rules as each event was when it
// was logged, so it may run while daemons write. The line format, the
// import's batching and the check's replay are package offline's, shared
// with the SQLite store: an export of either store imports into the other.
// Backups are pg_dump's.
package pgstore
