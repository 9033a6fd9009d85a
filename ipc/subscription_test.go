package ipc

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"liminald/conversation"
)

// pushed is a push line, decoded.
type pushed struct {
	Sub     int64               `json:"sub"`
	Event   *conversation.Event `json:"event"`
	Lagged  bool                `json:"lagged"`
	NextPos int64               `json:"next_pos"`
	NextSeq *int64              `json:"next_seq"`
}

// push reads the next line as a push of subscription sub.
func (c *rawConn) push(sub int64) pushed {
	c.tb.Helper()
	line := c.line()
	var p pushed
	if err := json.Unmarshal([]byte(line), &p); err != nil || p.Sub != sub || strings.Contains(line, `"id"`) {
		c.tb.Fatalf("line %s is not a push of subscription %d (%v)", line, sub, err)
	}
	return p
}

// subscribe opens a subscription with the arguments args and returns its
// number.
func (c *rawConn) subscribe(args string) int64 {
	c.tb.Helper()
	r := c.roundTrip(`{"id":"s","op":"subscribe"` + args + `}`)
	n, err := r["sub"].(json.Number).Int64()
	if r["ok"] != true || err != nil {
		c.tb.Fatalf("subscribe%s: %v", args, r)
	}
	return n
}

// mustWrite writes cmd to the store, failing tb on an error.
func mustWrite(tb testing.TB, s testStore, cmd conversation.Command) conversation.Outcome {
	tb.Helper()
	cmd.ExpectedSeq = conversation.NoExpectedSeq
	o, err := s.Write(context.Background(), cmd)
	if err != nil {
		tb.Fatalf("Write(%v %s/%s): %v", cmd.Op, cmd.Conversation, cmd.MessageID, err)
	}
	return o
}

// receiveMany receives n new messages in each of convs, concurrently, so
// that they are group-committed.
func receiveMany(tb testing.TB, s testStore, prefix string, n int, convs ...string) {
	var wg sync.WaitGroup
	for _, conv := range convs {
		for w := range 8 {
			wg.Go(func() {
				for i := w; i < n; i += 8 {
					cmd := conversation.Command{Op: conversation.OpReceive, Conversation: conv, MessageID: fmt.Sprintf("%s%d", prefix, i),
						ExpectedSeq: conversation.NoExpectedSeq}
					if _, err := s.Write(context.Background(), cmd); err != nil {
						tb.Errorf("Write: %v", err)
						return
					}
				}
			})
		}
	}
	wg.Wait()
}

// TestServer_Subscribe checks that a subscription catches up and goes on
// live with no gap and no duplicate while writers append.
func TestServer_Subscribe(t *testing.T) {
	ts := startServer(t, Config{})
	sentinel := func(conv string) conversation.Outcome {
		return mustWrite(t, ts.store, conversation.Command{Op: conversation.OpReceive, Conversation: conv, MessageID: "sentinel"})
	}

	t.Run("ConversationCatchUpAndLive", func(t *testing.T) {
		receiveMany(t, ts.store, "old", 300, "c", "other")
		c := dialRaw(t, ts.path)
		done := make(chan struct{})
		go func() {
			defer close(done)
			receiveMany(t, ts.store, "new", 300, "c", "other")
		}()
		sub := c.subscribe(`,"conversation":"c","from_seq":0`)
		<-done
		last := sentinel("c").Seq
		for want := int64(0); want <= last; want++ {
			p := c.push(sub)
			if p.Event == nil || p.Event.Conversation != "c" || p.Event.Seq != want {
				t.Fatalf("push %+v, want the event of seq %d of c", p.Event, want)
			}
		}
	})

	t.Run("AllCatchUpAndLive", func(t *testing.T) {
		c := dialRaw(t, ts.path)
		done := make(chan struct{})
		go func() {
			defer close(done)
			receiveMany(t, ts.store, "all", 200, "x", "y", "z")
		}()
		sub := c.subscribe(`,"from_pos":0`)
		<-done
		end := sentinel("z")
		next := map[string]int64{}
		lastPos := int64(0)
		for {
			e := c.push(sub).Event
			if e == nil || e.Pos <= lastPos || e.Seq != next[e.Conversation] {
				t.Fatalf("push %+v after pos %d, want the next event of its conversation (seq %d)", e, lastPos, next[e.Conversation])
			}
			lastPos, next[e.Conversation] = e.Pos, e.Seq+1
			if e.Conversation == "z" && e.Seq == end.Seq {
				break
			}
		}
		for conv, n := range next {
			sum, err := ts.store.Conversation(context.Background(), conv)
			if err != nil || sum.Next != n {
				t.Errorf("conversation %s: pushed up to seq %d, store has next %d (%v)", conv, n, sum.Next, err)
			}
		}
	})

	t.Run("FromNow", func(t *testing.T) {
		c := dialRaw(t, ts.path)
		sentinel("now")
		sub := c.subscribe(`,"conversation":"now"`)
		o := mustWrite(t, ts.store, conversation.Command{Op: conversation.OpStart, Conversation: "now", MessageID: "sentinel"})
		if e := c.push(sub).Event; e == nil || e.Seq != o.Seq || e.Type != conversation.ProcessingStarted {
			t.Errorf("first push %+v, want the start at seq %d", e, o.Seq)
		}
	})

	t.Run("ConversationFromPos", func(t *testing.T) {
		c := dialRaw(t, ts.path)
		receiveMany(t, ts.store, "p", 10, "fp", "fq")
		events, err := ts.store.Events(context.Background(), "fp", 5, 1)
		if err != nil || len(events) != 1 {
			t.Fatalf("Events: %v, %v", events, err)
		}
		sub := c.subscribe(fmt.Sprintf(`,"conversation":"fp","from_pos":%d`, events[0].Pos))
		end := sentinel("fp")
		for want := int64(5); want <= end.Seq; want++ {
			if e := c.push(sub).Event; e == nil || e.Conversation != "fp" || e.Seq != want {
				t.Fatalf("push %+v, want seq %d of fp", e, want)
			}
		}
	})

	t.Run("Unsubscribe", func(t *testing.T) {
		ts := startServer(t, Config{}) // its own, to count its subscribers
		sentinel := func(conv string) {
			mustWrite(t, ts.store, conversation.Command{Op: conversation.OpReceive, Conversation: conv, MessageID: "sentinel"})
		}
		c := dialRaw(t, ts.path)
		a := c.subscribe(`,"conversation":"u"`)
		if r := c.roundTrip(fmt.Sprintf(`{"id":"u","op":"unsubscribe","sub":%d}`, a)); r["ok"] != true {
			t.Fatalf("unsubscribe: %v", r)
		}
		b := c.subscribe(`,"conversation":"u"`)
		if b == a {
			t.Errorf("subscription numbers repeat: %d", b)
		}
		sentinel("u")
		if p := c.push(b); p.Event == nil || p.Event.MessageID != "sentinel" {
			t.Errorf("push %+v, want the sentinel", p)
		}
		st := c.roundTrip(`{"id":"st","op":"stats"}`)
		if fmt.Sprint(st["subscribers"]) != "1" {
			t.Errorf("stats subscribers = %v, want 1", st["subscribers"])
		}
	})
}

// TestServer_SubscribeLagged checks that a subscriber that does not read is
// ended with a lagged push giving where to resume, that the writers are
// not held up, and that subscribing again from there misses nothing.
func TestServer_SubscribeLagged(t *testing.T) {
	ts := startServer(t, Config{SubscriptionBuffer: 1})
	c := dialRaw(t, ts.path)
	sub := c.subscribe(`,"conversation":"lag"`)
	mustWrite(t, ts.store, conversation.Command{Op: conversation.OpReceive, Conversation: "lag", MessageID: "m"})
	mustWrite(t, ts.store, conversation.Command{Op: conversation.OpStart, Conversation: "lag", MessageID: "m"})
	output := []byte(strings.Repeat("o", 48<<10))
	const steps = 100 // far more than the socket, the queue and the feed hold
	var last conversation.Outcome
	for i := range steps {
		last = mustWrite(t, ts.store, conversation.Command{Op: conversation.OpStep, Conversation: "lag", MessageID: "m", StepIndex: uint32(i), Output: output})
	}

	var p pushed
	seq, pos := int64(0), int64(0)
	for p = c.push(sub); !p.Lagged; p = c.push(sub) {
		if p.Event == nil || p.Event.Seq != seq {
			t.Fatalf("push %+v, want seq %d", p.Event, seq)
		}
		seq, pos = seq+1, p.Event.Pos+1
	}
	if seq > last.Seq {
		t.Fatalf("every event was pushed (%d); the subscription did not lag", seq)
	}
	if p.NextPos != pos || p.NextSeq == nil || *p.NextSeq != seq {
		t.Errorf("lagged push %+v, want next_pos %d and next_seq %d", p, pos, seq)
	}
	t.Logf("lagged after %d of %d events", seq, last.Seq+1)

	again := c.subscribe(fmt.Sprintf(`,"conversation":"lag","from_pos":%d`, p.NextPos))
	for ; seq <= last.Seq; seq++ {
		if e := c.push(again).Event; e == nil || e.Seq != seq {
			t.Fatalf("push %+v after subscribing again, want seq %d", e, seq)
		}
	}
}
