package conversation

import (
	"errors"
	"maps"
	"reflect"
	"testing"
)

// history is a conversation built by State.Apply, with its log. Its clock
// is now, the time the rules see and the ts of the next event: it starts
// at 1000 and moves on by 1 ms an event, and by sleep. The rules judge its
// commands under maxAttempts.
type history struct {
	tb          testing.TB
	s           *State
	log         []Event
	now         int64
	maxAttempts int64
}

// newHistory returns the empty history of conversation name. At cleanup it
// checks that the state equals the replay of the log.
func newHistory(tb testing.TB, name string) *history {
	tb.Helper()
	h := &history{tb: tb, s: NewState(name), now: 1000}
	tb.Cleanup(func() {
		got, err := Replay(name, h.log)
		if err != nil {
			tb.Errorf("Replay(%q, log of %d events): %v", name, len(h.log), err)
			return
		}
		if !reflect.DeepEqual(got, h.s) {
			tb.Errorf("Replay(%q, log) = %+v, want the state built by Apply %+v", name, got, h.s)
		}
	})
	return h
}

// mustAppend makes the event of c at the next seq and applies it; it fails
// the test if Evaluate would not append it or Apply refuses it.
func (h *history) mustAppend(c Command) Event {
	h.tb.Helper()
	o, err := h.evaluate(c)
	if err != nil || !o.Append || o.Seq != h.s.Next {
		h.tb.Fatalf("Evaluate(%s) at %d = %+v, %v; want an append at %d", describe(&c), h.now, o, err, h.s.Next)
	}
	e := c.Event(h.s.Next, h.now)
	e.Conversation = h.s.Name
	if err := h.s.Apply(&e); err != nil {
		h.tb.Fatalf("Apply(%+v) = %v, want nil", e, err)
	}
	h.log = append(h.log, e)
	h.now++
	return e
}

// evaluate evaluates c against the history, now.
func (h *history) evaluate(c Command) (Outcome, error) {
	c.Conversation = h.s.Name
	k := h.s.Known(&c)
	k.Now, k.MaxAttempts = h.now, h.maxAttempts
	return Evaluate(&c, k)
}

// mustRefuse fails the test unless the rules refuse c now with want.
func (h *history) mustRefuse(c Command, want error) {
	h.tb.Helper()
	if o, err := h.evaluate(c); !matchError(err, want) {
		h.tb.Errorf("Evaluate(%s) at %d = %+v, %v; want %#v", describe(&c), h.now, o, err, want)
	}
}

// sleep moves the clock on by ms.
func (h *history) sleep(ms int64) { h.now += ms }

// cloneState returns a deep copy of s.
func cloneState(s *State) *State {
	c := *s
	c.Messages = make(map[string]*Message, len(s.Messages))
	for id, m := range s.Messages {
		mc := *m
		c.Messages[id] = &mc
	}
	c.Steps = maps.Clone(s.Steps)
	return &c
}

func TestState_Apply(t *testing.T) {
	t.Run("Lifecycle", func(t *testing.T) {
		h := newHistory(t, testConv)
		check := func(step string, want Counts) {
			t.Helper()
			if h.s.Counts != want {
				t.Errorf("after %s: Counts = %+v, want %+v", step, h.s.Counts, want)
			}
			if h.s.Next != int64(len(h.log)) {
				t.Errorf("after %s: Next = %d, want %d", step, h.s.Next, len(h.log))
			}
			var recount Counts
			for _, m := range h.s.Messages {
				recount.Move(StatusUnknown, m.Status)
			}
			if recount != h.s.Counts || h.s.Counts.Total() != int64(len(h.s.Messages)) {
				t.Errorf("after %s: Counts = %+v (total %d), but %d messages are %+v", step, h.s.Counts, h.s.Counts.Total(), len(h.s.Messages), recount)
			}
		}
		check("nothing", Counts{})
		h.mustAppend(receiveAtCmd(100))
		check("receive m", Counts{Received: 1})
		h.mustAppend(withMessage(receiveCmd(), "n"))
		check("receive n", Counts{Received: 2})
		h.mustAppend(startCmd())
		check("start m", Counts{Received: 1, InProgress: 1})
		h.mustAppend(stepCmd(0, []byte("a")))
		check("step m 0", Counts{Received: 1, InProgress: 1})
		h.mustAppend(failCmd("boom"))
		check("fail m", Counts{Received: 1, Errored: 1})
		h.mustAppend(stepCmd(3, []byte("late")))
		check("step m 3 while errored", Counts{Received: 1, Errored: 1})
		h.mustAppend(failCmd("boom"))
		check("fail m again after a step", Counts{Received: 1, Errored: 1})
		h.mustAppend(startCmd())
		check("restart m", Counts{Received: 1, InProgress: 1})
		h.mustAppend(withMessage(failCmd("bang"), "n"))
		check("fail n without a start", Counts{InProgress: 1, Errored: 1})
		h.mustAppend(finishCmd())
		check("finish m", Counts{Errored: 1, Finished: 1})
		h.mustAppend(withMessage(startCmd(), "n"))
		check("start n", Counts{InProgress: 1, Finished: 1})
		h.mustAppend(withMessage(finishCmd(), "n"))
		check("finish n", Counts{Finished: 2})

		m := h.s.Messages[testMsg]
		want := Message{ID: testMsg, Status: StatusFinished, ReceivedAt: 100, ReceivedSeq: 0, StartedSeq: 7, LastStep: 3, Error: "boom", LastType: ProcessingFinished, LastSeq: 9, LastTS: 1009, Attempts: 2}
		if m == nil || *m != want {
			t.Errorf("Messages[%q] = %+v, want %+v", testMsg, m, want)
		}
		n := h.s.Messages["n"]
		wantN := Message{ID: "n", Status: StatusFinished, ReceivedAt: 1001, ReceivedSeq: 1, StartedSeq: 10, LastStep: NoStep, Error: "bang", LastType: ProcessingFinished, LastSeq: 11, LastTS: 1011, Attempts: 1}
		if n == nil || *n != wantN {
			t.Errorf("Messages[%q] = %+v, want %+v", "n", n, wantN)
		}
		wantSteps := map[StepKey]StepRecord{
			{testMsg, 0}: {Index: 0, Seq: 3, Output: []byte("a")},
			{testMsg, 3}: {Index: 3, Seq: 5, Output: []byte("late")},
		}
		if !reflect.DeepEqual(h.s.Steps, wantSteps) {
			t.Errorf("Steps = %+v, want %+v", h.s.Steps, wantSteps)
		}
	})

	t.Run("NonContiguousStepsResumeAfterHighest", func(t *testing.T) {
		h := newHistory(t, testConv)
		h.mustAppend(receiveCmd())
		h.mustAppend(startCmd())
		h.mustAppend(stepCmd(5, nil))
		h.mustAppend(stepCmd(0, nil))
		h.mustAppend(stepCmd(2, nil))
		want := Decision{Action: Resume, Rule: RuleInProgress, ResumeFrom: 6}
		if got := Redelivery(h.s.Messages[testMsg], 0, 0); got != want {
			t.Errorf("Redelivery(after steps 5, 0, 2) = %+v, want %+v", got, want)
		}
	})

	// Each refusal leaves the state as it was. The base history is: 0 m
	// received, 1 m started, 2 m step 0 "out", 3 n received, 4 n started,
	// 5 n error "boom", 6 f received, 7 f finished.
	refusals := []struct {
		name string
		e    Event
	}{
		{"SeqTooHigh", *startedEvent(9)},
		{"SeqTooLow", Event{Conversation: testConv, Seq: 7, Type: MessageReceived, MessageID: "x"}},
		{"SeqZeroAgain", *receivedEvent(0, 1)},
		{"NegativeSeq", Event{Conversation: testConv, Seq: -1, Type: MessageReceived, MessageID: "x"}},
		{"WrongConversation", Event{Conversation: "other", Seq: 8, Type: MessageReceived, MessageID: "x"}},
		{"InvalidType", Event{Conversation: testConv, Seq: 8, Type: 0, MessageID: testMsg}},
		{"TypePastErrorOccurred", Event{Conversation: testConv, Seq: 8, Type: ErrorOccurred + 1, MessageID: testMsg}},
		{"StepForUnknownMessage", Event{Conversation: testConv, Seq: 8, Type: StepCompleted, MessageID: "x", Output: []byte("o")}},
		{"StartForUnknownMessage", Event{Conversation: testConv, Seq: 8, Type: ProcessingStarted, MessageID: "x"}},
		{"SecondReceive", Event{Conversation: testConv, Seq: 8, Type: MessageReceived, MessageID: testMsg, ReceivedAt: 1000}},
		{"SecondStartWhileInProgress", *startedEvent(8)},
		{"SameStepAgain", *stepEvent(8, 0, []byte("out"))},
		{"StepConflict", *stepEvent(8, 0, []byte("other"))},
		{"SameErrorAgain", Event{Conversation: testConv, Seq: 8, Type: ErrorOccurred, MessageID: "n", Error: "boom"}},
		{"StepAfterFinish", Event{Conversation: testConv, Seq: 8, Type: StepCompleted, MessageID: "f"}},
		{"FinishAfterFinish", Event{Conversation: testConv, Seq: 8, Type: ProcessingFinished, MessageID: "f"}},
		{"StartAfterFinish", Event{Conversation: testConv, Seq: 8, Type: ProcessingStarted, MessageID: "f"}},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			h := newHistory(t, testConv)
			h.mustAppend(receiveCmd())
			h.mustAppend(startCmd())
			h.mustAppend(stepCmd(0, []byte("out")))
			h.mustAppend(withMessage(receiveCmd(), "n"))
			h.mustAppend(withMessage(startCmd(), "n"))
			h.mustAppend(withMessage(failCmd("boom"), "n"))
			h.mustAppend(withMessage(receiveCmd(), "f"))
			h.mustAppend(withMessage(finishCmd(), "f"))
			before := cloneState(h.s)
			e := tt.e
			if err := h.s.Apply(&e); err == nil {
				t.Errorf("Apply(%+v) = nil, want an error", tt.e)
			}
			if !reflect.DeepEqual(h.s, before) {
				t.Errorf("Apply(%+v) refused, but changed the state to %+v, want %+v", tt.e, h.s, before)
			}
		})
	}

	t.Run("RuleErrorIsWrapped", func(t *testing.T) {
		s := NewState(testConv)
		e := Event{Conversation: testConv, Seq: 0, Type: StepCompleted, MessageID: testMsg}
		if err := s.Apply(&e); !errors.Is(err, ErrUnknownMessage) {
			t.Errorf("Apply(step of a message never received) = %v, want an error wrapping %v", err, ErrUnknownMessage)
		}
	})

	t.Run("AcceptsWhatEvaluateAppends", func(t *testing.T) {
		h := newHistory(t, testConv)
		h.mustAppend(receiveCmd())
		h.mustAppend(startCmd())
		// A fail after a restart with the same text, and a restart after it.
		h.mustAppend(failCmd("boom"))
		h.mustAppend(startCmd())
		h.mustAppend(failCmd("boom"))
		h.mustAppend(startCmd())
		if got := h.s.Messages[testMsg].StartedSeq; got != 5 {
			t.Errorf("StartedSeq = %d, want 5", got)
		}
	})
}

func TestState_ApplyProtocol2(t *testing.T) {
	t.Run("LeaseRenewTakeoverFence", func(t *testing.T) {
		h := newHistory(t, testConv)
		h.mustAppend(receiveCmd())             // 0 at 1000
		h.mustAppend(leaseStartCmd("w1", 100)) // 1 at 1001: leased until 1101
		h.mustRefuse(leaseStartCmd("w2", 100), &BusyError{Worker: "w1", Token: 1, RetryAfterMS: 99})
		h.mustAppend(token(stepCmd(0, []byte("a")), 1)) // 2 at 1002
		h.sleep(50)
		h.mustAppend(renewCmd(1, 200)) // 3 at 1053: leased until 1253
		if m := h.s.Messages[testMsg]; m.LeaseUntil != 1253 || !m.Leased(1252) || m.Leased(1253) {
			t.Errorf("after a renew at 1053 for 200 ms: LeaseUntil = %d, want 1253", m.LeaseUntil)
		}
		h.sleep(198)
		h.mustRefuse(leaseStartCmd("w2", 100), &BusyError{Worker: "w1", Token: 1, RetryAfterMS: 1})
		h.sleep(1)
		h.mustAppend(leaseStartCmd("w2", 100)) // 4 at 1253: a takeover
		h.mustRefuse(token(stepCmd(1, nil), 1), &FencedError{Token: 1, CurrentToken: 4})
		h.mustRefuse(renewCmd(1, 100), &FencedError{Token: 1, CurrentToken: 4})
		h.mustAppend(token(stepCmd(1, []byte("b")), 4)) // 5 at 1254
		h.mustAppend(token(failCmd("boom"), 4))         // 6 at 1255
		h.mustRefuse(renewCmd(4, 100), &FencedError{Token: 4, CurrentToken: 4})
		h.mustAppend(startCmd()) // 7 at 1256: a retry, no lease
		h.mustAppend(token(finishCmd(), 7))
		h.mustRefuse(renewCmd(7, 100), &FencedError{Token: 7, CurrentToken: 7})

		want := Message{ID: testMsg, Status: StatusFinished, ReceivedAt: 1000, StartedSeq: 7, LastStep: 1, Error: "boom",
			LastType: ProcessingFinished, LastSeq: 8, LastTS: 1257, Attempts: 3}
		if m := h.s.Messages[testMsg]; *m != want {
			t.Errorf("Messages[%q] = %+v, want %+v", testMsg, *m, want)
		}
	})

	t.Run("QuarantineAndRelease", func(t *testing.T) {
		h := newHistory(t, testConv)
		h.maxAttempts = 2
		h.mustAppend(fingerprintCmd("sha256:a"))
		h.mustAppend(startCmd())
		h.mustAppend(failCmd("boom"))
		h.mustRefuse(releaseCmd(""), ErrNotQuarantined)
		h.mustAppend(leaseStartCmd("w1", 10)) // 3 at 1003: the second attempt
		h.mustRefuse(releaseCmd(""), ErrNotQuarantined)
		h.sleep(10) // the lease lapsed: quarantined
		wantQ := Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: 2, Error: "boom"}
		if o, err := h.evaluate(fingerprintCmd("sha256:a")); err != nil || o != (Outcome{Decision: wantQ}) {
			t.Errorf("receive of a quarantined message = %+v, %v; want %+v", o, err, wantQ)
		}
		h.mustRefuse(leaseStartCmd("w2", 10), ErrQuarantined)
		if o, err := h.evaluate(startCmd()); err != nil || o != (Outcome{Seq: 3, Duplicate: true, Token: 3}) {
			t.Errorf("start without lease of a quarantined message = %+v, %v; want a duplicate of 3", o, err)
		}
		h.mustAppend(releaseCmd("fixed")) // 4
		if m := h.s.Messages[testMsg]; m.Attempts != 0 || m.Status != StatusInProgress || m.StartedSeq != 3 {
			t.Errorf("after release: %+v, want attempts 0, still in progress with token 3", *m)
		}
		h.mustRefuse(releaseCmd(""), ErrNotQuarantined)
		h.mustAppend(leaseStartCmd("w2", 10)) // 5: a takeover, attempt 1
		h.mustAppend(failCmd("bang"))
		// Lowering max_attempts quarantines at once; raising it again frees.
		h.maxAttempts = 1
		h.mustRefuse(startCmd(), ErrQuarantined)
		h.maxAttempts = 0
		h.mustRefuse(releaseCmd(""), ErrNotQuarantined)
		h.mustAppend(startCmd())
		h.mustAppend(finishCmd())
		if m := h.s.Messages[testMsg]; m.Attempts != 2 || m.Fingerprint != "sha256:a" {
			t.Errorf("at the end: %+v, want attempts 2 and the fingerprint kept", *m)
		}
	})

	// Each event is judged at its ts, as the rules judged it when they
	// appended it. The base history is: 0 m received, 1 m started by "w1"
	// for 1000 ms at 1001 (leased until 2001), 2 n received, 3 n started, 4
	// n error "boom", 5 f received, 6 f finished, 7 r received; all at
	// 1000 + seq.
	base := func(t *testing.T) *history {
		h := newHistory(t, testConv)
		h.mustAppend(receiveCmd())
		h.mustAppend(leaseStartCmd("w1", 1000))
		h.mustAppend(withMessage(receiveCmd(), "n"))
		h.mustAppend(withMessage(startCmd(), "n"))
		h.mustAppend(withMessage(failCmd("boom"), "n"))
		h.mustAppend(withMessage(receiveCmd(), "f"))
		h.mustAppend(withMessage(finishCmd(), "f"))
		h.mustAppend(withMessage(receiveCmd(), "r"))
		return h
	}
	ev := func(ts int64, typ Type, msg string, f func(*Event)) Event {
		e := Event{Conversation: testConv, Seq: 8, TS: ts, Type: typ, MessageID: msg}
		if f != nil {
			f(&e)
		}
		return e
	}
	lease := func(worker string, ms int64) func(*Event) {
		return func(e *Event) { e.Worker, e.LeaseMS = worker, ms }
	}
	renew := func(token, ms int64) func(*Event) {
		return func(e *Event) { e.Token, e.LeaseMS = token, ms }
	}
	tests := []struct {
		name   string
		e      Event
		accept bool
	}{
		{"StartByOtherWorkerWithinLease", ev(1500, ProcessingStarted, testMsg, lease("w2", 10)), false},
		{"StartByOtherWorkerAtLastMoment", ev(2000, ProcessingStarted, testMsg, lease("w2", 10)), false},
		{"StartBySameWorkerWithinLease", ev(1500, ProcessingStarted, testMsg, lease("w1", 10)), false},
		{"StartWithoutWorkerWithinLease", ev(1500, ProcessingStarted, testMsg, nil), false},
		{"StartWithoutLeaseAfterLapse", ev(3000, ProcessingStarted, testMsg, lease("w2", 0)), false},
		{"TakeoverAfterLapse", ev(2001, ProcessingStarted, testMsg, lease("w2", 10)), true},
		{"TakeoverBySameWorkerAfterLapse", ev(9000, ProcessingStarted, testMsg, lease("w1", 10)), true},
		{"RenewWithinLease", ev(1500, LeaseRenewed, testMsg, renew(1, 10)), true},
		{"RenewOfLapsedLease", ev(5000, LeaseRenewed, testMsg, renew(1, 10)), true},
		{"RenewWithOtherToken", ev(1500, LeaseRenewed, testMsg, renew(3, 10)), false},
		{"RenewWithTokenZero", ev(1500, LeaseRenewed, testMsg, renew(0, 10)), false},
		{"RenewOfErrored", ev(1500, LeaseRenewed, "n", renew(3, 10)), false},
		{"RenewOfFinished", ev(1500, LeaseRenewed, "f", renew(0, 10)), false},
		{"RenewOfNeverStarted", ev(1500, LeaseRenewed, "r", renew(0, 10)), false},
		{"RenewOfUnknown", ev(1500, LeaseRenewed, "x", renew(1, 10)), false},
		{"ReleaseOfErrored", ev(1500, MessageReleased, "n", nil), true},
		{"ReleaseOfLapsedLease", ev(2001, MessageReleased, testMsg, nil), true},
		{"ReleaseWithinLease", ev(2000, MessageReleased, testMsg, nil), false},
		{"ReleaseOfNeverStarted", ev(1500, MessageReleased, "r", nil), false},
		{"ReleaseOfFinished", ev(1500, MessageReleased, "f", nil), false},
		{"ReleaseOfUnknown", ev(1500, MessageReleased, "x", nil), false},
		// Quarantine never refuses a logged start: the log does not keep
		// the max_attempts of its day.
		{"RetryOfErroredAnyAttempt", ev(1500, ProcessingStarted, "n", lease("w3", 10)), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := base(t)
			before := cloneState(h.s)
			e := tt.e
			err := h.s.Apply(&e)
			switch {
			case tt.accept && err != nil:
				t.Errorf("Apply(%+v) = %v, want nil", tt.e, err)
			case tt.accept:
				h.log = append(h.log, e) // the cleanup replays it
			case err == nil:
				t.Errorf("Apply(%+v) = nil, want an error", tt.e)
			case !reflect.DeepEqual(h.s, before):
				t.Errorf("Apply(%+v) refused, but changed the state to %+v, want %+v", tt.e, h.s, before)
			}
		})
	}

	t.Run("ReleasedMessageAfterManyAttempts", func(t *testing.T) {
		// A release replays under the attempts of its message, however
		// many: max_attempts may have been raised since.
		h := newHistory(t, testConv)
		h.mustAppend(receiveCmd())
		for range 5 {
			h.mustAppend(startCmd())
			h.mustAppend(failCmd("boom"))
		}
		h.maxAttempts = 5
		h.mustAppend(releaseCmd(""))
		h.maxAttempts = 100
		h.mustAppend(startCmd())
		if m := h.s.Messages[testMsg]; m.Attempts != 1 {
			t.Errorf("Attempts = %d, want 1 after the release", m.Attempts)
		}
	})
}

func TestReplay(t *testing.T) {
	t.Run("Empty", func(t *testing.T) {
		s, err := Replay(testConv, nil)
		if err != nil || !reflect.DeepEqual(s, NewState(testConv)) {
			t.Errorf("Replay(%q, nil) = %+v, %v; want the empty state", testConv, s, err)
		}
	})
	t.Run("RefusesGap", func(t *testing.T) {
		log := []Event{*receivedEvent(0, 1), *startedEvent(2)}
		if s, err := Replay(testConv, log); err == nil {
			t.Errorf("Replay(%q, log with a gap) = %+v, nil; want an error", testConv, s)
		}
	})
	t.Run("RefusesDuplicate", func(t *testing.T) {
		log := []Event{*receivedEvent(0, 1), *startedEvent(1), *startedEvent(2)}
		if s, err := Replay(testConv, log); err == nil {
			t.Errorf("Replay(%q, log with a duplicate start) = %+v, nil; want an error", testConv, s)
		}
	})
}
