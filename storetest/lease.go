package storetest

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"liminald/conversation"
)

// lapse, in the setup of a case of testLeaseRules, moves the clock past
// every lease the case gives. It is no write: its Op is none.
var lapse = conversation.Command{}

// testLeaseRules runs the rules of SPEC §7 for start, step, finish, fail
// and renew through the store, in their order: each case writes its setup
// (moving the clock where it says lapse), then checks the outcome of its
// last command: its seq, token and lease (counted from the ts of the event
// that set it), or its error with the details it carries.
func testLeaseRules(t *testing.T, f Factory) {
	receive := Cmd(conversation.OpReceive, "m")
	start := Cmd(conversation.OpStart, "m")
	w1, w2 := leasedStart("m", "w1", 30*time.Second), leasedStart("m", "w2", 30*time.Second)
	type want struct {
		seq       int64
		duplicate bool
		token     int64 // for a start
		// lease is the lease the command leaves (or, for busy, finds),
		// counted from the ts of the event at seq leaseOf; 0 for none.
		lease   time.Duration
		leaseOf int64
		err     error // an error of package conversation, or a *BusyError or *FencedError whose fields count
	}
	tests := []struct {
		name  string
		setup []conversation.Command
		cmd   conversation.Command
		want  want
	}{
		{"FirstLeasedStart", []conversation.Command{receive}, w1, want{seq: 1, token: 1, lease: 30 * time.Second, leaseOf: 1}},
		{"SameWorkerWhileLeasedIsDuplicate", []conversation.Command{receive, w1}, w1, want{seq: 1, duplicate: true, token: 1, lease: 30 * time.Second, leaseOf: 1}},
		{"OtherWorkerWhileLeasedIsBusy", []conversation.Command{receive, w1}, w2, want{err: &conversation.BusyError{Worker: "w1", Token: 1}, lease: 30 * time.Second, leaseOf: 1}},
		{"NoWorkerWhileLeasedIsBusy", []conversation.Command{receive, w1}, start, want{err: &conversation.BusyError{Worker: "w1", Token: 1}, lease: 30 * time.Second, leaseOf: 1}},
		{"RenewedLeaseOfNoWorkerIsBusy", []conversation.Command{receive, start, renew("m", 1, time.Minute)}, w2, want{err: &conversation.BusyError{Token: 1}, lease: time.Minute, leaseOf: 2}},
		{"TakeoverOnceLapsed", []conversation.Command{receive, w1, lapse}, w2, want{seq: 2, token: 2, lease: 30 * time.Second, leaseOf: 2}},
		{"SameWorkerOnceLapsedTakesOver", []conversation.Command{receive, w1, lapse}, w1, want{seq: 2, token: 2, lease: 30 * time.Second, leaseOf: 2}},
		{"StartWithoutLeaseOnceLapsedIsDuplicate", []conversation.Command{receive, w1, lapse}, start, want{seq: 1, duplicate: true, token: 1}},
		{"TakeoverOfStartWithoutLease", []conversation.Command{receive, start}, w2, want{seq: 2, token: 2, lease: 30 * time.Second, leaseOf: 2}},
		{"LeasedStartAfterErrorIsRetry", []conversation.Command{receive, w1, withToken(fail("m", "boom"), 1)}, w2, want{seq: 3, token: 3, lease: 30 * time.Second, leaseOf: 3}},
		{"RetryOfFencedStartAnswersItsToken", []conversation.Command{receive, w1, lapse, w2}, expect(w1, 1), want{seq: 1, duplicate: true, token: 1, lease: 30 * time.Second, leaseOf: 1}},
		{"UnknownMessageBeforeFencing", nil, withToken(Step("m", 0, "a"), 1), want{err: conversation.ErrUnknownMessage}},
		{"AlreadyFinishedBeforeFencing", []conversation.Command{receive, start, Cmd(conversation.OpFinish, "m")}, withToken(Step("m", 0, "a"), 7), want{err: conversation.ErrAlreadyFinished}},
		{"NeverStartedIsFenced", []conversation.Command{receive}, withToken(Step("m", 0, "a"), 5), want{err: &conversation.FencedError{Token: 5, CurrentToken: 0}}},
		{"StepWithStaleToken", []conversation.Command{receive, start, w2}, withToken(Step("m", 0, "a"), 1), want{err: &conversation.FencedError{Token: 1, CurrentToken: 2}}},
		{"FinishWithStaleToken", []conversation.Command{receive, start, w2}, withToken(Cmd(conversation.OpFinish, "m"), 1), want{err: &conversation.FencedError{Token: 1, CurrentToken: 2}}},
		{"FailWithStaleToken", []conversation.Command{receive, start, w2}, withToken(fail("m", "boom"), 1), want{err: &conversation.FencedError{Token: 1, CurrentToken: 2}}},
		{"FencedBeforeDuplicate", []conversation.Command{receive, start, Step("m", 0, "a"), w2}, withToken(Step("m", 0, "a"), 1), want{err: &conversation.FencedError{Token: 1, CurrentToken: 3}}},
		{"StepWithCurrentToken", []conversation.Command{receive, start, w2}, withToken(Step("m", 0, "a"), 2), want{seq: 3}},
		{"DuplicateWithCurrentToken", []conversation.Command{receive, start, w2, Step("m", 0, "a")}, withToken(Step("m", 0, "a"), 2), want{seq: 3, duplicate: true}},
		{"RenewExtends", []conversation.Command{receive, w1}, renew("m", 1, time.Minute), want{seq: 2, lease: time.Minute, leaseOf: 2}},
		{"RenewLapsedLease", []conversation.Command{receive, w1, lapse}, renew("m", 1, time.Minute), want{seq: 2, lease: time.Minute, leaseOf: 2}},
		{"RenewGivesLeaseToStartWithoutOne", []conversation.Command{receive, start}, renew("m", 1, 10*time.Second), want{seq: 2, lease: 10 * time.Second, leaseOf: 2}},
		{"RenewRetryIsDuplicate", []conversation.Command{receive, w1, renew("m", 1, time.Minute)}, expect(renew("m", 1, time.Minute), 2), want{seq: 2, duplicate: true, lease: time.Minute, leaseOf: 2}},
		{"RenewStaleToken", []conversation.Command{receive, start, w2}, renew("m", 1, time.Minute), want{err: &conversation.FencedError{Token: 1, CurrentToken: 2}}},
		{"RenewUnknownMessage", nil, renew("m", 1, time.Minute), want{err: conversation.ErrUnknownMessage}},
		{"RenewFinished", []conversation.Command{receive, start, Cmd(conversation.OpFinish, "m")}, renew("m", 1, time.Minute), want{err: &conversation.FencedError{Token: 1, CurrentToken: 1}}},
		{"RenewErrored", []conversation.Command{receive, start, fail("m", "boom")}, renew("m", 1, time.Minute), want{err: &conversation.FencedError{Token: 1, CurrentToken: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := open(t, f)
			for _, c := range tt.setup {
				if c.Op == lapse.Op {
					e.clock.Advance(2 * time.Minute)
					continue
				}
				e.mustWrite(c)
			}
			before := len(e.events("c"))
			got, err := e.write(tt.cmd)
			leaseUntil := int64(0)
			if tt.want.lease > 0 {
				leaseUntil = e.event("c", tt.want.leaseOf).TS + tt.want.lease.Milliseconds()
			}
			var busy *conversation.BusyError
			var fenced *conversation.FencedError
			switch want := tt.want.err.(type) {
			case nil:
				if err != nil {
					t.Fatalf("Write(%+v) error = %v", tt.cmd, err)
				}
			case *conversation.BusyError:
				if !errors.As(err, &busy) || busy.Worker != want.Worker || busy.Token != want.Token || !e.near(busy.RetryAfterMS, leaseUntil-e.now()) {
					t.Errorf("Write(%+v) error = %#v, want busy by %q, token %d, retry after %d ms", tt.cmd, err, want.Worker, want.Token, leaseUntil-e.now())
				}
			case *conversation.FencedError:
				if !errors.As(err, &fenced) || fenced.Token != want.Token || fenced.CurrentToken != want.CurrentToken {
					t.Errorf("Write(%+v) error = %#v, want fenced, token %d, current token %d", tt.cmd, err, want.Token, want.CurrentToken)
				}
			default:
				if !errors.Is(err, want) {
					t.Errorf("Write(%+v) error = %v, want %v", tt.cmd, err, want)
				}
			}
			after := len(e.events("c"))
			if tt.want.err != nil {
				if after != before {
					t.Errorf("rejected Write appended %d events", after-before)
				}
				return
			}
			if got.Seq != tt.want.seq || got.Duplicate != tt.want.duplicate || got.Append == tt.want.duplicate || got.Token != tt.want.token || got.LeaseExpiresAt != leaseUntil {
				t.Errorf("Write(%+v) = %+v; want seq %d, duplicate %v, token %d, lease until %d", tt.cmd, got, tt.want.seq, tt.want.duplicate, tt.want.token, leaseUntil)
			}
			if wantAfter := before + map[bool]int{true: 1}[got.Append]; after != wantAfter {
				t.Errorf("log has %d events after Write, want %d", after, wantAfter)
			}
			if tt.cmd.Op == conversation.OpStart && !tt.want.duplicate {
				m := e.message("m")
				if m.Token() != got.Token || m.Worker != tt.cmd.Worker || m.LeaseUntil != leaseUntil {
					t.Errorf("Message after the start = %+v, want token %d, worker %q, lease until %d", m, got.Token, tt.cmd.Worker, leaseUntil)
				}
			}
		})
	}
}

// testLeases runs a lease through its life on a clock the test moves:
// the store judges it at its own clock, both when it writes and when it
// decides, and it survives a restart because it is in the log (SPEC §7).
func testLeases(t *testing.T, f Factory) {
	e := open(t, f)
	e.mustWrite(Cmd(conversation.OpReceive, "m"))
	o := e.mustWrite(leasedStart("m", "w1", time.Minute))
	leaseUntil := e.event("c", 1).TS + time.Minute.Milliseconds()
	if o.Token != 1 || o.LeaseExpiresAt != leaseUntil {
		t.Fatalf("leased start = %+v, want token 1, lease until %d", o, leaseUntil)
	}
	e.clock.Advance(10 * time.Second)
	d, err := e.h.Decide(e.ctx, "c", "m", conversation.Delivery{})
	if err != nil || d.Action != conversation.Busy || d.Worker != "w1" || d.Token != 1 || !e.near(d.RetryAfterMS, leaseUntil-e.now()) {
		t.Errorf("Decide while leased = %+v, %v; want busy by w1, token 1, retry after %d ms", d, err, leaseUntil-e.now())
	}
	o, err = e.write(Cmd(conversation.OpReceive, "m"))
	if err != nil || o.Append || o.Decision.Action != conversation.Busy || o.Decision.Worker != "w1" || !e.near(o.Decision.RetryAfterMS, leaseUntil-e.now()) {
		t.Errorf("receive while leased = %+v, %v; want busy, nothing appended", o, err)
	}
	if m := e.message("m"); !m.Leased(e.now()) || m.LeaseUntil != leaseUntil || m.Worker != "w1" {
		t.Errorf("Message while leased = %+v, want leased by w1 until %d", m, leaseUntil)
	}
	// Renewed from now: the lease lasts a minute more.
	r := expect(renew("m", 1, time.Minute), 2)
	o = e.mustWrite(r)
	leaseUntil = e.event("c", 2).TS + time.Minute.Milliseconds()
	if o.Seq != 2 || o.LeaseExpiresAt != leaseUntil || !e.near(leaseUntil, e.now()+time.Minute.Milliseconds()) {
		t.Errorf("renew = %+v, want seq 2, the lease until now + 1 minute", o)
	}
	if m := e.message("m"); m.LeaseUntil != leaseUntil || m.Token() != 1 {
		t.Errorf("Message after the renew = %+v, want token 1 leased until %d", m, leaseUntil)
	}

	// A restart keeps the lease: it is in the log.
	e.restart()
	e.clock.Advance(50 * time.Second)
	if d, err := e.h.Decide(e.ctx, "c", "m", conversation.Delivery{}); err != nil || d.Action != conversation.Busy || !e.near(d.RetryAfterMS, leaseUntil-e.now()) {
		t.Errorf("Decide after a restart = %+v, %v; want busy for %d ms more", d, err, leaseUntil-e.now())
	}
	e.clock.Advance(10 * time.Second)
	if d, err := e.h.Decide(e.ctx, "c", "m", conversation.Delivery{}); err != nil || d.Action != conversation.Resume {
		t.Errorf("Decide once the lease lapsed = %+v, %v; want resume", d, err)
	}
	// A takeover fences the first worker.
	if o := e.mustWrite(leasedStart("m", "w2", time.Minute)); o.Token != 3 || o.Duplicate {
		t.Errorf("takeover = %+v, want a new start with token 3", o)
	}
	var fenced *conversation.FencedError
	if _, err := e.write(withToken(Step("m", 0, "late"), 1)); !errors.As(err, &fenced) || fenced.CurrentToken != 3 {
		t.Errorf("step with the old token: %v, want fenced by token 3", err)
	}
	e.mustWrite(withToken(Step("m", 0, "ok"), 3))
	e.mustWrite(withToken(Cmd(conversation.OpFinish, "m"), 3))
	if m := e.message("m"); m.Attempts != 2 || m.Worker != "w2" || m.Token() != 3 || m.Status != conversation.StatusFinished || m.Leased(e.now()) {
		t.Errorf("Message = %+v; want finished, 2 attempts, worker w2, token 3, not leased", m)
	}
}

// testQuarantine: a message started max_attempts times is quarantined,
// for decisions, starts and the messages filter, only when it holds no
// lease and only for a start that would append; raising the setting live
// lets it go, and a release starts its attempts again (SPEC §7). The
// messages filters and pages come with it.
func testQuarantine(t *testing.T, f Factory) {
	e := open(t, f)
	e.h.SetMaxAttempts(2)
	for _, m := range []string{"a", "b", "c"} {
		e.mustWrite(Cmd(conversation.OpReceive, m))
	}
	for range 2 {
		e.mustWrite(Cmd(conversation.OpStart, "a"))
		e.mustWrite(fail("a", "boom"))
	}
	e.mustWrite(leasedStart("b", "w", time.Minute))
	var busy *conversation.BusyError
	if _, err := e.write(Cmd(conversation.OpStart, "b")); !errors.As(err, &busy) || busy.Worker != "w" {
		t.Errorf("start of leased b: %v, want busy by w", err)
	}
	if d, err := e.h.Decide(e.ctx, "c", "a", conversation.Delivery{}); err != nil || d.Action != conversation.Quarantined || d.Attempts != 2 || d.Error != "boom" {
		t.Errorf("Decide(a) = %+v, %v; want quarantined after 2 attempts with error boom", d, err)
	}
	if o, err := e.write(Cmd(conversation.OpReceive, "a")); err != nil || o.Append || o.Decision.Action != conversation.Quarantined {
		t.Errorf("receive of a = %+v, %v; want quarantined, nothing appended", o, err)
	}
	if _, err := e.write(Cmd(conversation.OpStart, "a")); !errors.Is(err, conversation.ErrQuarantined) {
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
		list, err := e.h.Messages(e.ctx, "c", tt.filter, "", 10, e.h.Moment())
		if got := ids(list); err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("Messages(%q) = %v, %v; want %v", tt.filter, got, err, tt.want)
		}
	}
	if list, err := e.h.Messages(e.ctx, "c", "", "a", 1, e.h.Moment()); err != nil || fmt.Sprint(ids(list)) != "[b]" || list[0].Attempts != 1 || list[0].Worker != "w" {
		t.Errorf("Messages(after a, limit 1) = %+v, %v; want b, 1 attempt by w", list, err)
	}
	if list, err := e.h.Messages(e.ctx, "c", "quarantined", "", 10, conversation.Moment{Now: e.now()}); err != nil || len(list) != 0 {
		t.Errorf("Messages(quarantined) with no max_attempts = %v, %v; want none", ids(list), err)
	}
	var fe *conversation.FieldError
	if _, err := e.h.Messages(e.ctx, "c", "stuck", "", 10, e.h.Moment()); !errors.As(err, &fe) || fe.Field != "status" {
		t.Errorf("Messages(stuck): %v, want a field error naming status", err)
	}
	// The lease of b lapses: b is not leased, and with 1 attempt not
	// quarantined either.
	e.clock.Advance(time.Minute)
	if list, _ := e.h.Messages(e.ctx, "c", "leased", "", 10, e.h.Moment()); len(list) != 0 {
		t.Errorf("Messages(leased) after the lapse = %v, want none", ids(list))
	}
	// A second start of b without a lease is a duplicate, not an attempt;
	// with one it is a takeover, its second attempt. Now quarantined
	// while in progress, its plain start is still a duplicate, and only a
	// takeover is refused.
	if o := e.mustWrite(Cmd(conversation.OpStart, "b")); !o.Duplicate {
		t.Errorf("start of b without a lease = %+v, want a duplicate", o)
	}
	e.mustWrite(leasedStart("b", "w", time.Second))
	e.clock.Advance(time.Second)
	if o := e.mustWrite(Cmd(conversation.OpStart, "b")); !o.Duplicate {
		t.Errorf("start of quarantined b without a lease = %+v, want a duplicate", o)
	}
	if _, err := e.write(leasedStart("b", "w", time.Second)); !errors.Is(err, conversation.ErrQuarantined) {
		t.Errorf("takeover of quarantined b: %v, want ErrQuarantined", err)
	}
	e.h.SetMaxAttempts(3)
	if d, err := e.h.Decide(e.ctx, "c", "a", conversation.Delivery{}); err != nil || d.Action != conversation.Resume {
		t.Errorf("Decide(a) with max_attempts 3 = %+v, %v; want resume", d, err)
	}
	if _, err := e.write(Cmd(conversation.OpRelease, "a")); !errors.Is(err, conversation.ErrNotQuarantined) {
		t.Errorf("release of a with max_attempts 3: %v, want ErrNotQuarantined", err)
	}
	e.h.SetMaxAttempts(2)
	rel := Cmd(conversation.OpRelease, "a")
	rel.Reason = "fixed the parser"
	e.mustWrite(rel)
	if _, err := e.write(rel); !errors.Is(err, conversation.ErrNotQuarantined) {
		t.Errorf("second release: %v, want ErrNotQuarantined", err)
	}
	if _, err := e.write(Cmd(conversation.OpRelease, "x")); !errors.Is(err, conversation.ErrUnknownMessage) {
		t.Errorf("release of a message never received: %v, want ErrUnknownMessage", err)
	}
	if d, err := e.h.Decide(e.ctx, "c", "a", conversation.Delivery{}); err != nil || d.Action != conversation.Resume {
		t.Errorf("Decide(a) after release = %+v, %v; want resume", d, err)
	}
	if m := e.message("a"); m.Attempts != 0 || m.Status != conversation.StatusErrored || m.Error != "boom" {
		t.Errorf("Message(a) after release = %+v, want errored with 0 attempts", m)
	}
	events, err := e.h.MessageEvents(e.ctx, "c", e.message("a"), 100)
	if err != nil || len(events) != 6 || events[5].Type != conversation.MessageReleased || events[5].Reason != "fixed the parser" {
		t.Errorf("MessageEvents(a) = %+v, %v; want its 6 events, the last the release", events, err)
	}
	// Two more attempts quarantine it again.
	e.mustWrite(Cmd(conversation.OpStart, "a"))
	if d, _ := e.h.Decide(e.ctx, "c", "a", conversation.Delivery{}); d.Action != conversation.Resume {
		t.Errorf("Decide(a) after 1 attempt since the release = %+v, want resume", d)
	}
	e.mustWrite(fail("a", "boom again"))
	e.mustWrite(Cmd(conversation.OpStart, "a"))
	if d, _ := e.h.Decide(e.ctx, "c", "a", conversation.Delivery{}); d.Action != conversation.Quarantined || d.Attempts != 2 {
		t.Errorf("Decide(a) after 2 attempts since the release = %+v, want quarantined", d)
	}
}

// testFingerprint: the first receive stores the fingerprint; a later
// receive or decide with another one is refused before any decision, and
// one without a fingerprint, or of a message never received, is not
// checked (SPEC §7).
func testFingerprint(t *testing.T, f Factory) {
	e := open(t, f)
	r := Cmd(conversation.OpReceive, "m")
	r.Fingerprint = "sha256:aa"
	e.mustWrite(r)
	other := r
	other.Fingerprint = "sha256:bb"
	var fm *conversation.FingerprintMismatchError
	if _, err := e.write(other); !errors.As(err, &fm) || fm.Stored != "sha256:aa" {
		t.Errorf("receive with another fingerprint: %v, want a mismatch naming sha256:aa", err)
	}
	if _, err := e.h.Decide(e.ctx, "c", "m", conversation.Delivery{Fingerprint: "sha256:bb"}); !errors.As(err, &fm) {
		t.Errorf("decide with another fingerprint: %v, want a mismatch", err)
	}
	for _, fp := range []string{"sha256:aa", ""} {
		if d, err := e.h.Decide(e.ctx, "c", "m", conversation.Delivery{Fingerprint: fp}); err != nil || d.Action != conversation.Resume {
			t.Errorf("Decide(fingerprint %q) = %+v, %v; want resume", fp, d, err)
		}
	}
	if d, err := e.h.Decide(e.ctx, "c", "n", conversation.Delivery{Fingerprint: "sha256:bb"}); err != nil || d.Action != conversation.Start {
		t.Errorf("Decide(n, a fingerprint) = %+v, %v; want start", d, err)
	}
	// A message received without one is never checked.
	e.mustWrite(Cmd(conversation.OpReceive, "n"))
	if d, err := e.h.Decide(e.ctx, "c", "n", conversation.Delivery{Fingerprint: "sha256:bb"}); err != nil || d.Action != conversation.Resume {
		t.Errorf("Decide(n) = %+v, %v; want resume", d, err)
	}
	if m := e.message("m"); m.Fingerprint != "sha256:aa" {
		t.Errorf("Message.Fingerprint = %q, want sha256:aa", m.Fingerprint)
	}
	if n := len(e.events("c")); n != 2 {
		t.Errorf("log has %d events, want the 2 receives", n)
	}
}
