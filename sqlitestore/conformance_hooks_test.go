package sqlitestore

import (
	"testing"
	"time"
)

// OpenConformant opens a store on the database at path for the
// conformance suite (package storetest): on clock now, compacting only
// when Compact is called (the suite's tests count what their own passes
// did), closed and checked at tb's cleanup as mustOpenPath's are.
func OpenConformant(tb testing.TB, path string, now func() time.Time) *Store {
	tb.Helper()
	return mustOpenPath(tb, path, Options{Now: now, manualCompaction: true})
}
