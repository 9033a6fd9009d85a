package conversation

import (
	"errors"
	"strings"
	"testing"
)

// compactedMsg is finishedMsg compacted: its tombstone's message.
func compactedMsg() *Message {
	m := finishedMsg()
	m.LastTS, m.Attempts, m.Fingerprint = 5004, 1, "sha256:a"
	return m.Tombstone().Message()
}

func TestTombstone_KeepsWhatSpecSays(t *testing.T) {
	m := finishedMsg()
	m.LastTS, m.Attempts, m.Fingerprint = 5004, 3, "sha256:a"
	got := m.Tombstone()
	want := Tombstone{MessageID: testMsg, FinishedAt: 5004, Seq: 4, Attempts: 3, Fingerprint: "sha256:a"}
	if got != want {
		t.Fatalf("Tombstone() = %+v, want %+v", got, want)
	}
	tm := got.Message()
	if !tm.Compacted || tm.Status != StatusFinished || tm.LastSeq != 4 || tm.LastTS != 5004 || tm.LastStep != NoStep ||
		tm.Attempts != 3 || tm.Fingerprint != "sha256:a" || tm.ReceivedAt != 0 || tm.StartedSeq != 0 {
		t.Fatalf("Tombstone.Message() = %+v", tm)
	}
	if back := tm.Tombstone(); back != want {
		t.Fatalf("a tombstone's message gives back %+v, want %+v", back, want)
	}
}

func TestDeliver_Retention(t *testing.T) {
	horizon := Horizon{Before: 7000, Set: true}
	sent := func(ms int64) Delivery { return Delivery{SentAt: ms, HasSentAt: true} }
	tests := []struct {
		name    string
		m       *Message
		d       Delivery
		h       Horizon
		want    Decision
		wantErr error
	}{
		{"CompactedSkips", compactedMsg(), Delivery{}, Horizon{}, Decision{Action: Skip, Rule: RuleCompacted, Compacted: true}, nil},
		{"CompactedSkipsWhateverItsSentAt", compactedMsg(), sent(1), horizon, Decision{Action: Skip, Rule: RuleCompacted, Compacted: true}, nil},
		{"CompactedKeepsItsFingerprint", compactedMsg(), Delivery{Fingerprint: "sha256:b"}, Horizon{}, Decision{}, &FingerprintMismatchError{Stored: "sha256:a"}},
		{"FinishedIsNotCompacted", finishedMsg(), Delivery{}, Horizon{}, Decision{Action: Skip, Rule: RuleFinished}, nil},
		{"UnknownSentBeforeHorizonIsForgotten", nil, sent(6999), horizon, Decision{Action: Forgotten, Rule: RuleForgotten, Horizon: horizon}, nil},
		{"UnknownSentAtHorizonIsForgotten", nil, sent(7000), horizon, Decision{Action: Forgotten, Rule: RuleForgotten, Horizon: horizon}, nil},
		{"UnknownSentAfterHorizonStartsWithIt", nil, sent(7001), horizon, Decision{Action: Start, Rule: RuleNeverSeen, Horizon: horizon}, nil},
		{"UnknownWithoutSentAtStartsWithHorizon", nil, Delivery{}, horizon, Decision{Action: Start, Rule: RuleNeverSeen, Horizon: horizon}, nil},
		{"UnknownWithoutHorizonStarts", nil, sent(1), Horizon{}, Decision{Action: Start, Rule: RuleNeverSeen}, nil},
		{"HorizonAtZeroCovers", nil, sent(0), Horizon{Set: true}, Decision{Action: Forgotten, Rule: RuleForgotten, Horizon: Horizon{Set: true}}, nil},
		{"KnownIsNeverForgotten", receivedMsg(), sent(1), horizon, Decision{Action: Resume, Rule: RuleReceived}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Deliver(tt.m, tt.d, tt.h, Moment{Now: 9000})
			if tt.wantErr != nil {
				if !matchError(err, tt.wantErr) {
					t.Fatalf("Deliver = %+v, %v; want %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Deliver = %+v, %v; want %+v", got, err, tt.want)
			}
			if r := Reason(got, tt.m, Moment{Now: 9000}); strings.Contains(r, "no known rule") {
				t.Errorf("Reason(%v) = %q", got.Rule, r)
			}
		})
	}
}

func TestHorizon_Advance(t *testing.T) {
	var h Horizon
	if h.Covers(0) {
		t.Fatal("the zero horizon covers sent_at 0")
	}
	h = h.Advance(50)
	if h != (Horizon{Before: 50, Set: true}) {
		t.Fatalf("Advance(50) = %+v", h)
	}
	if h.Advance(40) != h {
		t.Fatal("an older tombstone moved the horizon back")
	}
	if h.Advance(60).Before != 60 {
		t.Fatal("a newer tombstone did not move the horizon on")
	}
}

func ptr(c Command) *Command { return &c }

func TestEvaluate_Compacted(t *testing.T) {
	k := Known{Next: 10, Message: compactedMsg(), Horizon: Horizon{Before: 1, Set: true}}
	if o, err := Evaluate(ptr(receiveCmd()), k); err != nil || o.Append || o.Decision != (Decision{Action: Skip, Rule: RuleCompacted, Compacted: true}) {
		t.Errorf("receive of a compacted message = %+v, %v; want skip, compacted", o, err)
	}
	if o, err := Evaluate(ptr(finishCmd()), k); err != nil || o != (Outcome{Seq: 4, Duplicate: true}) {
		t.Errorf("finish of a compacted message = %+v, %v; want a duplicate of seq 4", o, err)
	}
	// The finish is gone from the log: its retry by expected_seq finds no
	// prior event, and the tombstone answers it.
	if o, err := Evaluate(ptr(at(finishCmd(), 4)), k); err != nil || o != (Outcome{Seq: 4, Duplicate: true}) {
		t.Errorf("retried finish at its seq = %+v, %v; want a duplicate of seq 4", o, err)
	}
	var conflict *SequenceConflictError
	if _, err := Evaluate(ptr(at(finishCmd(), 3)), k); !errors.As(err, &conflict) {
		t.Errorf("finish at another seq: %v, want sequence_conflict", err)
	}
	for _, c := range []Command{startCmd(), stepCmd(0, []byte("out")), failCmd("boom")} {
		if _, err := Evaluate(&c, k); !errors.Is(err, ErrAlreadyFinished) {
			t.Errorf("%v of a compacted message: %v, want already_finished", c.Op, err)
		}
	}
}

func TestEvaluate_Forgotten(t *testing.T) {
	h := Horizon{Before: 7000, Set: true}
	c := receiveCmd()
	c.SentAt, c.HasSentAt = 7000, true
	o, err := Evaluate(&c, Known{Next: 10, Horizon: h})
	if err != nil || o.Append || o.Decision != (Decision{Action: Forgotten, Rule: RuleForgotten, Horizon: h}) {
		t.Fatalf("receive sent at the horizon = %+v, %v; want forgotten, nothing appended", o, err)
	}
	c.SentAt = 7001
	o, err = Evaluate(&c, Known{Next: 10, Horizon: h})
	if err != nil || !o.Append || o.Seq != 10 || o.Decision.Action != Start || o.Decision.Horizon != h {
		t.Fatalf("receive sent after the horizon = %+v, %v; want start at 10 carrying the horizon", o, err)
	}
	c.SentAt = -1
	var fe *FieldError
	if err := c.Validate(); !errors.As(err, &fe) || fe.Field != "sent_at" {
		t.Fatalf("negative sent_at: %v, want a bad sent_at", err)
	}
}

func TestState_RestoreAndGaps(t *testing.T) {
	s := NewState(testConv)
	s.Gaps = true
	// Seqs 0-4 were testMsg's, compacted; 5 and 6 another message's.
	if err := s.Restore(compactedMsg().Tombstone()); err != nil {
		t.Fatal(err)
	}
	if s.Next != 5 || s.Counts.Finished != 1 {
		t.Fatalf("after the tombstone: next %d, counts %+v", s.Next, s.Counts)
	}
	other := &Event{Conversation: testConv, Seq: 7, TS: 6000, Type: MessageReceived, MessageID: "other", ReceivedAt: 6000}
	if err := s.Apply(other); err != nil {
		t.Fatalf("an event after a gap: %v", err)
	}
	if err := s.Restore(compactedMsg().Tombstone()); err == nil {
		t.Fatal("a second tombstone of one message was restored")
	}
	strict := NewState(testConv)
	if err := strict.Apply(other); err == nil {
		t.Fatal("a conversation without compaction accepted a gap")
	}
}

func TestEvaluate_ErrorsSayWhatRetentionDid(t *testing.T) {
	var fe *FencedError
	_, err := Evaluate(ptr(renewCmd(1, 1000)), Known{Next: 10, Message: compactedMsg()})
	if !errors.As(err, &fe) || !fe.Compacted || fe.CurrentToken != 0 || !strings.Contains(err.Error(), "compacted") {
		t.Errorf("renew of a compacted message: %v, want fenced saying it was compacted", err)
	}
	_, err = Evaluate(ptr(finishCmd()), Known{Next: 10, Horizon: Horizon{Before: 7000, Set: true}})
	if !errors.Is(err, ErrUnknownMessage) || !strings.Contains(err.Error(), "forgotten") {
		t.Errorf("finish of an unknown message past a horizon: %v, want unknown_message saying it may be forgotten", err)
	}
	if _, err = Evaluate(ptr(finishCmd()), Known{Next: 10}); err != ErrUnknownMessage {
		t.Errorf("finish of an unknown message without a horizon: %v, want ErrUnknownMessage itself", err)
	}
}
