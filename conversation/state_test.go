package conversation

import (
	"errors"
	"maps"
	"reflect"
	"testing"
)

// history is a conversation built by State.Apply, with its log.
type history struct {
	tb  testing.TB
	s   *State
	log []Event
}

// newHistory returns the empty history of conversation name. At cleanup it
// checks that the state equals the replay of the log.
func newHistory(tb testing.TB, name string) *history {
	tb.Helper()
	h := &history{tb: tb, s: NewState(name)}
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
	c.Conversation = h.s.Name
	o, err := Evaluate(&c, h.s.Known(&c))
	if err != nil || !o.Append || o.Seq != h.s.Next {
		h.tb.Fatalf("Evaluate(%s) = %+v, %v; want an append at %d", describe(&c), o, err, h.s.Next)
	}
	e := c.Event(h.s.Next, 1000+h.s.Next)
	if err := h.s.Apply(&e); err != nil {
		h.tb.Fatalf("Apply(%+v) = %v, want nil", e, err)
	}
	h.log = append(h.log, e)
	return e
}

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
