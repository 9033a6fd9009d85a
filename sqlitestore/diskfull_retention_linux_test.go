package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"liminald/conversation"
)

// TestStore_CompactionDiskFullFS fills a real, small filesystem (a tmpfs
// mounted for the test; it needs root) and then runs compaction on it.
// Checkpoints are held off, so that compaction has to grow the WAL to
// write anything, as it does on a full disk whose WAL has no room left:
// compaction fails and stops (Compact answers unavailable, stats count
// the failure, no message is compacted in part), writes still get
// unavailable, reads work, no acknowledged write is lost, every decision
// is unchanged, and check passes. Once space is freed, without a restart,
// the write that failed lands, a pass compacts the messages and drops the
// tombstones that became eligible, and writes go on.
func TestStore_CompactionDiskFullFS(t *testing.T) {
	dir, filler := smallDisk(t)
	clock := newTestClock()
	path := filepath.Join(dir, "full.db")
	s := mustOpenPath(t, path, Options{Now: clock.Now, manualCompaction: true, Checkpoint: time.Hour,
		Retention: Retention{Finished: time.Minute, Tombstones: time.Hour}})
	ctx := context.Background()

	// Tombstones, which the pass on the full disk would drop.
	acked := make(map[int64]conversation.Command)
	const old = 3
	for i := range old {
		writeAcked(t, s, acked, receiveFinish(fmt.Sprintf("old%d", i))...)
	}
	clock.advance(2 * time.Minute)
	if r := mustCompact(t, s); r.Compacted != old {
		t.Fatalf("Compact = %+v, want the %d old messages compacted", r, old)
	}
	full, failed := fillUntilUnavailable(t, s)
	maps.Copy(acked, full)
	before := decisions(t, s, acked)

	// Every message is eligible now: the big ones to compact, the old
	// tombstones to drop.
	clock.advance(time.Hour)
	r, err := s.Compact(ctx)
	if !errors.Is(err, conversation.ErrUnavailable) {
		t.Fatalf("Compact on a full disk = %+v, %v; want unavailable", r, err)
	}
	st, err := s.Stats(ctx)
	if err != nil || st.CompactionPasses != 2 || st.CompactionFailures != 1 || st.Dropped != 0 {
		t.Fatalf("Stats = %+v, %v; want 2 passes, the second failed, no tombstone dropped", st, err)
	}
	if _, err := s.Write(ctx, failed); !errors.Is(err, conversation.ErrUnavailable) {
		t.Errorf("Write while full: %v, want unavailable", err)
	}
	sameDecisions(t, s, acked, before, false, "")
	if n := verifyCompacted(t, s, acked); int64(n) != old+r.Compacted {
		t.Fatalf("%d tombstones; %d old ones, and the failed pass compacted %d", n, old, r.Compacted)
	}
	mustCheck(t, path)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	o, err := s.Write(ctx, failed)
	if err != nil || !o.Append {
		t.Fatalf("Write after freeing space = %+v, %v; want an append", o, err)
	}
	acked[o.Seq] = failed
	r2 := mustCompact(t, s)
	if r2.Dropped != old || r.Compacted+r2.Compacted == 0 {
		t.Fatalf("Compact after freeing space = %+v (after %+v); want the %d old tombstones dropped and the big messages compacted", r2, r, old)
	}
	st, err = s.Stats(ctx)
	if err != nil || st.CompactionFailures != 1 || st.Tombstones != r.Compacted+r2.Compacted || !st.Horizon.Set {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
	for seq, c := range acked {
		if strings.HasPrefix(c.MessageID, "old") {
			delete(acked, seq) // dropped: forgotten, checked below
		}
	}
	if n := verifyCompacted(t, s, acked); int64(n) != st.Tombstones {
		t.Fatalf("%d tombstones among the acknowledged messages, %d in the store", n, st.Tombstones)
	}
	sameDecisions(t, s, acked, before, true, failed.MessageID)
	sent := conversation.Delivery{SentAt: 1, HasSentAt: true}
	if d, err := s.Decide(ctx, "c", "old0", sent); err != nil || d.Action != conversation.Forgotten {
		t.Fatalf("Decide(old0) sent before its tombstone was dropped = %+v, %v; want forgotten", d, err)
	}
	if o2 := mustWrite(t, s, cmd(conversation.OpReceive, "after")); !o2.Append || o2.Seq != o.Seq+1 {
		t.Fatalf("receive after = %+v; want an append at seq %d", o2, o.Seq+1)
	}
	t.Logf("%d acknowledged appends; on the full disk the pass failed after compacting %d messages (%v); with space, %d compacted and %d tombstones dropped",
		len(acked), r.Compacted, r.Took, r2.Compacted, r2.Dropped)
}
