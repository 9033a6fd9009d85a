package storetest

import (
	"bytes"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"liminald/conversation"
)

// normal returns e with an empty output as nil, so that events compare
// whether a store reads an empty output back as nil or as empty.
func normal(e conversation.Event) conversation.Event {
	if len(e.Output) == 0 {
		e.Output = nil
	}
	return e
}

// sameEvents reports whether got and want hold the same events, field by
// field.
func sameEvents(got, want []conversation.Event) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !reflect.DeepEqual(normal(got[i]), normal(want[i])) {
			return false
		}
	}
	return true
}

// receiveWithin receives from ch, failing the test after replyWithin.
func receiveWithin[T any](t *testing.T, ch <-chan T) (T, bool) {
	t.Helper()
	select {
	case v, ok := <-ch:
		return v, ok
	case <-time.After(replyWithin):
		t.Fatalf("nothing received within %v", replyWithin)
		panic("unreachable")
	}
}

// testEventsReadBack writes an event of every type with every field it
// has (SPEC §1, §7), in two conversations, and reads them back: by seq
// (Events), by pos (EventsFrom, whole and in pages) and from a
// subscription opened before; each event is the one its command makes,
// at the seq its write answered, committed at the store's clock, with pos
// strictly increasing in commit order.
func testEventsReadBack(t *testing.T, f Factory) {
	e := open(t, f)
	sub := e.h.Subscribe(1024)
	defer sub.Close()
	receive := Cmd(conversation.OpReceive, "m")
	receive.ReceivedAt, receive.HasReceivedAt, receive.Fingerprint = 42, true, "sha256:aa"
	release := Cmd(conversation.OpRelease, "m")
	release.Reason = "fixed the parser"
	other := Cmd(conversation.OpReceive, "x")
	other.Conversation = "d"
	cmds := []conversation.Command{
		receive,
		leasedStart("m", "w1", 30*time.Second),
		withToken(Step("m", 0, "hello"), 1),
		other,
		Step("m", 3, ""),
		renew("m", 1, 10*time.Second),
		withToken(fail("m", "boom"), 1),
		Cmd(conversation.OpReceive, "n"),
		Cmd(conversation.OpStart, "n"),
		Cmd(conversation.OpFinish, "n"),
		release,
	}
	want := map[string][]conversation.Event{}
	for _, c := range cmds {
		if c.Op == conversation.OpRelease {
			e.h.SetMaxAttempts(1) // m was started once and failed: quarantined
		}
		o := e.mustWrite(c)
		if !o.Append || o.Seq != int64(len(want[c.Conversation])) {
			t.Fatalf("Write(%+v) = %+v, want an append at seq %d", c, o, len(want[c.Conversation]))
		}
		got := e.event(c.Conversation, o.Seq)
		if now := e.now(); !e.near(got.TS, now) {
			t.Errorf("%v committed at ts %d, want the store's clock, %d", c.Op, got.TS, now)
		}
		ev := c.Event(o.Seq, got.TS)
		ev.Pos = got.Pos // checked below: increasing in commit order
		want[c.Conversation] = append(want[c.Conversation], ev)
		e.clock.Advance(time.Second)
	}
	e.h.SetMaxAttempts(0)
	var all []conversation.Event
	for _, conv := range []string{"c", "d"} {
		got := e.events(conv)
		if !sameEvents(got, want[conv]) {
			t.Errorf("Events(%s):\n got %+v\nwant %+v", conv, got, want[conv])
		}
		all = append(all, want[conv]...)
	}
	byPos, err := e.h.EventsFrom(e.ctx, 0, 1000)
	if err != nil || len(byPos) != len(all) {
		t.Fatalf("EventsFrom(0) = %d events, %v; want %d", len(byPos), err, len(all))
	}
	for i := 1; i < len(byPos); i++ {
		if byPos[i].Pos <= byPos[i-1].Pos {
			t.Fatalf("EventsFrom: pos %d after %d", byPos[i].Pos, byPos[i-1].Pos)
		}
	}
	// In commit order: the written order.
	if byPos[3].Conversation != "d" || byPos[4].Seq != 3 {
		t.Errorf("EventsFrom(0) is not in commit order: %+v", byPos)
	}
	var paged []conversation.Event
	for from := int64(0); ; {
		page, err := e.h.EventsFrom(e.ctx, from, 3)
		if err != nil {
			t.Fatalf("EventsFrom(%d, 3): %v", from, err)
		}
		if len(page) == 0 {
			break
		}
		paged = append(paged, page...)
		from = page[len(page)-1].Pos + 1
	}
	if !sameEvents(paged, byPos) {
		t.Errorf("EventsFrom in pages of 3:\n got %+v\nwant %+v", paged, byPos)
	}
	if tail, err := e.h.EventsFrom(e.ctx, byPos[5].Pos, 1000); err != nil || !sameEvents(tail, byPos[5:]) {
		t.Errorf("EventsFrom(%d) = %+v, %v; want the events from the sixth on", byPos[5].Pos, tail, err)
	}
	var pushed []conversation.Event
	for len(pushed) < len(byPos) {
		batch, ok := receiveWithin(t, sub.Events())
		if !ok {
			t.Fatalf("subscription ended after %d events (lagged %v)", len(pushed), sub.Lagged())
		}
		pushed = append(pushed, batch...)
	}
	if !sameEvents(pushed, byPos) {
		t.Errorf("pushed:\n got %+v\nwant %+v", pushed, byPos)
	}
}

// writeLifecycles takes n messages of each of convs conversations
// "conv-0"... through their lifecycle of 2 steps, the last message of each
// stopped after its first step, and one errored message, "bad", per
// conversation: 5n events a conversation.
func writeLifecycles(e *env, convs, n int) {
	e.t.Helper()
	for c := range convs {
		conv := fmt.Sprintf("conv-%d", c)
		for i := range n {
			cmds := Lifecycle(conv, fmt.Sprintf("m%d", i), 2)
			if i == n-1 {
				cmds = cmds[:3]
			}
			for _, cmd := range cmds {
				e.mustWrite(cmd)
			}
		}
		bad := Lifecycle(conv, "bad", 0)[0]
		e.mustWrite(bad)
		bad.Op, bad.Error = conversation.OpFail, "it broke"
		e.mustWrite(bad)
	}
}

// testReads reads what writeLifecycles wrote back through every read:
// conversation summaries and their pages, messages, steps, events by seq
// and by pos.
func testReads(t *testing.T, f Factory) {
	e := open(t, f)
	writeLifecycles(e, 3, 4)
	sum, err := e.h.Conversation(e.ctx, "conv-1")
	want := conversation.Counts{InProgress: 1, Errored: 1, Finished: 3}
	if err != nil || sum.Name != "conv-1" || sum.Next != 5*4 || sum.Counts != want || sum.Compacted != 0 || sum.Horizon.Set {
		t.Errorf("Conversation = %+v, %v; want next 20, counts %+v", sum, err, want)
	}
	if sum, err := e.h.Conversation(e.ctx, "nobody"); err != nil || sum.Next != 0 || sum.Counts.Total() != 0 {
		t.Errorf("Conversation(nobody) = %+v, %v", sum, err)
	}
	if h, err := e.h.Horizon(e.ctx, "conv-1"); err != nil || h.Set {
		t.Errorf("Horizon(conv-1) = %+v, %v; want none", h, err)
	}
	list, err := e.h.Conversations(e.ctx, "conv-0", 10)
	if err != nil || len(list) != 2 || list[0].Name != "conv-1" || list[1].Name != "conv-2" || list[0].Counts != want || list[0].Next != 20 {
		t.Errorf("Conversations(after conv-0) = %+v, %v", list, err)
	}
	if list, err := e.h.Conversations(e.ctx, "", 2); err != nil || len(list) != 2 || list[0].Name != "conv-0" || list[1].Name != "conv-1" {
		t.Errorf("Conversations(limit 2) = %+v, %v", list, err)
	}
	m, err := e.h.Message(e.ctx, "conv-0", "m3")
	if err != nil || m == nil || m.Status != conversation.StatusInProgress || m.LastStep != 0 || m.Attempts != 1 || m.Token() != 16 {
		t.Errorf("Message(m3) = %+v, %v; want in progress after step 0, token 16", m, err)
	}
	m, err = e.h.Message(e.ctx, "conv-0", "bad")
	if err != nil || m == nil || m.Status != conversation.StatusErrored || m.Error != "it broke" || m.LastStep != conversation.NoStep || m.LastSeq != 19 {
		t.Errorf("Message(bad) = %+v, %v; want errored with its error", m, err)
	}
	steps, err := e.h.Steps(e.ctx, "conv-0", "m0")
	if err != nil || len(steps) != 2 || string(steps[1].Output) != "m0/1" {
		t.Errorf("Steps(m0) = %+v, %v", steps, err)
	}
	if m, err := e.h.Message(e.ctx, "conv-0", "nobody"); err != nil || m != nil {
		t.Errorf("Message(nobody) = %+v, %v; want nil", m, err)
	}
	page, err := e.h.Events(e.ctx, "conv-2", 5, 3)
	if err != nil || len(page) != 3 || page[0].Seq != 5 || page[2].Seq != 7 || page[0].Conversation != "conv-2" {
		t.Errorf("Events(conv-2, 5, 3) = %+v, %v", page, err)
	}
	if page, err := e.h.Events(e.ctx, "conv-2", 20, 3); err != nil || len(page) != 0 {
		t.Errorf("Events(conv-2, 20, 3) = %+v, %v; want none past the end", page, err)
	}
	all, err := e.h.EventsFrom(e.ctx, 0, 1000)
	if err != nil || len(all) != 3*5*4 {
		t.Fatalf("EventsFrom(0) = %d events, %v", len(all), err)
	}
	for i := 1; i < len(all); i++ {
		if all[i].Pos <= all[i-1].Pos {
			t.Fatalf("EventsFrom: pos %d after %d", all[i].Pos, all[i-1].Pos)
		}
	}
	if st := e.stats(); st.Conversations != 3 || st.Messages != 3*5 || st.Events != 3*5*4 {
		t.Errorf("Stats = %+v; want 3 conversations, 15 messages, 60 events", st)
	}
}

// testSteps: Steps answers a message's completed steps by index, whatever
// the order they completed in, with their seqs and outputs (what a resume
// with with_steps carries, SPEC §7), for that message of that conversation
// only, through a retry after an error and a finish.
func testSteps(t *testing.T, f Factory) {
	e := open(t, f)
	e.mustWrite(Cmd(conversation.OpReceive, "m"))
	e.mustWrite(Cmd(conversation.OpStart, "m"))
	e.mustWrite(Step("m", 5, "b")) // seq 2
	e.mustWrite(Step("m", 0, "a")) // seq 3
	e.mustWrite(Step("m", 2, ""))  // seq 4
	e.mustWrite(fail("m", "boom")) // seq 5
	e.mustWrite(Cmd(conversation.OpStart, "m"))
	e.mustWrite(Cmd(conversation.OpReceive, "n"))
	e.mustWrite(Cmd(conversation.OpStart, "n"))
	e.mustWrite(Step("n", 1, "of n"))
	other := Cmd(conversation.OpReceive, "m")
	other.Conversation = "d"
	e.mustWrite(other)
	other.Op = conversation.OpStep
	other.Output = []byte("of d")
	e.mustWrite(other)
	want := []conversation.StepRecord{{Index: 0, Seq: 3, Output: []byte("a")}, {Index: 2, Seq: 4}, {Index: 5, Seq: 2, Output: []byte("b")}}
	check := func(when string) {
		t.Helper()
		got, err := e.h.Steps(e.ctx, "c", "m")
		if err != nil || len(got) != len(want) {
			t.Fatalf("%s: Steps(m) = %+v, %v; want %+v", when, got, err, want)
		}
		for i := range got {
			if got[i].Index != want[i].Index || got[i].Seq != want[i].Seq || !bytes.Equal(got[i].Output, want[i].Output) {
				t.Errorf("%s: Steps(m)[%d] = %+v, want %+v", when, i, got[i], want[i])
			}
		}
	}
	check("in progress")
	if d, err := e.h.Decide(e.ctx, "c", "m", conversation.Delivery{}); err != nil || d.Action != conversation.Resume || d.ResumeFrom != 6 {
		t.Errorf("Decide(m) = %+v, %v; want resume from 6", d, err)
	}
	if got, err := e.h.Steps(e.ctx, "d", "m"); err != nil || len(got) != 1 || string(got[0].Output) != "of d" {
		t.Errorf("Steps(d, m) = %+v, %v; want the step of conversation d only", got, err)
	}
	for _, id := range []string{"nobody", "n"} {
		got, err := e.h.Steps(e.ctx, "c", id)
		if wantN := map[string]int{"n": 1}[id]; err != nil || len(got) != wantN {
			t.Errorf("Steps(%s) = %+v, %v; want %d", id, got, err, wantN)
		}
	}
	e.mustWrite(Cmd(conversation.OpFinish, "m"))
	check("finished")
}

// testMessageEvents: MessageEvents answers one message's events among
// those of others, in seq order, the latest limit of them.
func testMessageEvents(t *testing.T, f Factory) {
	e := open(t, f)
	for _, c := range []conversation.Command{
		Cmd(conversation.OpReceive, "m"), // 0
		Cmd(conversation.OpReceive, "n"), // 1
		Cmd(conversation.OpStart, "m"),   // 2
		Step("m", 0, "a"),                // 3
		Cmd(conversation.OpStart, "n"),   // 4
		fail("m", "boom"),                // 5
		Cmd(conversation.OpFinish, "n"),  // 6
		Cmd(conversation.OpStart, "m"),   // 7
	} {
		e.mustWrite(c)
	}
	for _, tt := range []struct {
		id    string
		limit int
		want  []int64
	}{
		{"m", 100, []int64{0, 2, 3, 5, 7}},
		{"m", 2, []int64{5, 7}},
		{"n", 100, []int64{1, 4, 6}},
	} {
		events, err := e.h.MessageEvents(e.ctx, "c", e.message(tt.id), tt.limit)
		var got []int64
		for _, ev := range events {
			got = append(got, ev.Seq)
			if ev.MessageID != tt.id {
				t.Errorf("MessageEvents(%s) holds %+v", tt.id, ev)
			}
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("MessageEvents(%s, limit %d) = seqs %v, %v; want %v", tt.id, tt.limit, got, err, tt.want)
		}
	}
}

// testSubscribe: a subscription sees every event committed after it, once,
// in pos order overall and seq order per conversation, exactly as
// EventsFrom reads them back, never a rejected write's; one that does not
// keep up lags and ends while the writers go on; Close ends one.
func testSubscribe(t *testing.T, f Factory) {
	e := open(t, f)
	e.mustLifecycle("c", "before", 0) // not pushed: committed before the subscriptions
	first := e.stats().Events
	sub := e.h.Subscribe(1024)
	defer sub.Close()
	slow := e.h.Subscribe(1)
	const writers, messages = 4, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range messages {
				if err := e.lifecycle(fmt.Sprintf("conv-%d", w), fmt.Sprintf("m%d", i), 1); err != nil {
					t.Error(err)
					return
				}
				if _, err := e.write(Cmd(conversation.OpStart, "nobody")); err == nil {
					t.Error("start of a message never received succeeded")
				}
			}
		})
	}
	wg.Wait()
	var pushed []conversation.Event
	for len(pushed) < writers*messages*4 {
		batch, ok := receiveWithin(t, sub.Events())
		if !ok {
			t.Fatalf("subscription ended after %d events (lagged %v)", len(pushed), sub.Lagged())
		}
		pushed = append(pushed, batch...)
	}
	all, err := e.h.EventsFrom(e.ctx, 0, 1000)
	if err != nil || int64(len(all)) != first+writers*messages*4 {
		t.Fatalf("EventsFrom(0) = %d events, %v", len(all), err)
	}
	if !sameEvents(pushed, all[first:]) {
		t.Errorf("pushed events are not the ones committed after the subscription, in pos order:\n got %+v\nwant %+v", pushed, all[first:])
	}
	next := map[string]int64{}
	for i, ev := range pushed {
		if ev.Seq != next[ev.Conversation] {
			t.Fatalf("pushed event %d is seq %d of %s, want seq %d", i, ev.Seq, ev.Conversation, next[ev.Conversation])
		}
		next[ev.Conversation]++
		if i > 0 && ev.Pos <= pushed[i-1].Pos {
			t.Fatalf("pushed event %d has pos %d after %d", i, ev.Pos, pushed[i-1].Pos)
		}
	}
	// The slow subscription held one batch; the rest overflowed it.
	for range slow.Events() {
	}
	if !slow.Lagged() {
		t.Error("slow subscription ended without Lagged")
	}
	sub.Close()
	for range sub.Events() {
	}
	if sub.Lagged() {
		t.Error("fast subscription lagged")
	}
	sub.Close() // a second Close does nothing
}
