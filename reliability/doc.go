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
//     moments and restarted on the same database. Clients treat a broken
//     connection as an unknown outcome, reconnect after the restart, and
//     continue the same messages through receive and resume_from, so
//     histories span kills. At the end every acknowledged write is in the
//     log at its seq with the same type, message, step index and output,
//     seqs are contiguous from 0, `liminald check --db D --json` passes,
//     and decide agrees with the acknowledged history of every message
//     (finished: skip; otherwise resume from at least the highest
//     acknowledged step + 1). Every non-duplicate acknowledgement has a
//     seq of its own, and an event no reply acknowledged must belong to a
//     message one of whose calls broke. A SIGTERM variant checks the
//     daemon exits 0 under load, loses nothing it acknowledged, and
//     answered every write it committed (no event without its
//     acknowledgement).
//   - Linearizability (linearizability_test.go, with the model in
//     model_test.go). Concurrent histories of receive, decide, start, step
//     and finish from many clients contending on one conversation and a
//     few message ids are checked with github.com/anishathalye/porcupine
//     against a sequential model of SPEC §1–§2 that predicts every
//     decision, resume_from, seq, duplicate flag and error code. Calls
//     whose outcome is unknown (the daemon was killed under them) may or
//     may not have taken effect before the kill. Variants run across one
//     kill and restart (short) and 8 histories across 3 kills each
//     (long). On failure the visualization is written to
//     $LIMINALD_LINEARIZABILITY_OUT (or a new directory under os.TempDir(),
//     which outlives the test) and its path reported. model_test.go checks
//     that the model rejects histories that break the rules, and each run
//     checks that a copy of its real history with one seq moved is
//     rejected, so the check can fail.
//
// Commands, from the module root:
//
//	go test ./reliability/                               # short: 3 SIGKILLs, 1 SIGTERM, 1 kill under linearizability
//	LIMINALD_LONG=1 go test -timeout 30m ./reliability/  # long: 20 SIGKILLs, 5 SIGTERMs, 8 histories x 3 kills
package reliability
