package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"liminald/conversation"
)

// writeLifecycle writes a whole lifecycle of message m of conversation
// conv: received, started, steps, finished.
func writeLifecycle(s *Store, conv, m string, steps int) error {
	c := func(op conversation.Op) conversation.Command {
		return conversation.Command{Op: op, Conversation: conv, MessageID: m, ExpectedSeq: conversation.NoExpectedSeq}
	}
	cmds := []conversation.Command{c(conversation.OpReceive), c(conversation.OpStart)}
	for i := range steps {
		st := c(conversation.OpStep)
		st.StepIndex, st.Output = uint32(i), []byte(fmt.Sprintf("%s/%d", m, i))
		cmds = append(cmds, st)
	}
	for _, cmd := range append(cmds, c(conversation.OpFinish)) {
		if _, err := s.Write(context.Background(), cmd); err != nil {
			return fmt.Errorf("%v of %s/%s: %w", cmd.Op, conv, m, err)
		}
	}
	return nil
}

func mustLifecycle(tb testing.TB, s *Store, conv, m string, steps int) {
	tb.Helper()
	if err := writeLifecycle(s, conv, m, steps); err != nil {
		tb.Fatal(err)
	}
}

func mustCompact(tb testing.TB, s *Store) CompactResult {
	tb.Helper()
	r, err := s.Compact(context.Background())
	if err != nil {
		tb.Fatalf("Compact: %v", err)
	}
	return r
}

// TestStore_Compaction compacts finished messages older than
// retain_finished and checks what SPEC §8 promises of them: redeliveries
// skip with compacted, writes answer as for a finished message, state is
// finished with no steps, reads skip the gap, seqs are not reused, and
// check proves the state from the events left plus the tombstones.
func TestStore_Compaction(t *testing.T) {
	clock := newTestClock()
	path := filepath.Join(t.TempDir(), "test.db")
	s := mustOpenPath(t, path, Options{Now: clock.Now, manualCompaction: true})
	ctx := context.Background()
	s.SetRetention(Retention{Finished: time.Hour})

	mustLifecycle(t, s, "c", "old", 2) // seqs 0-4
	mustWrite(t, s, cmd(conversation.OpReceive, "open"))
	clock.advance(30 * time.Minute)
	mustLifecycle(t, s, "c", "young", 1) // seqs 6-9
	clock.advance(31 * time.Minute)

	if r := mustCompact(t, s); r.Compacted != 1 {
		t.Fatalf("Compact = %+v, want 1 message compacted (old; young finished 31 minutes ago)", r)
	}
	if r := mustCompact(t, s); r.Compacted != 0 {
		t.Fatalf("a second pass compacted %d more", r.Compacted)
	}
	d, err := s.Decide(ctx, "c", "old", conversation.Delivery{})
	if err != nil || d.Action != conversation.Skip || !d.Compacted {
		t.Fatalf("Decide(old) = %+v, %v; want skip, compacted", d, err)
	}
	o, err := s.Write(ctx, cmd(conversation.OpReceive, "old"))
	if err != nil || o.Append || o.Decision.Action != conversation.Skip || !o.Decision.Compacted {
		t.Fatalf("receive of old = %+v, %v; want skip, compacted, nothing appended", o, err)
	}
	if o := mustWrite(t, s, cmd(conversation.OpFinish, "old")); !o.Duplicate || o.Seq != 4 {
		t.Fatalf("finish of old = %+v, want a duplicate of seq 4", o)
	}
	if _, err := s.Write(ctx, cmd(conversation.OpStart, "old")); !errors.Is(err, conversation.ErrAlreadyFinished) {
		t.Fatalf("start of old: %v, want already_finished", err)
	}
	m, err := s.Message(ctx, "c", "old")
	if err != nil || m == nil || !m.Compacted || m.Status != conversation.StatusFinished || m.LastSeq != 4 || m.Attempts != 1 {
		t.Fatalf("Message(old) = %+v, %v", m, err)
	}
	if steps, err := s.Steps(ctx, "c", "old"); err != nil || len(steps) != 0 {
		t.Fatalf("Steps(old) = %v, %v; want none", steps, err)
	}
	if ev, err := s.MessageEvents(ctx, "c", m, 100); err != nil || len(ev) != 0 {
		t.Fatalf("MessageEvents(old) = %v, %v; want none", ev, err)
	}
	events, err := s.Events(ctx, "c", 0, 100)
	if err != nil || len(events) != 5 || events[0].Seq != 5 || events[0].MessageID != "open" {
		t.Fatalf("Events from 0 = %v, %v; want the 5 events from seq 5 on", events, err)
	}
	sum, err := s.Conversation(ctx, "c")
	if err != nil || sum.Next != 10 || sum.Compacted != 1 || sum.Counts.Finished != 2 || sum.Horizon.Set {
		t.Fatalf("Conversation(c) = %+v, %v", sum, err)
	}
	st, err := s.Stats(ctx)
	if err != nil || st.Events != 5 || st.Messages != 3 || st.Compacted != 1 || st.Tombstones != 1 || st.CompactionPasses != 2 {
		t.Fatalf("Stats = %+v, %v", st, err)
	}

	// young goes too once it is old enough; the open message never.
	clock.advance(30 * time.Minute)
	if r := mustCompact(t, s); r.Compacted != 1 {
		t.Fatalf("Compact = %+v, want young compacted", r)
	}
	if o := mustWrite(t, s, cmd(conversation.OpReceive, "new")); o.Seq != 10 {
		t.Fatalf("a new message after compaction appended at seq %d, want 10: seqs are never reused", o.Seq)
	}
	if r := mustCheck(t, path); r.Tombstones != 2 || r.Events != 2 {
		t.Fatalf("Check = %+v, want 2 tombstones and 2 events", r)
	}
}

// TestStore_Horizon drops tombstones older than retain_tombstones and
// checks the horizon: forgotten_before, the forgotten decision for a
// message sent before it, and a start that carries it.
func TestStore_Horizon(t *testing.T) {
	clock := newTestClock()
	path := filepath.Join(t.TempDir(), "test.db")
	s := mustOpenPath(t, path, Options{Now: clock.Now, manualCompaction: true})
	ctx := context.Background()
	s.SetRetention(Retention{Finished: time.Minute, Tombstones: time.Hour})

	sentA := clock.ms.Load()
	mustLifecycle(t, s, "c", "a", 1)
	finishedA := clock.ms.Load()
	clock.advance(2 * time.Minute)
	if r := mustCompact(t, s); r.Compacted != 1 || r.Dropped != 0 {
		t.Fatalf("Compact = %+v, want a compacted, nothing dropped", r)
	}
	clock.advance(time.Hour)
	if r := mustCompact(t, s); r.Dropped != 1 {
		t.Fatalf("Compact = %+v, want a's tombstone dropped", r)
	}
	sum, err := s.Conversation(ctx, "c")
	want := conversation.Horizon{Before: finishedA, Set: true}
	if err != nil || sum.Horizon != want || sum.Counts.Total() != 0 || sum.Next != 4 {
		t.Fatalf("Conversation(c) = %+v, %v; want horizon %+v, no message, next seq 4", sum, err, want)
	}
	if st, _ := s.Stats(ctx); st.Dropped != 1 || st.Tombstones != 0 || st.Messages != 0 || st.Horizon != want {
		t.Fatalf("Stats = %+v", st)
	}

	sent := func(ms int64) conversation.Delivery { return conversation.Delivery{SentAt: ms, HasSentAt: true} }
	if d, err := s.Decide(ctx, "c", "a", sent(sentA)); err != nil || d.Action != conversation.Forgotten || d.Horizon != want {
		t.Fatalf("Decide(a, sent_at before the horizon) = %+v, %v; want forgotten", d, err)
	}
	if d, err := s.Decide(ctx, "c", "a", conversation.Delivery{}); err != nil || d.Action != conversation.Start || d.Horizon != want {
		t.Fatalf("Decide(a) without sent_at = %+v, %v; want start carrying the horizon", d, err)
	}
	r := cmd(conversation.OpReceive, "a")
	r.SentAt, r.HasSentAt = sentA, true
	if o, err := s.Write(ctx, r); err != nil || o.Append || o.Decision.Action != conversation.Forgotten {
		t.Fatalf("receive(a, sent_at before the horizon) = %+v, %v; want forgotten, nothing appended", o, err)
	}
	r.SentAt = clock.ms.Load()
	if o, err := s.Write(ctx, r); err != nil || !o.Append || o.Seq != 4 || o.Decision.Action != conversation.Start || o.Decision.Horizon != want {
		t.Fatalf("receive(a, sent_at after the horizon) = %+v, %v; want start at seq 4 with the horizon", o, err)
	}
	// The horizon survives a restart: it is in the database.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenPath(t, path, Options{Now: clock.Now, manualCompaction: true})
	if d, err := s.Decide(ctx, "c", "b", sent(sentA)); err != nil || d.Action != conversation.Forgotten {
		t.Fatalf("after a restart, Decide(b, sent_at before the horizon) = %+v, %v; want forgotten", d, err)
	}
}

// TestStore_CompactionInterleaves compacts over and over while writers
// write lifecycles, on a clock that moves a millisecond a reading, and
// checks that every write is answered, the database checks (at cleanup),
// and everything eligible went.
func TestStore_CompactionInterleaves(t *testing.T) {
	clock := newTestClock()
	ticking := func() time.Time { clock.advance(time.Millisecond); return clock.Now() }
	path := filepath.Join(t.TempDir(), "test.db")
	s := mustOpenPath(t, path, Options{Now: ticking, Retention: Retention{Finished: 5 * time.Millisecond}, manualCompaction: true})
	ctx := context.Background()
	const writers, messages = 4, 50
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			var err error
			for i := 0; i < messages && err == nil; i++ {
				err = writeLifecycle(s, fmt.Sprintf("c%d", w%2), fmt.Sprintf("w%d-m%d", w, i), 2)
			}
			errs <- err
		}()
	}
	var compacted int64
	for left := writers; left > 0; {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
			left--
		default:
			r := mustCompact(t, s)
			compacted += r.Compacted
		}
	}
	if compacted == 0 {
		t.Fatal("no pass compacted anything while the writers wrote")
	}
	clock.advance(time.Second)
	mustCompact(t, s)
	st, err := s.Stats(ctx)
	if err != nil || st.Events != 0 || st.Tombstones != writers*messages {
		t.Fatalf("Stats = %+v, %v; want every message compacted", st, err)
	}
}
