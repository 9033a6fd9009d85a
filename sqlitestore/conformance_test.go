package sqlitestore_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"liminald/daemon"
	"liminald/ipc"
	"liminald/sqlitestore"
	"liminald/storetest"
)

func TestConformance(t *testing.T) { storetest.Run(t, opener(standing)) }

// TestConformance_RunningClock runs the suite on a clock that runs on
// between the suite's moves, as the database's clock of a PostgreSQL store
// does: the suite's checks of time must hold for such a store too.
func TestConformance_RunningClock(t *testing.T) { storetest.Run(t, opener(running)) }

// standing makes the suite's clock the store's clock.
func standing(c *storetest.Clock) func() time.Time { return c.Now }

// running adds the suite's moves to the wall clock.
func running(c *storetest.Clock) func() time.Time {
	return func() time.Time { return time.Now().Add(c.Offset()) }
}

// opener returns the factory of stores on new databases in the test's
// temporary directory, on the clock that clock makes of the suite's; each
// is closed and checked at cleanup (state == replay of the log plus the
// tombstones, seqs in order, integrity ok).
func opener(clock func(*storetest.Clock) func() time.Time) storetest.Factory {
	return func(tb testing.TB, c *storetest.Clock) storetest.Harness {
		return openAt(tb, filepath.Join(tb.TempDir(), "conformance.db"), clock(c))
	}
}

// harness is a store under the conformance suite: the store as the daemon
// serves it, and the store itself for the settings and compaction.
type harness struct {
	ipc.Store
	s   *sqlitestore.Store
	tb  testing.TB
	now func() time.Time
}

func openAt(tb testing.TB, path string, now func() time.Time) *harness {
	s := sqlitestore.OpenConformant(tb, path, now)
	return &harness{Store: daemon.Served(s), s: s, tb: tb, now: now}
}

func (h *harness) SetMaxAttempts(n int64) { h.s.SetMaxAttempts(n) }

func (h *harness) SetRetention(finished, tombstones time.Duration) {
	h.s.SetRetention(sqlitestore.Retention{Finished: finished, Tombstones: tombstones})
}

func (h *harness) Compact(ctx context.Context) error {
	_, err := h.s.Compact(ctx)
	return err
}

func (h *harness) Restart() storetest.Harness {
	h.tb.Helper()
	if err := h.s.Close(); err != nil {
		h.tb.Fatalf("Close: %v", err)
	}
	return openAt(h.tb, h.s.Path(), h.now)
}

func (h *harness) Close() error { return h.s.Close() }
