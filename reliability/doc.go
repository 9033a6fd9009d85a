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
//
// Commands, from the module root:
//
//	go test ./reliability/                               # short: 3 SIGKILLs, 1 SIGTERM, 1 kill under linearizability
//	LIMINALD_LONG=1 go test -timeout 30m ./reliability/  # long: 20 SIGKILLs, 5 SIGTERMs, 8 histories x 3 kills
package reliability
