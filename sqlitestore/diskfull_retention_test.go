package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
)

// writeAcked writes cmds in order and adds each append to acked, by seq.
func writeAcked(t *testing.T, s *Store, acked map[int64]conversation.Command, cmds ...conversation.Command) {
	t.Helper()
	for _, c := range cmds {
		if o := mustWrite(t, s, c); o.Append {
			acked[o.Seq] = c
		}
	}
}

// decisions returns the decision of every message of acked.
func decisions(t *testing.T, s *Store, acked map[int64]conversation.Command) map[string]conversation.Decision {
	t.Helper()
	ds := make(map[string]conversation.Decision)
	for _, c := range acked {
		if _, ok := ds[c.MessageID]; ok {
			continue
		}
		d, err := s.Decide(context.Background(), "c", c.MessageID, conversation.Delivery{})
		if err != nil {
			t.Fatalf("Decide(%s): %v", c.MessageID, err)
		}
		ds[c.MessageID] = d
	}
	return ds
}

// sameDecisions checks that every decision of before, but that of
// message except, holds in s but for what compaction may change: a
// finished message may be skipped as compacted; so must every one
// finished when compacted is set.
func sameDecisions(t *testing.T, s *Store, acked map[int64]conversation.Command, before map[string]conversation.Decision, compacted bool, except string) {
	t.Helper()
	for id, now := range decisions(t, s, acked) {
		was := before[id]
		if id == except {
			continue
		}
		if was.Action == conversation.Skip && (now.Compacted || compacted) {
			was.Compacted, was.Rule = true, conversation.RuleCompacted
		}
		if now != was {
			t.Errorf("Decide(%s) = %+v, was %+v", id, now, was)
		}
	}
}

// verifyCompacted checks every acknowledged append of acked (conversation
// "c", by seq) as compaction may have left it: its event is in the log at
// its seq, or its message is a tombstone of which no event is left, and
// which keeps the seq its finish was acknowledged at. It returns the
// number of tombstones among the messages of acked.
func verifyCompacted(t *testing.T, s *Store, acked map[int64]conversation.Command) int {
	t.Helper()
	ctx := context.Background()
	at := make(map[int64]conversation.Event)
	left := make(map[string]int)
	for _, e := range mustEvents(t, s, "c") {
		at[e.Seq] = e
		left[e.MessageID]++
	}
	tombs := make(map[string]bool)
	for seq, c := range acked {
		m, err := s.Message(ctx, "c", c.MessageID)
		if err != nil || m == nil {
			t.Fatalf("Message(%s) = %v, %v: acknowledged %v at seq %d", c.MessageID, m, err, c.Op, seq)
		}
		e, ok := at[seq]
		switch {
		case m.Compacted && left[c.MessageID] > 0:
			t.Fatalf("%s is a tombstone, but %d of its events are left: a partial compaction", c.MessageID, left[c.MessageID])
		case m.Compacted && ok:
			t.Fatalf("%s is a tombstone, but seq %d, where its %v was acknowledged, holds %v of %s", c.MessageID, seq, c.Op, e.Type, e.MessageID)
		case m.Compacted && c.Op == conversation.OpFinish && m.LastSeq != seq:
			t.Fatalf("the tombstone of %s keeps seq %d; its finish was acknowledged at seq %d", c.MessageID, m.LastSeq, seq)
		case m.Compacted:
			tombs[c.MessageID] = true
		case !ok:
			t.Fatalf("acknowledged %v of %s at seq %d is lost: it is not in the log, and %s is %v", c.Op, c.MessageID, seq, c.MessageID, m.Status)
		case e.MessageID != c.MessageID || conversation.Op(e.Type) != c.Op || string(e.Output) != string(c.Output):
			t.Fatalf("seq %d: stored %v of %s, acknowledged %v of %s", seq, e.Type, e.MessageID, c.Op, c.MessageID)
		}
	}
	return len(tombs)
}

// receiveFinish is a message's shortest lifecycle: received, started,
// finished, three small events.
func receiveFinish(m string) []conversation.Command {
	return []conversation.Command{cmd(conversation.OpReceive, m), cmd(conversation.OpStart, m), cmd(conversation.OpFinish, m)}
}

// TestStore_CompactionDiskFull runs compaction in the batch of a write
// that finds the database full (capped by max_page_count, the way a full
// disk looks to SQLite, on any machine): the batch fails whole, so
// compaction fails and stops (Compact answers unavailable, stats count
// the failure), and nothing of it stays: no acknowledged write is lost,
// every decision is unchanged, and check passes. The writer is not left
// broken: a pass alone then compacts the messages that became eligible,
// which frees pages, and the write that failed lands, without a restart.
func TestStore_CompactionDiskFull(t *testing.T) {
	clock := newTestClock()
	path := filepath.Join(t.TempDir(), "capped.db")
	// hold makes the writer wait, once, after it took the first request
	// of a batch: until release, so that the requests queued meanwhile
	// join that batch.
	var hold atomic.Bool
	held, release := make(chan struct{}), make(chan struct{})
	s := mustOpenPath(t, path, Options{maxPageCount: 64, Now: clock.Now, manualCompaction: true,
		Retention: Retention{Finished: time.Minute},
		gather: func() {
			if hold.CompareAndSwap(true, false) {
				held <- struct{}{}
				<-release
			}
		}})
	ctx := context.Background()
	acked := make(map[int64]conversation.Command)
	const old = 3 // eligible when the disk is full; small, so that compacting them frees no page
	for i := range old {
		writeAcked(t, s, acked, receiveFinish(fmt.Sprintf("old%d", i))...)
	}
	clock.advance(2 * time.Minute)
	full, failed := fillUntilUnavailable(t, s)
	maps.Copy(acked, full)
	if failed.Op != conversation.OpStep {
		t.Fatalf("the write that found the disk full is a %v; the test wants a step, which needs a page", failed.Op)
	}
	before := decisions(t, s, acked)
	if _, err := s.Write(ctx, failed); !errors.Is(err, conversation.ErrUnavailable) {
		t.Fatalf("Write while full: %v, want unavailable", err)
	}

	// The write that finds the disk full, then the compaction of the old
	// messages, in one batch.
	hold.Store(true)
	var writeErr error
	written := make(chan struct{})
	s.WriteAsync(ctx, failed, func(_ conversation.Outcome, err error) { writeErr = err; close(written) })
	<-held
	type pass struct {
		r   CompactResult
		err error
	}
	passed := make(chan pass, 1)
	go func() {
		r, err := s.Compact(ctx)
		passed <- pass{r, err}
	}()
	for deadline := time.Now().Add(10 * time.Second); s.unstaged.Load() < 1+old; {
		if time.Now().After(deadline) {
			t.Fatalf("the compaction of %d messages was not queued after 10 s: %d requests are", old, s.unstaged.Load()-1)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
	close(release)
	<-written
	p := <-passed
	if !errors.Is(writeErr, conversation.ErrUnavailable) {
		t.Errorf("the write in the batch: %v, want unavailable", writeErr)
	}
	if !errors.Is(p.err, conversation.ErrUnavailable) || p.r.Compacted != 0 {
		t.Fatalf("Compact on a full disk = %+v, %v; want nothing compacted and unavailable", p.r, p.err)
	}
	st, err := s.Stats(ctx)
	if err != nil || st.CompactionPasses != 1 || st.CompactionFailures != 1 || st.Compacted != 0 || st.Tombstones != 0 {
		t.Fatalf("Stats = %+v, %v; want 1 pass, failed, nothing compacted", st, err)
	}
	sameDecisions(t, s, acked, before, false, "")
	if n := verifyCompacted(t, s, acked); n != 0 {
		t.Fatalf("%d tombstones after a failed pass", n)
	}
	mustCheck(t, path)

	// Once the big messages are eligible too, a pass alone compacts them
	// all and frees their pages; the write that failed lands.
	clock.advance(2 * time.Minute)
	r := mustCompact(t, s)
	o, err := s.Write(ctx, failed)
	if err != nil || !o.Append {
		t.Fatalf("Write after compaction freed pages = %+v, %v; want an append", o, err)
	}
	acked[o.Seq] = failed
	st, err = s.Stats(ctx)
	if err != nil || st.CompactionFailures != 1 || st.Compacted != r.Compacted || r.Compacted <= old {
		t.Fatalf("after the pass %+v: Stats = %+v, %v", r, st, err)
	}
	if n := verifyCompacted(t, s, acked); int64(n) != r.Compacted {
		t.Fatalf("%d tombstones among the acknowledged messages, %d compacted", n, r.Compacted)
	}
	sameDecisions(t, s, acked, before, true, failed.MessageID)
	if d, err := s.Decide(ctx, "c", failed.MessageID, conversation.Delivery{}); err != nil || d.Action != conversation.Resume || d.ResumeFrom != int64(failed.StepIndex)+1 {
		t.Fatalf("Decide(%s) after its step %d landed = %+v, %v", failed.MessageID, failed.StepIndex, d, err)
	}
	for seq := range acked {
		if seq >= o.Seq && acked[seq].MessageID != failed.MessageID {
			t.Fatalf("the write after compaction landed at seq %d, at or below acknowledged seq %d", o.Seq, seq)
		}
	}
	t.Logf("%d acknowledged appends; the pass in the full batch failed; alone, it compacted %d messages and the write that failed landed at seq %d",
		len(acked), r.Compacted, o.Seq)
}
