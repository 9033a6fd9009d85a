package pgstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"liminald/conversation"
)

// mustLifecycle writes a whole lifecycle of message m of conversation
// conv: received, started, steps, finished.
func mustLifecycle(tb testing.TB, s *Store, conv, m string, steps int) {
	tb.Helper()
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
		mustWrite(tb, s, cmd)
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

// TestStore_Retention compacts finished messages older than
// retain_finished and drops tombstones older than retain_tombstones, at
// the database's clock, and checks what SPEC §8 promises of them.
func TestStore_Retention(t *testing.T) {
	db := newTestDB(t)
	clock := &offsetClock{}
	s := mustOpen(t, db, Options{ClockOffset: clock.offset, manualCompaction: true})
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
	if d, err := s.Decide(ctx, "c", "old", conversation.Delivery{}); err != nil || d.Action != conversation.Skip || !d.Compacted {
		t.Fatalf("Decide(old) = %+v, %v; want skip, compacted", d, err)
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

	// The tombstone of old goes after retain_tombstones, and the horizon
	// moves to its finished_at.
	finishedAt := m.LastTS
	s.SetRetention(Retention{Finished: time.Hour, Tombstones: 2 * time.Hour})
	clock.advance(time.Hour)
	if r := mustCompact(t, s); r.Dropped != 1 || r.Compacted != 1 {
		t.Fatalf("Compact = %+v, want young compacted and the tombstone of old dropped", r)
	}
	h, err := s.Horizon(ctx, "c")
	if err != nil || !h.Set || h.Before != finishedAt {
		t.Fatalf("Horizon = %+v, %v; want forgotten_before %d", h, err, finishedAt)
	}
	if d, err := s.Decide(ctx, "c", "old", conversation.Delivery{SentAt: finishedAt - 1, HasSentAt: true}); err != nil || d.Action != conversation.Forgotten {
		t.Fatalf("Decide(old, sent before the horizon) = %+v, %v; want forgotten", d, err)
	}
	if o := mustWrite(t, s, cmd(conversation.OpReceive, "new")); o.Seq != 10 || !o.Decision.Horizon.Set {
		t.Fatalf("receive of a new message = %+v, want seq 10 (never reused) and a start with the horizon", o)
	}
	st, err = s.Stats(ctx)
	if err != nil || st.Tombstones != 1 || st.Dropped != 1 || st.Messages != 3 || st.Horizon != h {
		t.Fatalf("Stats = %+v, %v", st, err)
	}
}
