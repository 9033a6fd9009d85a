package pgstore_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/daemon"
	"liminald/ipc"
	"liminald/pgstore"
	"liminald/pgtest"
	"liminald/storetest"
)

// TestConformance runs the suite every store passes against PostgreSQL:
// one throwaway server, a new database for each store the suite opens, the
// database's clock moved by the suite's offset.
func TestConformance(t *testing.T) {
	srv := pgtest.Start(t)
	var n atomic.Int64
	storetest.Run(t, func(tb testing.TB, c *storetest.Clock) storetest.Harness {
		return openAt(tb, srv.CreateDatabase(fmt.Sprintf("conformance_%d", n.Add(1))), c.Offset)
	})
}

// harness is a store under the conformance suite: the store as the daemon
// serves it, and the store itself for the settings and compaction.
type harness struct {
	ipc.Store
	s      *pgstore.Store
	tb     testing.TB
	url    string
	offset func() time.Duration
}

func openAt(tb testing.TB, url string, offset func() time.Duration) *harness {
	s := pgstore.OpenConformant(tb, url, offset)
	return &harness{Store: daemon.ServedPostgres(s), s: s, tb: tb, url: url, offset: offset}
}

func (h *harness) SetMaxAttempts(n int64) { h.s.SetMaxAttempts(n) }

func (h *harness) SetRetention(finished, tombstones time.Duration) {
	h.s.SetRetention(conversation.Retention{Finished: finished, Tombstones: tombstones})
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
	return openAt(h.tb, h.url, h.offset)
}

func (h *harness) Close() error { return h.s.Close() }
