package pgstore

import (
	"context"
	"strings"
	"testing"
	"time"
)

// OpenConformant opens a store on the database at url for the conformance
// suite (package storetest): its clock the database's plus offset,
// compacting only when Compact is called (the suite's tests count what
// their own passes did). At tb's cleanup it is closed (the suite may have
// closed it already) and the database checked: state == replay of the
// remaining events plus the tombstones, totals as the tables count.
func OpenConformant(tb testing.TB, url string, offset func() time.Duration) *Store {
	tb.Helper()
	s, err := Open(context.Background(), url, Options{ClockOffset: offset, manualCompaction: true})
	if err != nil {
		tb.Fatalf("Open(%s): %v", url, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		r, err := Check(context.Background(), url, nil)
		if err != nil {
			tb.Fatalf("Check: %v", err)
		}
		if len(r.Problems) > 0 {
			tb.Errorf("Check found problems:\n%s", strings.Join(r.Problems, "\n"))
		}
	})
	return s
}
