package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"liminald/conversation"
)

// testCompaction compacts finished messages older than retain_finished
// and checks what SPEC §8 promises of them: redeliveries skip with
// compacted, the fingerprint outlives them, writes answer as for a
// finished message, state is finished with no steps and no events, the
// messages list keeps them, reads skip the gap, seqs are not reused, and
// the figures count them. Nothing is compacted while retention keeps all.
func testCompaction(t *testing.T, f Factory) {
	e := open(t, f)
	old := Lifecycle("c", "old", 2) // seqs 0-4
	old[0].Fingerprint = "sha256:old"
	for _, c := range old {
		e.mustWrite(c)
	}
	finishedAt := e.event("c", 4).TS
	e.mustWrite(Cmd(conversation.OpReceive, "open")) // seq 5
	e.clock.Advance(30 * time.Minute)
	e.mustLifecycle("c", "young", 1) // seqs 6-9
	e.clock.Advance(31 * time.Minute)
	if compacted, _ := e.compact(); compacted != 0 {
		t.Fatalf("Compact with the default retention compacted %d messages, want none", compacted)
	}
	e.h.SetRetention(time.Hour, 0)
	if compacted, _ := e.compact(); compacted != 1 {
		t.Fatalf("Compact compacted %d messages, want 1 (old; young finished 31 minutes ago)", compacted)
	}
	if compacted, _ := e.compact(); compacted != 0 {
		t.Fatalf("a second pass compacted %d more", compacted)
	}

	d, err := e.h.Decide(e.ctx, "c", "old", conversation.Delivery{})
	if err != nil || d.Action != conversation.Skip || !d.Compacted {
		t.Errorf("Decide(old) = %+v, %v; want skip, compacted", d, err)
	}
	o, err := e.write(Cmd(conversation.OpReceive, "old"))
	if err != nil || o.Append || o.Decision.Action != conversation.Skip || !o.Decision.Compacted {
		t.Errorf("receive of old = %+v, %v; want skip, compacted, nothing appended", o, err)
	}
	var fm *conversation.FingerprintMismatchError
	if _, err := e.h.Decide(e.ctx, "c", "old", conversation.Delivery{Fingerprint: "sha256:new"}); !errors.As(err, &fm) || fm.Stored != "sha256:old" {
		t.Errorf("Decide(old) with another fingerprint: %v, want a mismatch naming sha256:old", err)
	}
	if o := e.mustWrite(Cmd(conversation.OpFinish, "old")); !o.Duplicate || o.Seq != 4 {
		t.Errorf("finish of old = %+v, want a duplicate of seq 4", o)
	}
	if o := e.mustWrite(expect(Cmd(conversation.OpFinish, "old"), 4)); !o.Duplicate || o.Seq != 4 {
		t.Errorf("finish of old retried at seq 4 = %+v, want a duplicate of seq 4", o)
	}
	for _, c := range []conversation.Command{Cmd(conversation.OpStart, "old"), Step("old", 0, "old/0"), fail("old", "late")} {
		if _, err := e.write(c); !errors.Is(err, conversation.ErrAlreadyFinished) {
			t.Errorf("%v of old: %v, want already_finished", c.Op, err)
		}
	}
	var fenced *conversation.FencedError
	if _, err := e.write(renew("old", 1, time.Minute)); !errors.As(err, &fenced) || !fenced.Compacted {
		t.Errorf("renew of old: %v, want fenced, compacted", err)
	}
	m := e.message("old")
	if !m.Compacted || m.Status != conversation.StatusFinished || m.LastSeq != 4 || m.LastTS != finishedAt || m.Attempts != 1 || m.Fingerprint != "sha256:old" {
		t.Errorf("Message(old) = %+v; want a tombstone: finished at %d, seq 4, 1 attempt, its fingerprint", m, finishedAt)
	}
	if steps, err := e.h.Steps(e.ctx, "c", "old"); err != nil || len(steps) != 0 {
		t.Errorf("Steps(old) = %v, %v; want none", steps, err)
	}
	if ev, err := e.h.MessageEvents(e.ctx, "c", m, 100); err != nil || len(ev) != 0 {
		t.Errorf("MessageEvents(old) = %v, %v; want none", ev, err)
	}
	for _, tt := range []struct {
		filter string
		want   string
	}{{"", "[old open young]"}, {"finished", "[old young]"}, {"received", "[open]"}} {
		list, err := e.h.Messages(e.ctx, "c", tt.filter, "", 10, e.h.Moment())
		if err != nil || fmt.Sprint(ids(list)) != tt.want || !list[0].Compacted && tt.want != "[open]" {
			t.Errorf("Messages(%q) = %+v, %v; want %s, old compacted", tt.filter, list, err, tt.want)
		}
	}
	events := e.events("c")
	if len(events) != 5 || events[0].Seq != 5 || events[0].MessageID != "open" {
		t.Errorf("Events from 0 = %+v; want the 5 events from seq 5 on", events)
	}
	sum, err := e.h.Conversation(e.ctx, "c")
	if err != nil || sum.Next != 10 || sum.Compacted != 1 || sum.Counts.Finished != 2 || sum.Counts.Received != 1 || sum.Horizon.Set {
		t.Errorf("Conversation(c) = %+v, %v; want next seq 10, 1 compacted, 2 finished, no horizon", sum, err)
	}
	if st := e.stats(); st.Events != 5 || st.Messages != 3 || st.Compacted != 1 || st.Tombstones != 1 || st.Dropped != 0 || st.CompactionPasses != 3 {
		t.Errorf("Stats = %+v; want 5 events, 3 messages, 1 compacted, 1 tombstone, 3 passes", st)
	}

	// young goes too once it is old enough; the open message never.
	e.clock.Advance(30 * time.Minute)
	if compacted, _ := e.compact(); compacted != 1 {
		t.Fatalf("Compact compacted %d messages, want young", compacted)
	}
	if o := e.mustWrite(Cmd(conversation.OpReceive, "new")); o.Seq != 10 {
		t.Errorf("a new message after compaction appended at seq %d, want 10: seqs are never reused", o.Seq)
	}
	if st := e.stats(); st.Tombstones != 2 || st.Events != 2 || st.Messages != 4 {
		t.Errorf("Stats = %+v; want 2 tombstones, 2 events, 4 messages", st)
	}
}

// testReadsPastGaps: reads by seq and by pos from a position whose events
// were compacted go on with the next event that remains, and a
// conversation's next seq does not move back (SPEC §8).
func testReadsPastGaps(t *testing.T, f Factory) {
	e := open(t, f)
	e.mustLifecycle("c", "a", 0)                  // seqs 0-2
	e.mustWrite(Cmd(conversation.OpReceive, "b")) // 3
	e.mustLifecycle("c", "d", 0)                  // 4-6
	e.mustWrite(Cmd(conversation.OpReceive, "e")) // 7
	before, err := e.h.EventsFrom(e.ctx, 0, 100)
	if err != nil || len(before) != 8 {
		t.Fatalf("EventsFrom(0) = %+v, %v", before, err)
	}
	e.h.SetRetention(time.Minute, 0)
	e.clock.Advance(2 * time.Minute)
	if compacted, _ := e.compact(); compacted != 2 {
		t.Fatalf("Compact compacted %d messages, want a and d", compacted)
	}
	seqs := func(events []conversation.Event) string {
		var out []int64
		for _, ev := range events {
			out = append(out, ev.Seq)
		}
		return fmt.Sprint(out)
	}
	for _, tt := range []struct {
		from  int64
		limit int
		want  string
	}{{0, 100, "[3 7]"}, {1, 100, "[3 7]"}, {4, 1, "[7]"}, {6, 100, "[7]"}, {8, 100, "[]"}} {
		if got, err := e.h.Events(e.ctx, "c", tt.from, tt.limit); err != nil || seqs(got) != tt.want {
			t.Errorf("Events(c, %d, %d) = seqs %s, %v; want %s", tt.from, tt.limit, seqs(got), err, tt.want)
		}
	}
	for _, tt := range []struct {
		from int // the index in before of the event whose pos to read from
		want string
	}{{1, "[3 7]"}, {4, "[7]"}, {6, "[7]"}} {
		if got, err := e.h.EventsFrom(e.ctx, before[tt.from].Pos, 100); err != nil || seqs(got) != tt.want {
			t.Errorf("EventsFrom(pos of seq %d) = seqs %s, %v; want %s", tt.from, seqs(got), err, tt.want)
		}
	}
	if sum, err := e.h.Conversation(e.ctx, "c"); err != nil || sum.Next != 8 {
		t.Errorf("Conversation(c) = %+v, %v; want next seq 8", sum, err)
	}
	if o := e.mustWrite(Cmd(conversation.OpReceive, "f")); o.Seq != 8 {
		t.Errorf("receive after compaction appended at seq %d, want 8", o.Seq)
	}
}

// testHorizon drops tombstones older than retain_tombstones and checks the
// horizon (SPEC §8): forgotten_before, the forgotten decision for a
// message sent at or before it, a start that carries it, writes to a
// forgotten message, the figures, and that it survives a restart.
func testHorizon(t *testing.T, f Factory) {
	e := open(t, f)
	e.h.SetRetention(time.Minute, time.Hour)
	sentA := e.now()
	e.mustLifecycle("c", "a", 1) // seqs 0-3
	finishedA := e.event("c", 3).TS
	e.clock.Advance(2 * time.Minute)
	if compacted, dropped := e.compact(); compacted != 1 || dropped != 0 {
		t.Fatalf("Compact compacted %d, dropped %d; want a compacted, nothing dropped", compacted, dropped)
	}
	if d, err := e.h.Decide(e.ctx, "c", "a", conversation.Delivery{SentAt: sentA, HasSentAt: true}); err != nil || d.Action != conversation.Skip {
		t.Errorf("Decide(a) while its tombstone is kept = %+v, %v; want skip", d, err)
	}
	e.clock.Advance(time.Hour)
	if _, dropped := e.compact(); dropped != 1 {
		t.Fatalf("Compact dropped %d tombstones, want a's", dropped)
	}
	want := conversation.Horizon{Before: finishedA, Set: true}
	sum, err := e.h.Conversation(e.ctx, "c")
	if err != nil || sum.Horizon != want || sum.Counts.Total() != 0 || sum.Next != 4 {
		t.Errorf("Conversation(c) = %+v, %v; want horizon %+v, no message, next seq 4", sum, err, want)
	}
	if h, err := e.h.Horizon(e.ctx, "c"); err != nil || h != want {
		t.Errorf("Horizon(c) = %+v, %v; want %+v", h, err, want)
	}
	if m, err := e.h.Message(e.ctx, "c", "a"); err != nil || m != nil {
		t.Errorf("Message(a) = %+v, %v; want nil: forgotten", m, err)
	}
	if st := e.stats(); st.Dropped != 1 || st.Tombstones != 0 || st.Messages != 0 || st.Compacted != 1 || st.Horizon != want {
		t.Errorf("Stats = %+v; want 1 dropped, no tombstone, no message, horizon %+v", st, want)
	}

	sent := func(ms int64) conversation.Delivery { return conversation.Delivery{SentAt: ms, HasSentAt: true} }
	for _, at := range []int64{sentA, finishedA} {
		if d, err := e.h.Decide(e.ctx, "c", "a", sent(at)); err != nil || d.Action != conversation.Forgotten || d.Horizon != want {
			t.Errorf("Decide(a, sent_at %d, at or before the horizon) = %+v, %v; want forgotten", at, d, err)
		}
	}
	if d, err := e.h.Decide(e.ctx, "c", "a", conversation.Delivery{}); err != nil || d.Action != conversation.Start || d.Horizon != want {
		t.Errorf("Decide(a) without sent_at = %+v, %v; want start carrying the horizon", d, err)
	}
	if o, err := e.write(receiveSent("a", sentA)); err != nil || o.Append || o.Decision.Action != conversation.Forgotten || o.Decision.Horizon != want {
		t.Errorf("receive(a, sent_at before the horizon) = %+v, %v; want forgotten, nothing appended", o, err)
	}
	if _, err := e.write(Cmd(conversation.OpStart, "a")); !errors.Is(err, conversation.ErrUnknownMessage) {
		t.Errorf("start of forgotten a: %v, want unknown_message", err)
	}
	if o, err := e.write(receiveSent("a", finishedA+1)); err != nil || !o.Append || o.Seq != 4 || o.Decision.Action != conversation.Start || o.Decision.Horizon != want {
		t.Errorf("receive(a, sent_at after the horizon) = %+v, %v; want start at seq 4 with the horizon", o, err)
	}
	other := receiveSent("a", 1)
	other.Conversation = "d"
	if o, err := e.write(other); err != nil || o.Decision.Action != conversation.Start || o.Decision.Horizon.Set {
		t.Errorf("receive in another conversation = %+v, %v; want start with no horizon", o, err)
	}
	// The horizon survives a restart: it is in the database.
	e.restart()
	if d, err := e.h.Decide(e.ctx, "c", "b", sent(sentA)); err != nil || d.Action != conversation.Forgotten || d.Horizon != want {
		t.Errorf("after a restart, Decide(b, sent_at before the horizon) = %+v, %v; want forgotten", d, err)
	}
}

// testCompactionInterleaves compacts over and over while writers write
// lifecycles, the clock moving a millisecond a pass: every write is
// answered, something is compacted while they write, and in the end
// everything eligible went.
func testCompactionInterleaves(t *testing.T, f Factory) {
	e := open(t, f)
	e.h.SetRetention(5*time.Millisecond, 0)
	const writers, messages = 4, 50
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			var err error
			for i := 0; i < messages && err == nil; i++ {
				err = e.lifecycle(fmt.Sprintf("c%d", w%2), fmt.Sprintf("w%d-m%d", w, i), 2)
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
			e.clock.Advance(time.Millisecond)
			n, _ := e.compact()
			compacted += n
		}
	}
	if compacted == 0 {
		t.Fatal("no pass compacted anything while the writers wrote")
	}
	e.clock.Advance(time.Second)
	e.compact()
	if st := e.stats(); st.Events != 0 || st.Tombstones != writers*messages || st.Compacted != writers*messages {
		t.Fatalf("Stats = %+v; want every message compacted", st)
	}
	for _, conv := range []string{"c0", "c1"} {
		if sum, err := e.h.Conversation(e.ctx, conv); err != nil || sum.Next != 2*messages*5 || sum.Compacted != 2*messages {
			t.Errorf("Conversation(%s) = %+v, %v; want next seq %d, all compacted", conv, sum, err, 2*messages*5)
		}
	}
}
