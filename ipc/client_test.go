package ipc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/sqlitestore"
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
		len(info.Ops) != 18 || info.Limits.MaxLineBytes != DefaultMaxLineBytes || info.Limits.MaxInflight != MaxInflight ||
		info.Limits.MessagesLimitMax != MessagesLimitMax || info.Limits.MaxLeaseMS != conversation.MaxLeaseMS ||
		info.Limits.MaxOutputBytes != MaxOutputBytes(DefaultMaxLineBytes) {
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
	if a, err := c.Start(ctx, "c", "m", ExpectedSeq(1)); err != nil || a != (Ack{Seq: 1, Token: 1}) {
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

// testClock is a clock a test moves, for a store's Now.
type testClock struct{ ms atomic.Int64 }

func newTestClock(ms int64) *testClock {
	c := &testClock{}
	c.ms.Store(ms)
	return c
}

func (c *testClock) now() time.Time { return time.UnixMilli(c.ms.Load()) }

// startClockServer starts a server over a store with clock and
// maxAttempts, and dials it.
func startClockServer(t *testing.T, clock *testClock, maxAttempts int64) *Client {
	t.Helper()
	ts := startServer(t, Config{Store: mustOpenStore(t, sqlitestore.Options{Now: clock.now, MaxAttempts: maxAttempts})})
	return mustDial(t, ts)
}

// TestClient_Leases runs two workers over one message: a leased start,
// busy for the other worker, a renew, the takeover once the lease lapses,
// and the fencing of the old holder; fingerprints and with_steps on the
// way.
func TestClient_Leases(t *testing.T) {
	clock := newTestClock(1_000_000)
	c := startClockServer(t, clock, 0)
	ctx := context.Background()

	if d, err := c.Receive(ctx, "c", "m", Fingerprint("sha:1")); err != nil || d.Action != conversation.Start {
		t.Fatalf("Receive = %+v, %v; want start", d, err)
	}
	var fe *conversation.FieldError
	if _, err := c.Start(ctx, "c", "m", Lease(0)); !errors.Is(err, CodeBadRequest) || !errors.As(err, &fe) || fe.Field != "lease_ms" {
		t.Errorf("Start with a lease of 0: %v, want bad_request naming lease_ms", err)
	}
	a, err := c.Start(ctx, "c", "m", Worker("w1"), Lease(30*time.Second))
	if want := (Ack{Seq: 1, Token: 1, LeaseExpiresAt: 1_030_000}); err != nil || a != want {
		t.Fatalf("Start(w1, 30s) = %+v, %v; want %+v", a, err, want)
	}
	if a, err := c.Start(ctx, "c", "m", Worker("w1"), Lease(30*time.Second)); err != nil || !a.Duplicate || a.Token != 1 {
		t.Errorf("Start(w1) again = %+v, %v; want a duplicate with token 1", a, err)
	}
	clock.ms.Add(1000)
	d, err := c.Decide(ctx, "c", "m")
	if err != nil || d.Action != conversation.Busy || d.Worker != "w1" || d.Token != 1 || d.RetryAfterMS != 29_000 {
		t.Errorf("Decide while leased = %+v, %v; want busy, w1, token 1, retry after 29000 ms", d, err)
	}
	_, err = c.Start(ctx, "c", "m", Worker("w2"), Lease(30*time.Second))
	var busy *conversation.BusyError
	if !errors.Is(err, CodeBusy) || !errors.As(err, &busy) || *busy != (conversation.BusyError{Worker: "w1", Token: 1, RetryAfterMS: 29_000}) {
		t.Errorf("Start(w2) while leased: %v (%+v), want busy naming w1", err, busy)
	}
	if e := (*Error)(nil); !errors.As(err, &e) || !e.Retryable {
		t.Errorf("busy is not retryable: %#v", err)
	}
	if a, err := c.Step(ctx, "c", "m", 0, []byte("hi"), Token(1)); err != nil || a.Seq != 2 {
		t.Errorf("Step with token 1 = %+v, %v", a, err)
	}
	if a, err := c.Renew(ctx, "c", "m", 1, 5*time.Second); err != nil || a.Seq != 3 || a.LeaseExpiresAt != 1_006_000 {
		t.Errorf("Renew(1, 5s) = %+v, %v; want seq 3, lease to 1006000", a, err)
	}

	clock.ms.Add(5000) // the renewed lease lapses
	d, err = c.Decide(ctx, "c", "m", WithSteps(), Fingerprint("sha:1"))
	if err != nil || d.Action != conversation.Resume || d.ResumeFrom != 1 || len(d.Steps) != 1 ||
		d.Steps[0].Index != 0 || string(d.Steps[0].Output) != "hi" {
		t.Errorf("Decide with steps after the lapse = %+v, %v; want resume from 1 with step 0", d, err)
	}
	a, err = c.Start(ctx, "c", "m", Worker("w2"), Lease(time.Minute))
	if want := (Ack{Seq: 4, Token: 4, LeaseExpiresAt: 1_066_000}); err != nil || a != want {
		t.Fatalf("takeover by w2 = %+v, %v; want %+v", a, err, want)
	}

	var fenced *conversation.FencedError
	for name, write := range map[string]func() (Ack, error){
		"Step":   func() (Ack, error) { return c.Step(ctx, "c", "m", 1, nil, Token(1)) },
		"Finish": func() (Ack, error) { return c.Finish(ctx, "c", "m", Token(1)) },
		"Fail":   func() (Ack, error) { return c.Fail(ctx, "c", "m", "late", Token(1)) },
		"Renew":  func() (Ack, error) { return c.Renew(ctx, "c", "m", 1, time.Second) },
	} {
		_, err := write()
		if !errors.Is(err, CodeFenced) || !errors.As(err, &fenced) || *fenced != (conversation.FencedError{Token: 1, CurrentToken: 4}) {
			t.Errorf("%s with the old token: %v (%+v), want fenced 1/4", name, err, fenced)
		}
	}
	if a, err := c.Finish(ctx, "c", "m", Token(4)); err != nil || a.Seq != 5 {
		t.Errorf("Finish with token 4 = %+v, %v", a, err)
	}
	if _, err := c.Renew(ctx, "c", "m", 4, time.Second); !errors.As(err, &fenced) {
		t.Errorf("Renew after Finish: %v, want fenced", err)
	}

	var mismatch *conversation.FingerprintMismatchError
	for name, deliver := range map[string]func() (Decision, error){
		"Receive": func() (Decision, error) { return c.Receive(ctx, "c", "m", Fingerprint("sha:2")) },
		"Decide":  func() (Decision, error) { return c.Decide(ctx, "c", "m", Fingerprint("sha:2")) },
	} {
		_, err := deliver()
		if !errors.Is(err, CodeFingerprintMismatch) || !errors.As(err, &mismatch) || mismatch.Stored != "sha:1" {
			t.Errorf("%s with another fingerprint: %v, want fingerprint_mismatch naming sha:1", name, err)
		}
	}
	ms, err := c.MessageState(ctx, "c", "m")
	want := MessageState{Status: conversation.StatusFinished, ReceivedAt: 1_000_000, LastStep: 0,
		Steps:    []conversation.StepRecord{{Index: 0, Seq: 2, Output: []byte("hi")}},
		Attempts: 2, Token: 4, Worker: "w2", Fingerprint: "sha:1"}
	if err != nil || !reflect.DeepEqual(ms, want) {
		t.Errorf("MessageState = %+v, %v; want %+v", ms, err, want)
	}
}

// TestClient_Quarantine: a message started max_attempts times is
// quarantined until it is released.
func TestClient_Quarantine(t *testing.T) {
	clock := newTestClock(1_000_000)
	c := startClockServer(t, clock, 2)
	ctx := context.Background()
	if _, err := c.Receive(ctx, "c", "m"); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := c.Start(ctx, "c", "m"); err != nil {
			t.Fatalf("Start %d: %v", i, err)
		}
		if _, err := c.Fail(ctx, "c", "m", fmt.Sprintf("boom %d", i)); err != nil {
			t.Fatalf("Fail %d: %v", i, err)
		}
	}
	d, err := c.Receive(ctx, "c", "m")
	if err != nil || d.Action != conversation.Quarantined || d.Attempts != 2 || d.Error != "boom 1" {
		t.Errorf("Receive after 2 attempts = %+v, %v; want quarantined, 2 attempts, boom 1", d, err)
	}
	if _, err := c.Start(ctx, "c", "m"); !errors.Is(err, CodeQuarantined) || !errors.Is(err, conversation.ErrQuarantined) {
		t.Errorf("Start of a quarantined message: %v, want quarantined", err)
	}
	if ms, err := c.MessageState(ctx, "c", "m"); err != nil || !ms.Quarantined || ms.Attempts != 2 || ms.Token != 3 {
		t.Errorf("MessageState = %+v, %v; want quarantined after 2 attempts, token 3", ms, err)
	}
	if a, err := c.Release(ctx, "c", "m", "fixed the parser"); err != nil || a.Seq != 5 {
		t.Errorf("Release = %+v, %v; want seq 5", a, err)
	}
	if _, err := c.Release(ctx, "c", "m", ""); !errors.Is(err, CodeNotQuarantined) || !errors.Is(err, conversation.ErrNotQuarantined) {
		t.Errorf("Release again: %v, want not_quarantined", err)
	}
	if _, err := c.Release(ctx, "c", "nobody", ""); !errors.Is(err, conversation.ErrUnknownMessage) {
		t.Errorf("Release of an unknown message: %v, want unknown_message", err)
	}
	if d, err := c.Decide(ctx, "c", "m"); err != nil || d.Action != conversation.Resume {
		t.Errorf("Decide after Release = %+v, %v; want resume", d, err)
	}
	if a, err := c.Start(ctx, "c", "m"); err != nil || a.Token != 6 {
		t.Errorf("Start after Release = %+v, %v; want token 6", a, err)
	}
	events, _, err := c.Read(ctx, "c", 5, 1)
	if err != nil || len(events) != 1 || events[0].Type != conversation.MessageReleased || events[0].Reason != "fixed the parser" {
		t.Errorf("Read the release = %+v, %v", events, err)
	}
}

// TestClient_Messages pages through a conversation's messages, with and
// without each filter.
func TestClient_Messages(t *testing.T) {
	clock := newTestClock(1_000_000)
	c := startClockServer(t, clock, 1)
	ctx := context.Background()
	// a: received; b: leased by w; d: errored, so quarantined at 1
	// attempt; e: finished.
	for _, id := range []string{"a", "b", "d", "e"} {
		if _, err := c.Receive(ctx, "c", id, ReceivedAt(7)); err != nil {
			t.Fatal(err)
		}
	}
	clock.ms.Add(10)
	for _, write := range []func() (Ack, error){
		func() (Ack, error) { return c.Start(ctx, "c", "b", Worker("w"), Lease(time.Minute)) },
		func() (Ack, error) { return c.Step(ctx, "c", "b", 3, []byte("x")) },
		func() (Ack, error) { return c.Start(ctx, "c", "d") },
		func() (Ack, error) { return c.Fail(ctx, "c", "d", "boom") },
		func() (Ack, error) { return c.Start(ctx, "c", "e") },
		func() (Ack, error) { return c.Finish(ctx, "c", "e") },
	} {
		if _, err := write(); err != nil {
			t.Fatal(err)
		}
	}

	var all []MessageSummary
	for after, pages := "", 0; ; pages++ {
		page, next, err := c.Messages(ctx, "c", "", after, 3)
		if err != nil || pages > 2 {
			t.Fatalf("Messages after %q = %+v, %q, %v", after, page, next, err)
		}
		all = append(all, page...)
		if next == "" {
			break
		}
		after = next
	}
	want := []MessageSummary{
		{ID: "a", Status: conversation.StatusReceived, LastStep: conversation.NoStep, ReceivedAt: 7, UpdatedAt: 1_000_000},
		{ID: "b", Status: conversation.StatusInProgress, Attempts: 1, LastStep: 3, ReceivedAt: 7, UpdatedAt: 1_000_010,
			Worker: "w", LeaseExpiresAt: 1_060_010},
		{ID: "d", Status: conversation.StatusErrored, Attempts: 1, LastStep: conversation.NoStep, ReceivedAt: 7, UpdatedAt: 1_000_010,
			Quarantined: true},
		{ID: "e", Status: conversation.StatusFinished, Attempts: 1, LastStep: conversation.NoStep, ReceivedAt: 7, UpdatedAt: 1_000_010},
	}
	if !reflect.DeepEqual(all, want) {
		t.Errorf("Messages, 3 a page =\n%+v\nwant\n%+v", all, want)
	}
	for status, ids := range map[string][]string{
		"received": {"a"}, "in_progress": {"b"}, "leased": {"b"}, "errored": {"d"}, "quarantined": {"d"}, "finished": {"e"},
	} {
		page, next, err := c.Messages(ctx, "c", status, "", 0)
		var got []string
		for _, m := range page {
			got = append(got, m.ID)
		}
		if err != nil || next != "" || !slices.Equal(got, ids) {
			t.Errorf("Messages(%q) = %v, %q, %v; want %v", status, got, next, err, ids)
		}
	}
	_, _, err := c.Messages(ctx, "c", "stuck", "", 0)
	var fe *conversation.FieldError
	if !errors.Is(err, CodeBadRequest) || !errors.As(err, &fe) || fe.Field != "status" {
		t.Errorf("Messages(stuck): %v, want bad_request naming status", err)
	}
}

// TestClient_Explain: explain answers the decision, its rule, a reason
// and the message's events.
func TestClient_Explain(t *testing.T) {
	clock := newTestClock(1_000_000)
	c := startClockServer(t, clock, 0)
	ctx := context.Background()
	x, err := c.Explain(ctx, "c", "m")
	if err != nil || x.Action != conversation.Start || x.Rule != conversation.RuleNeverSeen || x.Reason == "" || len(x.Events) != 0 {
		t.Errorf("Explain of a new message = %+v, %v; want start by never_seen, no events", x, err)
	}
	if _, err := c.Receive(ctx, "c", "m", Fingerprint("sha:1")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Start(ctx, "c", "m", Worker("w1"), Lease(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Step(ctx, "c", "m", 0, []byte{0xff}); err != nil {
		t.Fatal(err)
	}
	x, err = c.Explain(ctx, "c", "m")
	if err != nil || x.Action != conversation.Busy || x.Rule != conversation.RuleLeased || x.Worker != "w1" || x.Token != 1 ||
		!strings.Contains(x.Reason, `worker "w1"`) || len(x.Events) != 3 {
		t.Errorf("Explain while leased = %+v, %v; want busy by leased, naming w1, with 3 events", x, err)
	}
	clock.ms.Add(1000)
	x, err = c.Explain(ctx, "c", "m", WithSteps())
	if err != nil || x.Action != conversation.Resume || x.Rule != conversation.RuleInProgress || x.ResumeFrom != 1 ||
		len(x.Steps) != 1 || !bytes.Equal(x.Steps[0].Output, []byte{0xff}) {
		t.Errorf("Explain after the lapse = %+v, %v; want resume from 1 by in_progress, with its step", x, err)
	}
	if e := x.Events; len(e) != 3 || e[0].Fingerprint != "sha:1" || e[1].Worker != "w1" || e[1].LeaseMS != 1000 || e[2].StepIndex != 0 {
		t.Errorf("Explain's events = %+v", e)
	}
	if _, err := c.Explain(ctx, "c", "m", Fingerprint("sha:2")); !errors.Is(err, CodeFingerprintMismatch) {
		t.Errorf("Explain with another fingerprint: %v, want fingerprint_mismatch", err)
	}
}

// TestLease checks that a lease is sent in whole milliseconds, rounded up,
// and that one of none is left for the server to refuse.
func TestLease(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want int64
	}{
		{time.Millisecond, 1}, {1500 * time.Microsecond, 2}, {time.Nanosecond, 1}, {30 * time.Second, 30_000}, {0, 0}, {-time.Second, -1000},
	} {
		if got := collect([]Option{Lease(tc.d)}).leaseMS; got != tc.want {
			t.Errorf("Lease(%v) sends lease_ms %d, want %d", tc.d, got, tc.want)
		}
	}
}

// TestClient_OutputTooLarge: an output over the server's max_output_bytes
// is refused before it is sent, naming both sizes, and one at the limit
// is recorded.
func TestClient_OutputTooLarge(t *testing.T) {
	ts := startServer(t, Config{MaxLineBytes: 256 << 10})
	c := mustDial(t, ts)
	ctx := context.Background()
	if _, err := c.Receive(ctx, "c", "m"); err != nil {
		t.Fatal(err)
	}
	limit := MaxOutputBytes(256 << 10)
	_, err := c.Step(ctx, "c", "m", 0, make([]byte, limit+1))
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeBadRequest || e.Details["field"] != "output" ||
		!strings.Contains(e.Message, fmt.Sprint(limit+1)) || !strings.Contains(e.Message, fmt.Sprint(limit)) {
		t.Fatalf("Step of %d bytes: %v, want bad_request naming both sizes", limit+1, err)
	}
	if ack, err := c.Step(ctx, "c", "m", 0, make([]byte, limit)); err != nil || ack.Seq != 1 {
		t.Errorf("Step of %d bytes (the limit) = %+v, %v; want it recorded", limit, ack, err)
	}
}
