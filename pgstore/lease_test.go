package pgstore

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"liminald/conversation"
)

// within reports whether got is at most want and no more than slack below
// it: the database's clock runs on while a test looks.
func within(got, want int64, slack time.Duration) bool {
	return got <= want && got > want-slack.Milliseconds()
}

// TestStore_Leases runs leases, fencing and renewals through the store on
// the database's clock, moved by Options.ClockOffset: the store judges them
// at that clock both when it writes and when it decides, and they survive
// a restart because they are in the log.
func TestStore_Leases(t *testing.T) {
	db := newTestDB(t)
	clock := &offsetClock{}
	s := mustOpen(t, db, Options{ClockOffset: clock.offset})
	ctx := context.Background()
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	o := mustWrite(t, s, leasedStart("m", "w1", 30*time.Second))
	events := mustEvents(t, s, "c")
	if o.Token != 1 || o.LeaseExpiresAt != events[1].TS+30_000 {
		t.Fatalf("leased start = %+v, want token 1, lease until its ts+30s", o)
	}
	clock.advance(10 * time.Second)
	d, err := s.Decide(ctx, "c", "m", conversation.Delivery{})
	if err != nil || d.Action != conversation.Busy || d.Worker != "w1" || d.Token != 1 || !within(d.RetryAfterMS, 20_000, 5*time.Second) {
		t.Errorf("Decide while leased = %+v, %v; want busy by w1, token 1, retry after about 20000 ms", d, err)
	}
	var busy *conversation.BusyError
	if _, err := s.Write(ctx, leasedStart("m", "w2", time.Minute)); !errors.As(err, &busy) || !within(busy.RetryAfterMS, 20_000, 5*time.Second) {
		t.Errorf("start by w2 while leased: %v, want busy", err)
	}
	r := withToken(expect(cmd(conversation.OpRenew, "m"), 2), 1)
	r.LeaseMS = 30_000
	if o := mustWrite(t, s, r); o.Seq != 2 || o.LeaseExpiresAt != mustEvents(t, s, "c")[2].TS+30_000 {
		t.Errorf("renew = %+v, want seq 2, the lease until its ts+30s", o)
	}
	if o := mustWrite(t, s, r); !o.Duplicate || o.Seq != 2 {
		t.Errorf("retried renew = %+v, want a duplicate of seq 2", o)
	}

	// Another store on the database (a restart, or another daemon) sees
	// the lease: it is in the log, judged at the database's clock.
	other := mustOpen(t, db, Options{ClockOffset: clock.offset})
	if d, err := other.Decide(ctx, "c", "m", conversation.Delivery{}); err != nil || d.Action != conversation.Busy {
		t.Errorf("Decide through another store = %+v, %v; want busy", d, err)
	}
	clock.advance(31 * time.Second)
	if d, err := other.Decide(ctx, "c", "m", conversation.Delivery{}); err != nil || d.Action != conversation.Resume {
		t.Errorf("Decide once the lease lapsed = %+v, %v; want resume", d, err)
	}
	// A takeover through the other store fences the first worker.
	if o := mustWrite(t, other, leasedStart("m", "w2", time.Minute)); o.Token != 3 || o.Duplicate {
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
// quarantined, for decisions, starts and the messages filter; a release
// starts its attempts again. Fingerprints are checked before any decision.
func TestStore_Quarantine(t *testing.T) {
	db := newTestDB(t)
	s := mustOpen(t, db, Options{MaxAttempts: 2})
	ctx := context.Background()
	for _, m := range []string{"a", "b", "c"} {
		r := cmd(conversation.OpReceive, m)
		r.Fingerprint = "sha256:" + m
		mustWrite(t, s, r)
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
		{"finished", nil},
	} {
		list, err := s.Messages(ctx, "c", tt.filter, "", 10, s.Moment())
		var got []string
		for _, m := range list {
			got = append(got, m.ID)
		}
		if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Messages(%q) = %v, %v; want %v", tt.filter, got, err, tt.want)
		}
	}
	rel := cmd(conversation.OpRelease, "a")
	rel.Reason = "fixed the parser"
	mustWrite(t, s, rel)
	if _, err := s.Write(ctx, rel); !errors.Is(err, conversation.ErrNotQuarantined) {
		t.Errorf("second release: %v, want ErrNotQuarantined", err)
	}
	if d, _ := s.Decide(ctx, "c", "a", conversation.Delivery{}); d.Action != conversation.Resume {
		t.Errorf("Decide(a) after release = %+v, want resume", d)
	}

	var fm *conversation.FingerprintMismatchError
	other := cmd(conversation.OpReceive, "c")
	other.Fingerprint = "sha256:other"
	if _, err := s.Write(ctx, other); !errors.As(err, &fm) || fm.Stored != "sha256:c" {
		t.Errorf("receive with another fingerprint: %v, want a mismatch naming sha256:c", err)
	}
	if _, err := s.Decide(ctx, "c", "c", conversation.Delivery{Fingerprint: "sha256:other"}); !errors.As(err, &fm) {
		t.Errorf("decide with another fingerprint: %v, want a mismatch", err)
	}
	if d, err := s.Decide(ctx, "c", "c", conversation.Delivery{}); err != nil || d.Action != conversation.Resume {
		t.Errorf("decide without a fingerprint = %+v, %v; want resume", d, err)
	}
}
