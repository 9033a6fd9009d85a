package sqlitestore

import (
	"context"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/storetest"
)

// mustOpenStore opens a store on a new database in tb's temporary directory.
// At cleanup it closes the store and checks the database: state == replay
// of the log, seqs contiguous, integrity ok.
func mustOpenStore(tb testing.TB, opts Options) *Store {
	tb.Helper()
	return mustOpenPath(tb, filepath.Join(tb.TempDir(), "test.db"), opts)
}

// mustOpenPath opens a store on the database at path, closed and checked at
// cleanup like mustOpenStore's.
func mustOpenPath(tb testing.TB, path string, opts Options) *Store {
	tb.Helper()
	s, err := Open(path, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() {
		// Every request of the test was answered: none is counted as
		// waiting for a stage, whatever path its batch took.
		if n := s.unstaged.Load(); n != 0 {
			tb.Errorf("%d requests counted as unstaged at the end", n)
		}
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		mustCheck(tb, path)
	})
	return s
}

// mustCheck fails tb if Check finds a problem in the database at path.
func mustCheck(tb testing.TB, path string) *Report {
	tb.Helper()
	r, err := Check(context.Background(), path, nil)
	if err != nil {
		tb.Fatalf("Check(%s): %v", path, err)
	}
	if len(r.Problems) > 0 {
		tb.Errorf("Check(%s) found problems:\n%s", path, strings.Join(r.Problems, "\n"))
	}
	return r
}

// write runs cmd and fails tb on an error.
func mustWrite(tb testing.TB, s *Store, cmd conversation.Command) conversation.Outcome {
	tb.Helper()
	if cmd.ExpectedSeq == 0 {
		cmd.ExpectedSeq = conversation.NoExpectedSeq
	}
	out, err := s.Write(context.Background(), cmd)
	if err != nil {
		tb.Fatalf("Write(%+v): %v", cmd, err)
	}
	return out
}

// requestsFor returns write requests for cmds, and a function that waits
// until every one of them is answered.
func requestsFor(cmds ...conversation.Command) ([]*request, func()) {
	var wg sync.WaitGroup
	wg.Add(len(cmds))
	reqs := make([]*request, len(cmds))
	for i, c := range cmds {
		reqs[i] = &request{cmd: c, then: func(conversation.Outcome, error) { wg.Done() }}
	}
	return reqs, wg.Wait
}

// testClock is the store's clock in a test: it moves only when told.
type testClock struct{ ms atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ms.Store(1_700_000_000_000)
	return c
}

func (c *testClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *testClock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

// mustLifecycle writes a whole lifecycle of message m of conversation
// conv: received, started, steps, finished.
func mustLifecycle(tb testing.TB, s *Store, conv, m string, steps int) {
	tb.Helper()
	for _, c := range storetest.Lifecycle(conv, m, steps) {
		mustWrite(tb, s, c)
	}
}

// mustCompact runs a compaction pass and fails tb on an error.
func mustCompact(tb testing.TB, s *Store) CompactResult {
	tb.Helper()
	r, err := s.Compact(context.Background())
	if err != nil {
		tb.Fatalf("Compact: %v", err)
	}
	return r
}
