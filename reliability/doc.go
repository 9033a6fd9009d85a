// Package reliability holds liminald's reliability tests. It has no
// non-test code: every test runs the real liminald binary (built once by
// TestMain) on a socket and database in t.TempDir(), and talks to it with
// the Go client of package ipc.
//
// What it proves:
//
//   - Crash safety (crash_test.go). Concurrent clients run message
//     lifecycles (receive, start, steps 0..2, finish) over a few
//     conversations while the daemon is killed with SIGKILL at random
//     moments and restarted on the same database. Half the workers hold
//     their messages as SPEC §7 has it: a start with a worker name and a
//     lease (25 ms for some, so that it lapses across a restart and the
//     next start takes the message over; a minute for others, so that the
//     next delivery is busy and the start a duplicate), a renew before a
//     step now and then, and the start's token on every write. Clients
//     treat a broken connection as an unknown outcome, reconnect after the
//     restart, and continue the same messages through receive and
//     resume_from, so histories span kills. After each restart the state
//     of every started message must answer a token no lower than any start
//     answered before, and no start may answer a lower token than an
//     earlier one. At the end every acknowledged write is in the log at its
//     seq with the same type, message, step index and output, each start's
//     token is its seq, seqs are contiguous from 0, each message's token is
//     the seq of its latest processing_started, `liminald check --db D
//     --json` passes, and decide agrees with the acknowledged history of
//     every message (finished: skip; busy: held by its own worker with its
//     latest token; otherwise resume from at least the highest
//     acknowledged step + 1). Every non-duplicate acknowledgement has a
//     seq of its own, and an event no reply acknowledged must belong to a
//     message one of whose calls broke. A SIGTERM variant checks the
//     daemon exits 0 under load, loses nothing it acknowledged, and
//     answered every write it committed (no event without its
//     acknowledgement).
//   - Retention's crash safety (retention_test.go). The same workers run
//     against a daemon with --retain-finished 50ms and --retain-tombstones
//     1s, so that compaction and drops run all the time, giving each
//     delivery its message's sent_at, and the daemon is killed with
//     SIGKILL at random moments, half of them aimed at the start of a
//     compaction pass (stats shows when one ended; the next is due half a
//     second later), each once stats shows tombstones (and, after the
//     first kill, dropped ones). While the daemon is down, `liminald
//     check` must pass on the database as the kill left it. After each
//     restart: tokens never went back but for messages compacted or
//     forgotten, next_seq of no conversation went down, and every message
//     whose finish was acknowledged decides skip (compacted or not), where
//     finish again is a duplicate at the seq its finish was acknowledged
//     at, or forgotten (when its sent_at is given and its tombstone was
//     dropped), with a horizon no older than its finish, where a delivery
//     without sent_at starts it, carrying that horizon. At the end the
//     daemon is restarted without retention, so that nothing moves under
//     the final check: every acknowledged write is in the log at its seq
//     unless its message was compacted or forgotten (which needs a finish
//     sent), and then no event of it is left; no seq holds another event
//     than the one acknowledged at it; a tombstone is finished with no
//     steps and its attempts; next_seq is above every seq acknowledged; the
//     other decisions are those of the crash test. The run checks that a
//     copy of its log with a lost write, with an event of a compacted
//     message put back (a partial compaction) or with a new event at a
//     compacted seq (a reused seq) is rejected, so the check can fail.
//   - Linearizability (linearizability_test.go, with the model in
//     model_test.go). Concurrent histories of receive, decide, start,
//     step, finish, fail, renew and release from many clients contending
//     on one conversation and a few message ids are checked with
//     github.com/anishathalye/porcupine against a sequential model of
//     SPEC §1–§2 and §7 that predicts every decision, resume_from, seq,
//     duplicate flag, token and error code with its details (busy's
//     holder and token, fenced's tokens, quarantine's attempts and error,
//     sequence_conflict's next seq, the stored fingerprint). Starts take
//     leases by worker, writes carry the tokens clients learned (some
//     stale), clients retry their acknowledged writes by expected_seq,
//     and the daemon runs with --max-attempts 2, so busy, takeovers,
//     fencing, quarantine and release all happen. Leases are a day long,
//     so none lapses during a run and the model needs no clock; the clock
//     of leases is the property test's (conversation/property_test.go).
//     Calls whose outcome is unknown (the daemon was killed under them)
//     may or may not have taken effect before the kill. Variants run
//     across one kill and restart (short) and 8 histories of 1000 calls
//     across 3 kills each (long). On failure the visualization is written
//     to $LIMINALD_LINEARIZABILITY_OUT (or a new directory under
//     os.TempDir(), which outlives the test) and its path reported.
//     model_test.go checks that the model accepts the protocol's own
//     sequential histories and rejects each wrong reply in them, and
//     TestModelMatchesDaemon that the real daemon answers those histories
//     exactly; each run checks that a copy of its real history in which
//     two appends claim one seq is rejected, so the check can fail.
//   - Several daemons on PostgreSQL (postgres_test.go, SPEC §10). Three
//     daemons, each on its own socket, share one database of a throwaway
//     PostgreSQL 15 (pgtest). Linearizability clients on one conversation
//     and crash-test workers on three more are spread over the daemons. A
//     third of the way through one daemon is killed with SIGKILL and
//     restarted; two thirds of the way PostgreSQL is stopped in immediate
//     mode and started again under the running daemons, which reconnect by
//     themselves. A write answered unavailable meanwhile is of unknown
//     outcome: sent before the crash, it took effect before it or never;
//     sent after, never. A killed daemon's calls are settled once
//     PostgreSQL serves none of its connections (a backend may commit what
//     it was given after its daemon died). At the end the history must be
//     linearizable across the daemons, every acknowledged write be in the
//     log (as in the crash test), pgstore.Check pass on the database
//     (the state its log replays to), and its events' positions be
//     contiguous and in seq order. Short: one history of 800 calls; long: 4
//     of 1500.
//
// Commands, from the module root:
//
//	go test ./reliability/                               # short: 3 SIGKILLs, 1 SIGTERM, 3 SIGKILLs under retention, 1 kill under linearizability, 1 kill and 1 PostgreSQL crash under 3 daemons
//	LIMINALD_LONG=1 go test -timeout 40m ./reliability/  # long: 20 SIGKILLs, 5 SIGTERMs, 30 SIGKILLs under retention, 8 histories x 3 kills
package reliability
