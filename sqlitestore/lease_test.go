package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
)

// testClock is the store's clock in a test: it moves only when told.
type testClock struct{ ms atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ms.Store(1_700_000_000_000)
	return c
}

func (c *testClock) Now() time.Time               { return time.UnixMilli(c.ms.Load()) }
func (c *testClock) advance(d time.Duration)      { c.ms.Add(d.Milliseconds()) }
func (c *testClock) millis(d time.Duration) int64 { return c.ms.Load() + d.Milliseconds() }

func leasedStart(m, worker string, lease time.Duration) conversation.Command {
	c := cmd(conversation.OpStart, m)
	c.Worker, c.LeaseMS = worker, lease.Milliseconds()
	return c
}

func withToken(c conversation.Command, token int64) conversation.Command {
	c.Token, c.HasToken = token, true
	return c
}

// TestStore_Leases runs leases, fencing and renewals through the store on
// a clock the test moves: the store judges them at its own clock, both
// when it writes and when it decides, and they survive a restart because
// they are in the log.
func TestStore_Leases(t *testing.T) {
	clock := newTestClock()
	path := filepath.Join(t.TempDir(), "test.db")
	s := mustOpenPath(t, path, Options{Now: clock.Now})
	ctx := context.Background()
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	o := mustWrite(t, s, leasedStart("m", "w1", 30*time.Second))
	if o.Token != 1 || o.LeaseExpiresAt != clock.millis(30*time.Second) {
		t.Fatalf("leased start = %+v, want token 1, lease until now+30s", o)
	}
	clock.advance(10 * time.Second)
	d, err := s.Decide(ctx, "c", "m", conversation.Delivery{})
	if err != nil || d.Action != conversation.Busy || d.Worker != "w1" || d.Token != 1 || d.RetryAfterMS != 20_000 {
		t.Errorf("Decide while leased = %+v, %v; want busy by w1, token 1, retry after 20000 ms", d, err)
	}
	var busy *conversation.BusyError
	if _, err := s.Write(ctx, leasedStart("m", "w2", time.Minute)); !errors.As(err, &busy) || busy.RetryAfterMS != 20_000 {
		t.Errorf("start by w2 while leased: %v, want busy", err)
	}
	// Renewed from now: the lease lasts 30s more.
	r := withToken(expect(cmd(conversation.OpRenew, "m"), 2), 1)
	r.LeaseMS = 30_000
	if o := mustWrite(t, s, r); o.Seq != 2 || o.LeaseExpiresAt != clock.millis(30*time.Second) {
		t.Errorf("renew = %+v, want seq 2, the lease until now+30s", o)
	}
	// Its retry is a duplicate of it.
	if o := mustWrite(t, s, r); !o.Duplicate || o.Seq != 2 {
		t.Errorf("retried renew = %+v, want a duplicate of seq 2", o)
	}

	// A restart keeps the lease: it is in the log.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenPath(t, path, Options{Now: clock.Now})
	clock.advance(29 * time.Second)
	if d, err := s.Decide(ctx, "c", "m", conversation.Delivery{}); err != nil || d.Action != conversation.Busy || d.RetryAfterMS != 1000 {
		t.Errorf("Decide after a restart = %+v, %v; want busy for 1000 ms more", d, err)
	}
	clock.advance(time.Second)
	if d, err := s.Decide(ctx, "c", "m", conversation.Delivery{}); err != nil || d.Action != conversation.Resume {
		t.Errorf("Decide once the lease lapsed = %+v, %v; want resume", d, err)
	}
	// A takeover fences the first worker.
	if o := mustWrite(t, s, leasedStart("m", "w2", time.Minute)); o.Token != 3 || o.Duplicate {
		t.Errorf("takeover = %+v, want a new start with token 3", o)
	}
	var fenced *conversation.FencedError
	if _, err := s.Write(ctx, withToken(step("m", 0, "late"), 1)); !errors.As(err, &fenced) || fenced.CurrentToken != 3 {
		t.Errorf("step with the old token: %v, want fenced by token 3", err)
	}
	mustWrite(t, s, withToken(step("m", 0, "ok"), 3))
	mustWrite(t, s, withToken(cmd(conversation.OpFinish, "m"), 3))
	if m, err := s.Message(ctx, "c", "m"); err != nil || m.Attempts != 2 || m.Worker != "w2" || m.Token() != 3 {
		t.Errorf("Message = %+v, %v; want 2 attempts, worker w2, token 3", m, err)
	}
}

// TestStore_Quarantine: a message started max_attempts times is
// quarantined, for decisions, starts and the messages filter; raising the
// setting live lets it go, and a release starts its attempts again.
func TestStore_Quarantine(t *testing.T) {
	clock := newTestClock()
	s := mustOpenStore(t, Options{Now: clock.Now, MaxAttempts: 2})
	ctx := context.Background()
	for _, m := range []string{"a", "b", "c"} {
		mustWrite(t, s, cmd(conversation.OpReceive, m))
	}
	for range 2 {
		mustWrite(t, s, cmd(conversation.OpStart, "a"))
		mustWrite(t, s, fail("a", "boom"))
	}
	mustWrite(t, s, leasedStart("b", "w", time.Minute))
	if d, err := s.Decide(ctx, "c", "a", conversation.Delivery{}); err != nil || d.Action != conversation.Quarantined || d.Attempts != 2 || d.Error != "boom" {
		t.Errorf("Decide(a) = %+v, %v; want quarantined after 2 attempts with error boom", d, err)
	}
	if _, err := s.Write(ctx, cmd(conversation.OpStart, "a")); !errors.Is(err, conversation.ErrQuarantined) {
		t.Errorf("start of a quarantined message: %v, want ErrQuarantined", err)
	}
	for _, tt := range []struct {
		filter string
		want   []string
	}{
		{"", []string{"a", "b", "c"}},
		{"quarantined", []string{"a"}},
		{"leased", []string{"b"}},
		{"received", []string{"c"}},
		{"errored", []string{"a"}},
		{"in_progress", []string{"b"}},
		{"finished", nil},
	} {
		list, err := s.Messages(ctx, "c", tt.filter, "", 10, s.Moment())
		if got := ids(list); err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Messages(%q) = %v, %v; want %v", tt.filter, got, err, tt.want)
		}
	}
	if list, err := s.Messages(ctx, "c", "", "a", 1, s.Moment()); err != nil || fmt.Sprint(ids(list)) != "[b]" {
		t.Errorf("Messages(after a, limit 1) = %v, %v; want [b]", ids(list), err)
	}
	var fe *conversation.FieldError
	if _, err := s.Messages(ctx, "c", "stuck", "", 10, s.Moment()); !errors.As(err, &fe) || fe.Field != "status" {
		t.Errorf("Messages(stuck): %v, want a field error naming status", err)
	}
	// The lease of b lapses: b is not leased, and with 1 attempt not
	// quarantined either.
	clock.advance(time.Minute)
	if list, _ := s.Messages(ctx, "c", "leased", "", 10, s.Moment()); len(list) != 0 {
		t.Errorf("Messages(leased) after the lapse = %v, want none", ids(list))
	}
	s.SetMaxAttempts(3)
	if d, _ := s.Decide(ctx, "c", "a", conversation.Delivery{}); d.Action != conversation.Resume {
		t.Errorf("Decide(a) with max_attempts 3 = %+v, want resume", d)
	}
	s.SetMaxAttempts(2)
	rel := cmd(conversation.OpRelease, "a")
	rel.Reason = "fixed the parser"
	mustWrite(t, s, rel)
	if _, err := s.Write(ctx, rel); !errors.Is(err, conversation.ErrNotQuarantined) {
		t.Errorf("second release: %v, want ErrNotQuarantined", err)
	}
	if d, _ := s.Decide(ctx, "c", "a", conversation.Delivery{}); d.Action != conversation.Resume {
		t.Errorf("Decide(a) after release = %+v, want resume", d)
	}
	events, err := s.MessageEvents(ctx, "c", mustMessage(t, s, "a"), 100)
	if err != nil || len(events) != 6 || events[5].Type != conversation.MessageReleased || events[5].Reason != "fixed the parser" {
		t.Errorf("MessageEvents(a) = %+v, %v; want its 6 events, the last the release", events, err)
	}
}

// TestStore_Fingerprint: the first receive stores the fingerprint; a later
// receive or decide with another one is refused before any decision, and
// one without a fingerprint is not checked.
func TestStore_Fingerprint(t *testing.T) {
	s := mustOpenStore(t, Options{})
	ctx := context.Background()
	r := cmd(conversation.OpReceive, "m")
	r.Fingerprint = "sha256:aa"
	mustWrite(t, s, r)
	other := r
	other.Fingerprint = "sha256:bb"
	var fm *conversation.FingerprintMismatchError
	if _, err := s.Write(ctx, other); !errors.As(err, &fm) || fm.Stored != "sha256:aa" {
		t.Errorf("receive with another fingerprint: %v, want a mismatch naming sha256:aa", err)
	}
	if _, err := s.Decide(ctx, "c", "m", conversation.Delivery{Fingerprint: "sha256:bb"}); !errors.As(err, &fm) {
		t.Errorf("decide with another fingerprint: %v, want a mismatch", err)
	}
	for _, fp := range []string{"sha256:aa", ""} {
		if d, err := s.Decide(ctx, "c", "m", conversation.Delivery{Fingerprint: fp}); err != nil || d.Action != conversation.Resume {
			t.Errorf("Decide(fingerprint %q) = %+v, %v; want resume", fp, d, err)
		}
	}
	if m := mustMessage(t, s, "m"); m.Fingerprint != "sha256:aa" {
		t.Errorf("Message.Fingerprint = %q, want sha256:aa", m.Fingerprint)
	}
}

func ids(list []conversation.Message) []string {
	var out []string
	for _, m := range list {
		out = append(out, m.ID)
	}
	return out
}

func mustMessage(tb testing.TB, s *Store, id string) *conversation.Message {
	tb.Helper()
	m, err := s.Message(context.Background(), "c", id)
	if err != nil || m == nil {
		tb.Fatalf("Message(%s) = %v, %v", id, m, err)
	}
	return m
}
