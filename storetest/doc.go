// Package storetest is the behaviour every store of liminald must show,
// written once against the interface the server serves (ipc.Store): the
// redelivery decision and the write rules of SPEC §1–§2, events read back
// by seq and by pos and pushed to subscriptions (§3), leases, fencing,
// attempts, quarantine, release and fingerprints (§7), and retention (§8).
// bbolt and etcd keep such shared suites; sqlitestore and pgstore each run
// this one from a one-line test.
//
// # Plugging a store in
//
// A store's external test package writes a Factory and calls Run with it:
//
//	func TestConformance(t *testing.T) { storetest.Run(t, openHarness) }
//
// The Factory, func(t testing.TB, clock *storetest.Clock) Harness, opens
// a new, empty store for t, registers its Close with t.Cleanup, and
// returns it as a Harness: the ipc.Store (the store itself, or the adapter
// the daemon serves it through) and what a test must control beside it:
//
//	SetMaxAttempts(n int64)                           // max_attempts, live
//	SetRetention(finished, tombstones time.Duration)  // retain_finished, retain_tombstones, live
//	Compact(ctx context.Context) error                // one compaction pass, now
//	Restart() Harness                                 // close, and open again on the same database
//	Close() error                                     // may be called more than once
//
// The store compacts only when Compact is called: turn its background
// compaction off, so that what a test counts is what its own passes did.
// Restart opens the new store on the same database and the same Clock,
// with the default settings (the test sets again what it needs), and
// closes it at cleanup as the Factory's. Writes after Close get
// conversation.ErrClosed.
//
// The tests run in parallel, so each call of the Factory needs a database
// of its own: a new file in t.TempDir() for SQLite, a new database or
// schema for PostgreSQL. The suite reads the store's figures (Stats) as
// counting only what the test did. A cleanup that checks the database
// (sqlitestore's runs Check: state == replay of the log) makes every test
// check it for free.
//
// # Time
//
// The suite never sleeps: it moves a Clock, which a store takes in one of
// two ways.
//
//   - As its clock: sqlitestore's Options.Now = clock.Now. Time stands
//     still between two moves, and the suite checks times exactly.
//   - As an offset: a store whose clock is its database's (pgstore, SPEC
//     §10) adds clock.Offset() to that clock wherever it reads it: commit
//     ts, leases, quarantine, compaction's cutoffs, Moment (pgstore's
//     Options.ClockOffset = clock.Offset). Time runs on between two moves,
//     and the suite allows the times a store answers (a busy's
//     retry_after_ms, say) two seconds of slack.
//
// The suite tells the two apart at the start of each test, by whether the
// store's Moment is the Clock's Now, and judges every time by the store's
// Moment and the ts of its events, never by the wall clock. sqlitestore
// runs the suite both ways, so a change to the suite that only holds on a
// standing clock fails there first.
package storetest
