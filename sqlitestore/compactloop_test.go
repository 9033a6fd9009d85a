package sqlitestore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"liminald/conversation"
)

// TestStore_CompactsInTheBackground: with retention set and no pass run by
// the test, the store's own loop compacts a finished message and then drops
// its tombstone, at its clock, soon after each became eligible (SPEC §8:
// within max(1 s, a tenth of the setting); the test allows more, as a
// loaded machine may run it late, and fails only if the loop does not run).
func TestStore_CompactsInTheBackground(t *testing.T) {
	path := filepath.Join(t.TempDir(), "test.db")
	s := mustOpenPath(t, path, Options{Retention: conversation.Retention{Finished: time.Millisecond}})
	mustLifecycle(t, s, "c", "m", 1)
	ctx := context.Background()
	waitFor := func(what string, done func(Stats) bool) time.Duration {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			st, err := s.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if done(st) {
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				t.Fatalf("the background loop did not %s in 10 s: %+v", what, st)
			}
		}
	}
	took := waitFor("compact the message", func(st Stats) bool { return st.Tombstones == 1 })
	t.Logf("compacted %v after the finish", took)
	if d, err := s.Decide(ctx, "c", "m", conversation.Delivery{}); err != nil || !d.Compacted {
		t.Fatalf("Decide = %+v, %v; want skip, compacted", d, err)
	}
	// A live change wakes the loop: the tombstone goes once it is older
	// than the new setting.
	s.SetRetention(conversation.Retention{Finished: time.Millisecond, Tombstones: time.Millisecond})
	took = waitFor("drop the tombstone", func(st Stats) bool { return st.Dropped == 1 })
	t.Logf("dropped %v after the change", took)
}
