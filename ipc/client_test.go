package ipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"liminald/conversation"
)

// mustDial returns a client of ts, closed at cleanup.
func mustDial(tb testing.TB, ts *testServer) *Client {
	tb.Helper()
	c, err := Dial(context.Background(), ts.path)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// TestClient_Lifecycle runs a message's life through the client.
func TestClient_Lifecycle(t *testing.T) {
	ts := startServer(t, Config{Version: "v9"})
	c := mustDial(t, ts)
	ctx := context.Background()

	info, err := c.Hello(ctx, "client_test")
	if err != nil || info.Protocol != 2 || info.Name != "liminald" || info.Version != "v9" ||
		len(info.Ops) != 18 || info.Limits.MaxLineBytes != DefaultMaxLineBytes || info.Limits.MaxInflight != MaxInflight {
		t.Errorf("Hello = %+v, %v", info, err)
	}
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping: %v", err)
	}
	d, err := c.Receive(ctx, "c", "m", ReceivedAt(1234))
	if err != nil || d.Action != conversation.Start || d.Seq != 0 || d.Duplicate {
		t.Errorf("Receive = %+v, %v; want start at 0", d, err)
	}
	if d, err := c.Receive(ctx, "c", "m"); err != nil || d.Action != conversation.Resume || d.ResumeFrom != 0 {
		t.Errorf("Receive again = %+v, %v; want resume from 0", d, err)
	}
	if a, err := c.Start(ctx, "c", "m", ExpectedSeq(1)); err != nil || a != (Ack{Seq: 1}) {
		t.Errorf("Start = %+v, %v", a, err)
	}
	for i := range 3 {
		out := []byte(fmt.Sprintf("out%d", i))
		if a, err := c.Step(ctx, "c", "m", uint32(i), out); err != nil || a.Seq != int64(2+i) {
			t.Errorf("Step(%d) = %+v, %v", i, a, err)
		}
	}
	if a, err := c.Step(ctx, "c", "m", 1, []byte("out1")); err != nil || a != (Ack{Seq: 3, Duplicate: true}) {
		t.Errorf("Step(1) again = %+v, %v; want duplicate of 3", a, err)
	}
	if d, err := c.Decide(ctx, "c", "m"); err != nil || d.Action != conversation.Resume || d.ResumeFrom != 3 {
		t.Errorf("Decide = %+v, %v; want resume from 3", d, err)
	}
	ms, err := c.MessageState(ctx, "c", "m")
	if err != nil || ms.Status != conversation.StatusInProgress || ms.ReceivedAt != 1234 || ms.LastStep != 2 ||
		len(ms.Steps) != 3 || !bytes.Equal(ms.Steps[2].Output, []byte("out2")) || ms.Steps[2].Seq != 4 || ms.Error != "" {
		t.Errorf("MessageState = %+v, %v", ms, err)
	}
	if a, err := c.Fail(ctx, "c", "m", "boom"); err != nil || a.Seq != 5 {
		t.Errorf("Fail = %+v, %v", a, err)
	}
	if ms, err := c.MessageState(ctx, "c", "m"); err != nil || ms.Status != conversation.StatusErrored || ms.Error != "boom" {
		t.Errorf("MessageState after Fail = %+v, %v", ms, err)
	}
	if _, err := c.Start(ctx, "c", "m"); err != nil {
		t.Errorf("Start after Fail: %v", err)
	}
	if a, err := c.Finish(ctx, "c", "m"); err != nil || a.Seq != 7 {
		t.Errorf("Finish = %+v, %v", a, err)
	}
	if d, err := c.Receive(ctx, "c", "m"); err != nil || d.Action != conversation.Skip {
		t.Errorf("Receive after Finish = %+v, %v; want skip", d, err)
	}
	if ms, err := c.MessageState(ctx, "c", "unknown"); err != nil || ms.Status != conversation.StatusUnknown || ms.LastStep != conversation.NoStep {
		t.Errorf("MessageState of an unknown message = %+v, %v", ms, err)
	}
	st, err := c.State(ctx, "c")
	if err != nil || st.Next != 8 || st.Counts != (conversation.Counts{Finished: 1}) {
		t.Errorf("State = %+v, %v", st, err)
	}
	events, next, err := c.Read(ctx, "c", 2, 3)
	if err != nil || next != 5 || len(events) != 3 || events[0].Type != conversation.StepCompleted ||
		string(events[1].Output) != "out1" || events[2].Seq != 4 {
		t.Errorf("Read = %+v, %d, %v", events, next, err)
	}
	if all, next, err := c.Read(ctx, "c", 0, 0); err != nil || next != 8 || len(all) != 8 {
		t.Errorf("Read all = %d events, next %d, %v", len(all), next, err)
	}
	convs, err := c.Conversations(ctx, "", 0)
	if err != nil || len(convs) != 1 || convs[0] != (ConversationSummary{Name: "c", Next: 8, Messages: 1}) {
		t.Errorf("Conversations = %+v, %v", convs, err)
	}
	stats, err := c.Stats(ctx)
	if err != nil || stats.Events != 8 || stats.Connections != 1 || stats.Commits.Appended != 8 {
		t.Errorf("Stats = %+v, %v", stats, err)
	}
	reply, err := c.Do(ctx, []byte(`{"op": "decide", "id": "raw",
		"conversation": "c", "message_id": "m"}`))
	if err != nil || string(reply) != `{"id":"raw","ok":true,"decision":"skip"}` {
		t.Errorf("Do = %s, %v", reply, err)
	}
}

// TestClient_Errors checks that failures come back as *Error with their
// code, and match the domain's errors.
func TestClient_Errors(t *testing.T) {
	ts := startServer(t, Config{})
	c := mustDial(t, ts)
	ctx := context.Background()
	if _, err := c.Receive(ctx, "c", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, "c", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Step(ctx, "c", "m", 0, []byte("a")); err != nil {
		t.Fatal(err)
	}

	_, err := c.Start(ctx, "c", "nope")
	if !errors.Is(err, CodeUnknownMessage) || !errors.Is(err, conversation.ErrUnknownMessage) {
		t.Errorf("Start of an unknown message: %v, want unknown_message", err)
	}
	_, err = c.Step(ctx, "c", "m", 0, []byte("b"))
	if !errors.Is(err, CodeStepConflict) || !errors.Is(err, conversation.ErrStepConflict) || errors.Is(err, CodeUnknownMessage) {
		t.Errorf("Step with other output: %v, want step_conflict", err)
	}
	_, err = c.Finish(ctx, "c", "m", ExpectedSeq(1))
	var sc *conversation.SequenceConflictError
	if !errors.Is(err, CodeSequenceConflict) || !errors.As(err, &sc) || sc.Expected != 1 || sc.Actual != 3 {
		t.Errorf("Finish with expected_seq 1: %v (%+v), want sequence_conflict 1/3", err, sc)
	}
	_, err = c.Receive(ctx, "", "m")
	var e *Error
	var fe *conversation.FieldError
	if !errors.As(err, &e) || e.Code != CodeBadRequest || e.Retryable || e.Details["field"] != "conversation" ||
		!errors.As(err, &fe) || fe.Field != "conversation" {
		t.Errorf("Receive with no conversation: %#v, want bad_request naming conversation", err)
	}
	if _, err := c.Finish(ctx, "c", "m"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Step(ctx, "c", "m", 1, nil); !errors.Is(err, CodeAlreadyFinished) || !errors.Is(err, conversation.ErrAlreadyFinished) {
		t.Errorf("Step after Finish: %v, want already_finished", err)
	}
	reply, err := c.Do(ctx, []byte(`{"op":"nope"}`))
	if !errors.Is(err, CodeUnknownOp) || !bytes.Contains(reply, []byte(`"code":"unknown_op"`)) {
		t.Errorf("Do unknown op = %s, %v", reply, err)
	}

	c.Close()
	if err := c.Ping(ctx); !errors.Is(err, ErrClientClosed) {
		t.Errorf("Ping after Close: %v, want ErrClientClosed", err)
	}
}

// TestClient_Concurrent runs lifecycles from 32 goroutines on one client.
func TestClient_Concurrent(t *testing.T) {
	ts := startServer(t, Config{})
	c := mustDial(t, ts)
	ctx := context.Background()
	const workers, each = 32, 5
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			conv := fmt.Sprintf("c%d", w%4)
			for i := range each {
				msg := fmt.Sprintf("w%d-%d", w, i)
				if d, err := c.Receive(ctx, conv, msg); err != nil || d.Action != conversation.Start {
					t.Errorf("Receive %s: %+v, %v", msg, d, err)
					return
				}
				if _, err := c.Start(ctx, conv, msg); err != nil {
					t.Errorf("Start %s: %v", msg, err)
					return
				}
				for s := range 3 {
					if _, err := c.Step(ctx, conv, msg, uint32(s), []byte(msg)); err != nil {
						t.Errorf("Step %s: %v", msg, err)
						return
					}
				}
				if _, err := c.Finish(ctx, conv, msg); err != nil {
					t.Errorf("Finish %s: %v", msg, err)
					return
				}
				if d, err := c.Decide(ctx, conv, msg); err != nil || d.Action != conversation.Skip {
					t.Errorf("Decide %s: %+v, %v", msg, d, err)
				}
			}
		})
	}
	wg.Wait()
	var finished int64
	for i := range 4 {
		st, err := c.State(ctx, fmt.Sprintf("c%d", i))
		if err != nil {
			t.Fatal(err)
		}
		finished += st.Counts.Finished
	}
	if finished != workers*each {
		t.Errorf("%d messages finished, want %d", finished, workers*each)
	}
}

// TestClient_Subscribe checks streams: catch-up and live, lag, unsubscribe,
// and the end of the client.
func TestClient_Subscribe(t *testing.T) {
	ts := startServer(t, Config{})
	c := mustDial(t, ts)
	ctx := context.Background()
	receiveMany(t, ts.store, "m", 50, "c")

	s, err := c.Subscribe(ctx, "c", FromSeq(10))
	if err != nil {
		t.Fatal(err)
	}
	mustWrite(t, ts.store, conversation.Command{Op: conversation.OpReceive, Conversation: "c", MessageID: "live"})
	for want := int64(10); want <= 50; want++ {
		e, err := s.Next(ctx)
		if err != nil || e.Seq != want || e.Conversation != "c" {
			t.Fatalf("Next = %+v, %v; want seq %d", e, err, want)
		}
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := s.Next(ctx); !errors.Is(err, ErrUnsubscribed) {
		t.Errorf("Next after Close: %v, want ErrUnsubscribed", err)
	}

	t.Run("Lagged", func(t *testing.T) {
		c := mustDial(t, ts)
		c.streamBuffer = 100
		s, err := c.Subscribe(ctx, "", FromPos(0))
		if err != nil {
			t.Fatal(err)
		}
		// Nobody calls Next while more than the stream holds is pushed.
		receiveMany(t, ts.store, "lag", 200, "big")
		<-s.ended // the stream filled up and ended; its events are still held
		var last conversation.Event
		for {
			e, err := s.Next(ctx)
			var lag *LaggedError
			if errors.As(err, &lag) {
				if lag.NextPos != last.Pos+1 {
					t.Errorf("lagged at %+v after pos %d", lag, last.Pos)
				}
				break
			}
			if err != nil || (last.Pos != 0 && e.Pos <= last.Pos) {
				t.Fatalf("Next = %+v, %v after pos %d", e, err, last.Pos)
			}
			last = e
		}
		// The client unsubscribes in the background; the connection goes on.
		if err := c.Ping(ctx); err != nil {
			t.Errorf("Ping after a lag: %v", err)
		}
	})

	t.Run("ClientClosed", func(t *testing.T) {
		c := mustDial(t, ts)
		s, err := c.Subscribe(ctx, "c")
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		if _, err := s.Next(ctx); !errors.Is(err, ErrClientClosed) {
			t.Errorf("Next after the client closed: %v, want ErrClientClosed", err)
		}
	})
}
