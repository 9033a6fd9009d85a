package conversation

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// The conversation and message of the hand-built cases.
const (
	testConv = "c"
	testMsg  = "m"
)

// Commands for testMsg in testConv, without expected_seq.
func receiveCmd() Command {
	return Command{Op: OpReceive, Conversation: testConv, MessageID: testMsg, ExpectedSeq: NoExpectedSeq}
}

func receiveAtCmd(at int64) Command {
	c := receiveCmd()
	c.ReceivedAt, c.HasReceivedAt = at, true
	return c
}

func startCmd() Command {
	return Command{Op: OpStart, Conversation: testConv, MessageID: testMsg, ExpectedSeq: NoExpectedSeq}
}

func stepCmd(index uint32, output []byte) Command {
	return Command{Op: OpStep, Conversation: testConv, MessageID: testMsg, StepIndex: index, Output: output, ExpectedSeq: NoExpectedSeq}
}

func finishCmd() Command {
	return Command{Op: OpFinish, Conversation: testConv, MessageID: testMsg, ExpectedSeq: NoExpectedSeq}
}

func failCmd(text string) Command {
	return Command{Op: OpFail, Conversation: testConv, MessageID: testMsg, Error: text, ExpectedSeq: NoExpectedSeq}
}

// Protocol 2 commands for testMsg in testConv (SPEC §7).
func leaseStartCmd(worker string, leaseMS int64) Command {
	c := startCmd()
	c.Worker, c.LeaseMS = worker, leaseMS
	return c
}

func renewCmd(token, leaseMS int64) Command {
	return Command{Op: OpRenew, Conversation: testConv, MessageID: testMsg, Token: token, HasToken: true, LeaseMS: leaseMS, ExpectedSeq: NoExpectedSeq}
}

func releaseCmd(reason string) Command {
	return Command{Op: OpRelease, Conversation: testConv, MessageID: testMsg, Reason: reason, ExpectedSeq: NoExpectedSeq}
}

func fingerprintCmd(fingerprint string) Command {
	c := receiveCmd()
	c.Fingerprint = fingerprint
	return c
}

// token returns c (a step, finish, fail or renew) with token t.
func token(c Command, t int64) Command {
	c.Token, c.HasToken = t, true
	return c
}

// leaseOf returns o with the lease until expires.
func leaseOf(o Outcome, expires int64) Outcome {
	o.LeaseExpiresAt = expires
	return o
}

// withToken returns o with the token of a start: its seq.
func withToken(o Outcome) Outcome {
	o.Token = o.Seq
	return o
}

// at returns c with expected_seq seq.
func at(c Command, seq int64) Command {
	c.ExpectedSeq = seq
	return c
}

// withMessage returns c for message id.
func withMessage(c Command, id string) Command {
	c.MessageID = id
	return c
}

// Events of testMsg in testConv, at seq.
func receivedEvent(seq, receivedAt int64) *Event {
	return &Event{Conversation: testConv, Seq: seq, TS: 5000 + seq, Type: MessageReceived, MessageID: testMsg, ReceivedAt: receivedAt}
}

func startedEvent(seq int64) *Event {
	return &Event{Conversation: testConv, Seq: seq, TS: 5000 + seq, Type: ProcessingStarted, MessageID: testMsg}
}

func stepEvent(seq int64, index uint32, output []byte) *Event {
	return &Event{Conversation: testConv, Seq: seq, TS: 5000 + seq, Type: StepCompleted, MessageID: testMsg, StepIndex: index, Output: output}
}

func finishedEvent(seq int64) *Event {
	return &Event{Conversation: testConv, Seq: seq, TS: 5000 + seq, Type: ProcessingFinished, MessageID: testMsg}
}

func errorEvent(seq int64, text string) *Event {
	return &Event{Conversation: testConv, Seq: seq, TS: 5000 + seq, Type: ErrorOccurred, MessageID: testMsg, Error: text}
}

func leaseStartedEvent(seq, ts int64, worker string, leaseMS int64) *Event {
	return &Event{Conversation: testConv, Seq: seq, TS: ts, Type: ProcessingStarted, MessageID: testMsg, Worker: worker, LeaseMS: leaseMS}
}

func renewedEvent(seq, ts, token, leaseMS int64) *Event {
	return &Event{Conversation: testConv, Seq: seq, TS: ts, Type: LeaseRenewed, MessageID: testMsg, Token: token, LeaseMS: leaseMS}
}

func releasedEvent(seq int64, reason string) *Event {
	return &Event{Conversation: testConv, Seq: seq, TS: 5000 + seq, Type: MessageReleased, MessageID: testMsg, Reason: reason}
}

// Hand-built message states of testMsg, each as Message.Apply would leave
// it after the log described in its comment. The conversation's next seq in
// the cases that use them is 10.

// received: 0 received at 1000.
func receivedMsg() *Message {
	return &Message{ID: testMsg, Status: StatusReceived, ReceivedAt: 1000, ReceivedSeq: 0, LastStep: NoStep, LastType: MessageReceived, LastSeq: 0}
}

// inProgress: 0 received, 1 started, 2 step 0 "out", 3 error "boom",
// 4 started, 5 step 1 "out", 6 step 2.
func inProgressMsg() *Message {
	return &Message{ID: testMsg, Status: StatusInProgress, ReceivedAt: 1000, ReceivedSeq: 0, StartedSeq: 4, LastStep: 2, Error: "boom", LastType: StepCompleted, LastSeq: 6}
}

// restarted: 0 received, 1 started, 2 error "boom", 3 started.
func restartedMsg() *Message {
	return &Message{ID: testMsg, Status: StatusInProgress, ReceivedAt: 1000, ReceivedSeq: 0, StartedSeq: 3, LastStep: NoStep, Error: "boom", LastType: ProcessingStarted, LastSeq: 3}
}

// errored: 0 received, 1 started, 2 step 0, 3 error "boom".
func erroredMsg() *Message {
	return &Message{ID: testMsg, Status: StatusErrored, ReceivedAt: 1000, ReceivedSeq: 0, StartedSeq: 1, LastStep: 0, Error: "boom", LastType: ErrorOccurred, LastSeq: 3}
}

// erroredThenStep: 0 received, 1 started, 2 error "boom", 3 step 4.
func erroredThenStepMsg() *Message {
	return &Message{ID: testMsg, Status: StatusErrored, ReceivedAt: 1000, ReceivedSeq: 0, StartedSeq: 1, LastStep: 4, Error: "boom", LastType: StepCompleted, LastSeq: 3}
}

// nonContiguous: 0 received, 1 started, 2 step 0, 3 step 7.
func nonContiguousMsg() *Message {
	return &Message{ID: testMsg, Status: StatusInProgress, ReceivedAt: 1000, ReceivedSeq: 0, StartedSeq: 1, LastStep: 7, LastType: StepCompleted, LastSeq: 3}
}

// finished: 0 received, 1 started, 2 step 0, 3 step 1, 4 finished.
func finishedMsg() *Message {
	return &Message{ID: testMsg, Status: StatusFinished, ReceivedAt: 1000, ReceivedSeq: 0, StartedSeq: 1, LastStep: 1, LastType: ProcessingFinished, LastSeq: 4}
}

// The lease of the hand-built leased states: started at leaseStart for
// leaseMS, it lapses at leaseUntil; leaseNow is a moment within it.
const (
	leaseStart = 5000
	leaseMS    = 1000
	leaseUntil = leaseStart + leaseMS
	leaseNow   = 5500
)

// leased: 0 received, 1 started by "w1" with lease_ms 1000 at 5000.
func leasedMsg() *Message {
	return &Message{ID: testMsg, Status: StatusInProgress, ReceivedAt: 1000, ReceivedSeq: 0, StartedSeq: 1, LastStep: NoStep,
		LastType: ProcessingStarted, LastSeq: 1, LastTS: leaseStart, Worker: "w1", LeaseUntil: leaseUntil, Attempts: 1}
}

// leasedAnonymously: 0 received, 1 started with lease_ms 1000 at 5000 by
// no worker.
func leasedAnonymouslyMsg() *Message {
	m := leasedMsg()
	m.Worker = ""
	return m
}

// renewed: 0 received, 1 started by "w1" with lease_ms 1000 at 5000, 2
// step 0, 3 lease_renewed token 1 for 3000 ms at 5500: leased until 8500.
func renewedMsg() *Message {
	return &Message{ID: testMsg, Status: StatusInProgress, ReceivedAt: 1000, ReceivedSeq: 0, StartedSeq: 1, LastStep: 0,
		LastType: LeaseRenewed, LastSeq: 3, LastTS: 5500, Worker: "w1", LeaseUntil: 8500, Attempts: 1}
}

// erroredLeased: leased, then 2 error "boom" at 5100, within the lease it
// held.
func erroredLeasedMsg() *Message {
	m := leasedMsg()
	m.Status, m.Error, m.LastType, m.LastSeq, m.LastTS = StatusErrored, "boom", ErrorOccurred, 2, 5100
	return m
}

// fingerprinted: 0 received with fingerprint "sha256:a".
func fingerprintedMsg() *Message {
	m := receivedMsg()
	m.Fingerprint = "sha256:a"
	return m
}

// attempted returns m having been started n times since it was received
// or released.
func attempted(m *Message, n int64) *Message {
	m.Attempts = n
	return m
}

// describe shows c in test messages.
func describe(c *Command) string {
	var b strings.Builder
	if c.Op >= OpReceive && c.Op <= OpRelease {
		b.WriteString([...]string{"receive", "start", "step", "finish", "fail", "renew", "release"}[c.Op-OpReceive])
	} else {
		fmt.Fprintf(&b, "op(%d)", c.Op)
	}
	fmt.Fprintf(&b, " %q/%q", c.Conversation, c.MessageID)
	switch c.Op {
	case OpReceive:
		if c.HasReceivedAt {
			fmt.Fprintf(&b, " received_at=%d", c.ReceivedAt)
		}
	case OpStep:
		fmt.Fprintf(&b, " step_index=%d output=%q(nil=%t)", c.StepIndex, c.Output, c.Output == nil)
	case OpFail:
		fmt.Fprintf(&b, " error=%q", c.Error)
	}
	for _, f := range []struct{ key, v string }{{"fingerprint", c.Fingerprint}, {"worker", c.Worker}, {"reason", c.Reason}} {
		if f.v != "" {
			fmt.Fprintf(&b, " %s=%q", f.key, f.v)
		}
	}
	if c.LeaseMS != 0 {
		fmt.Fprintf(&b, " lease_ms=%d", c.LeaseMS)
	}
	if c.HasToken {
		fmt.Fprintf(&b, " token=%d", c.Token)
	}
	if c.ExpectedSeq != NoExpectedSeq {
		fmt.Fprintf(&b, " expected_seq=%d", c.ExpectedSeq)
	}
	return b.String()
}

// matchError reports whether err is want: the same sentinel, a
// structured error of the same type with the same fields, or a
// *FieldError naming the same field.
func matchError(err, want error) bool {
	switch w := want.(type) {
	case *SequenceConflictError:
		return equalAs(err, w)
	case *BusyError:
		return equalAs(err, w)
	case *FencedError:
		return equalAs(err, w)
	case *FingerprintMismatchError:
		return equalAs(err, w)
	case *FieldError:
		var e *FieldError
		return errors.As(err, &e) && e.Field == w.Field
	}
	return errors.Is(err, want)
}

// equalAs reports whether err is, or wraps, an error of want's type with
// the same fields.
func equalAs[E comparable, P interface {
	*E
	error
}](err error, want P) bool {
	var e P
	return errors.As(err, &e) && *e == *want
}

func TestEvaluate(t *testing.T) {
	appendAt := func(seq int64) Outcome { return Outcome{Append: true, Seq: seq} }
	duplicateOf := func(seq int64) Outcome { return Outcome{Seq: seq, Duplicate: true} }
	step := func(index uint32, seq int64, output string) *StepRecord {
		return &StepRecord{Index: index, Seq: seq, Output: []byte(output)}
	}
	tests := []struct {
		name string
		c    Command
		k    Known
		want Outcome
		// wantErr is the rule error, or nil; wantConflict, when set, is the
		// *SequenceConflictError wanted instead.
		wantErr      error
		wantConflict *SequenceConflictError
	}{
		// Rule 1: expected_seq.
		{name: "ExpectedSeqEqualAppends", c: at(startCmd(), 10), k: Known{Next: 10, Message: receivedMsg()}, want: withToken(appendAt(10))},
		{name: "ExpectedSeqZeroOnEmptyConversationStarts", c: at(receiveCmd(), 0), k: Known{Next: 0},
			want: Outcome{Append: true, Seq: 0, Decision: Decision{Action: Start}}},
		{name: "ExpectedSeqHigherIsSequenceConflict", c: at(startCmd(), 11), k: Known{Next: 10, Message: receivedMsg()},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "ExpectedSeqHigherWithMatchingPriorIsSequenceConflict", c: at(startCmd(), 11), k: Known{Next: 10, Message: receivedMsg(), Prior: startedEvent(11)},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "ExpectedSeqLowerWithoutPriorIsSequenceConflict", c: at(startCmd(), 4), k: Known{Next: 10, Message: receivedMsg()},
			wantConflict: &SequenceConflictError{Expected: 4, Actual: 10}},
		{name: "ExpectedSeqLowerIsSequenceConflictEvenWhenRulesWouldAppend", c: at(finishCmd(), 9), k: Known{Next: 10, Message: inProgressMsg(), Prior: &Event{Conversation: testConv, Seq: 9, Type: MessageReceived, MessageID: "other", ReceivedAt: 1}},
			wantConflict: &SequenceConflictError{Expected: 9, Actual: 10}},
		{name: "ExpectedSeqOnKnownReceiveIsSequenceConflict", c: at(receiveCmd(), 12), k: Known{Next: 10, Message: inProgressMsg()},
			wantConflict: &SequenceConflictError{Expected: 12, Actual: 10}},
		{name: "ExpectedSeqEqualOnKnownReceiveResumes", c: at(receiveCmd(), 10), k: Known{Next: 10, Message: inProgressMsg()},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: 3}}},

		// Rule 1: a retry of a write that already landed.
		{name: "RetryOfReceiveIsDuplicateStart", c: at(receiveAtCmd(1000), 0), k: Known{Next: 10, Message: inProgressMsg(), Prior: receivedEvent(0, 1000)},
			want: Outcome{Seq: 0, Duplicate: true, Decision: Decision{Action: Start}}},
		{name: "RetryOfReceiveWithoutReceivedAtIsDuplicate", c: at(receiveCmd(), 0), k: Known{Next: 10, Message: inProgressMsg(), Prior: receivedEvent(0, 1000)},
			want: Outcome{Seq: 0, Duplicate: true, Decision: Decision{Action: Start}}},
		{name: "RetryOfReceiveWithOtherReceivedAtIsSequenceConflict", c: at(receiveAtCmd(1001), 0), k: Known{Next: 10, Message: inProgressMsg(), Prior: receivedEvent(0, 1000)},
			wantConflict: &SequenceConflictError{Expected: 0, Actual: 10}},
		{name: "RetryOfStartIsDuplicate", c: at(startCmd(), 4), k: Known{Next: 10, Message: inProgressMsg(), Prior: startedEvent(4)}, want: withToken(duplicateOf(4))},
		{name: "RetryOfEarlierStartIsDuplicateOfThatStart", c: at(startCmd(), 1), k: Known{Next: 10, Message: inProgressMsg(), Prior: startedEvent(1)}, want: withToken(duplicateOf(1))},
		{name: "RetryOfStartAfterErrorIsDuplicate", c: at(startCmd(), 1), k: Known{Next: 10, Message: erroredMsg(), Prior: startedEvent(1)}, want: withToken(duplicateOf(1))},
		{name: "RetryOfStartAfterFinishIsDuplicate", c: at(startCmd(), 1), k: Known{Next: 10, Message: finishedMsg(), Prior: startedEvent(1)}, want: withToken(duplicateOf(1))},
		{name: "RetryOfStepIsDuplicate", c: at(stepCmd(1, []byte("out")), 5), k: Known{Next: 10, Message: inProgressMsg(), Step: step(1, 5, "out"), Prior: stepEvent(5, 1, []byte("out"))}, want: duplicateOf(5)},
		{name: "RetryOfStepWithNilForEmptyOutputIsDuplicate", c: at(stepCmd(1, nil), 5), k: Known{Next: 10, Message: inProgressMsg(), Prior: stepEvent(5, 1, []byte{})}, want: duplicateOf(5)},
		{name: "RetryOfStepWithEmptyForNilOutputIsDuplicate", c: at(stepCmd(1, []byte{}), 5), k: Known{Next: 10, Message: inProgressMsg(), Prior: stepEvent(5, 1, nil)}, want: duplicateOf(5)},
		{name: "RetryOfStepWithOtherIndexIsSequenceConflict", c: at(stepCmd(2, []byte("out")), 5), k: Known{Next: 10, Message: inProgressMsg(), Prior: stepEvent(5, 1, []byte("out"))},
			wantConflict: &SequenceConflictError{Expected: 5, Actual: 10}},
		{name: "RetryOfStepWithOtherOutputIsSequenceConflict", c: at(stepCmd(1, []byte("out2")), 5), k: Known{Next: 10, Message: inProgressMsg(), Prior: stepEvent(5, 1, []byte("out"))},
			wantConflict: &SequenceConflictError{Expected: 5, Actual: 10}},
		{name: "RetryOfStepWithEmptyForNonEmptyOutputIsSequenceConflict", c: at(stepCmd(1, nil), 5), k: Known{Next: 10, Message: inProgressMsg(), Prior: stepEvent(5, 1, []byte("out"))},
			wantConflict: &SequenceConflictError{Expected: 5, Actual: 10}},
		{name: "RetryOfFinishIsDuplicate", c: at(finishCmd(), 4), k: Known{Next: 10, Message: finishedMsg(), Prior: finishedEvent(4)}, want: duplicateOf(4)},
		{name: "RetryOfFailAfterRestartIsDuplicate", c: at(failCmd("boom"), 2), k: Known{Next: 10, Message: restartedMsg(), Prior: errorEvent(2, "boom")}, want: duplicateOf(2)},
		{name: "RetryOfFailIsDuplicate", c: at(failCmd("boom"), 3), k: Known{Next: 10, Message: erroredMsg(), Prior: errorEvent(3, "boom")}, want: duplicateOf(3)},
		{name: "RetryOfFailWithOtherTextIsSequenceConflict", c: at(failCmd("bang"), 3), k: Known{Next: 10, Message: erroredMsg(), Prior: errorEvent(3, "boom")},
			wantConflict: &SequenceConflictError{Expected: 3, Actual: 10}},
		{name: "RetryWithOtherTypeIsSequenceConflict", c: at(finishCmd(), 4), k: Known{Next: 10, Message: inProgressMsg(), Prior: startedEvent(4)},
			wantConflict: &SequenceConflictError{Expected: 4, Actual: 10}},
		{name: "RetryOfFailOverStepIsSequenceConflict", c: at(failCmd("boom"), 5), k: Known{Next: 10, Message: inProgressMsg(), Prior: stepEvent(5, 1, []byte("out"))},
			wantConflict: &SequenceConflictError{Expected: 5, Actual: 10}},
		{name: "RetryWithOtherMessageIsSequenceConflict", c: at(withMessage(startCmd(), "other"), 4), k: Known{Next: 10, Prior: startedEvent(4)},
			wantConflict: &SequenceConflictError{Expected: 4, Actual: 10}},
		{name: "RetryWithPriorOfOtherSeqIsSequenceConflict", c: at(startCmd(), 4), k: Known{Next: 10, Message: inProgressMsg(), Prior: startedEvent(1)},
			wantConflict: &SequenceConflictError{Expected: 4, Actual: 10}},
		{name: "RetryWithReceivedAtOnlyDiffersIsSequenceConflictNotResume", c: at(receiveAtCmd(7), 0), k: Known{Next: 10, Message: receivedMsg(), Prior: receivedEvent(0, 1000)},
			wantConflict: &SequenceConflictError{Expected: 0, Actual: 10}},

		// Rules are checked in order: sequence_conflict comes first.
		{name: "SequenceConflictBeforeUnknownMessage", c: at(startCmd(), 3), k: Known{Next: 10},
			wantConflict: &SequenceConflictError{Expected: 3, Actual: 10}},
		{name: "SequenceConflictBeforeUnknownMessageWithHigherSeq", c: at(stepCmd(0, nil), 11), k: Known{Next: 10},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "SequenceConflictBeforeAlreadyFinished", c: at(startCmd(), 11), k: Known{Next: 10, Message: finishedMsg()},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "SequenceConflictBeforeDuplicateFinish", c: at(finishCmd(), 11), k: Known{Next: 10, Message: finishedMsg()},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "SequenceConflictBeforeStepConflict", c: at(stepCmd(0, []byte("b")), 11), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "a")},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},

		// Rule 2: a write needs a received message.
		{name: "StartUnknownMessage", c: startCmd(), k: Known{Next: 10}, wantErr: ErrUnknownMessage},
		{name: "StepUnknownMessage", c: stepCmd(0, []byte("x")), k: Known{Next: 10}, wantErr: ErrUnknownMessage},
		{name: "FinishUnknownMessage", c: finishCmd(), k: Known{Next: 10}, wantErr: ErrUnknownMessage},
		{name: "FailUnknownMessage", c: failCmd("boom"), k: Known{Next: 10}, wantErr: ErrUnknownMessage},
		{name: "StartUnknownMessageWithExpectedSeqEqual", c: at(startCmd(), 10), k: Known{Next: 10}, wantErr: ErrUnknownMessage},
		{name: "StartStatusUnknownMessage", c: startCmd(), k: Known{Next: 10, Message: &Message{ID: testMsg, LastStep: NoStep}}, wantErr: ErrUnknownMessage},
		{name: "FinishOnEmptyConversation", c: finishCmd(), k: Known{Next: 0}, wantErr: ErrUnknownMessage},

		// Rule 3: after finish.
		{name: "StartAfterFinishIsAlreadyFinished", c: startCmd(), k: Known{Next: 10, Message: finishedMsg()}, wantErr: ErrAlreadyFinished},
		{name: "StepAfterFinishIsAlreadyFinished", c: stepCmd(2, []byte("x")), k: Known{Next: 10, Message: finishedMsg()}, wantErr: ErrAlreadyFinished},
		{name: "StepRepeatedAfterFinishIsAlreadyFinished", c: stepCmd(1, []byte("x")), k: Known{Next: 10, Message: finishedMsg(), Step: step(1, 3, "x")}, wantErr: ErrAlreadyFinished},
		{name: "StepConflictingAfterFinishIsAlreadyFinished", c: stepCmd(1, []byte("y")), k: Known{Next: 10, Message: finishedMsg(), Step: step(1, 3, "x")}, wantErr: ErrAlreadyFinished},
		{name: "FailAfterFinishIsAlreadyFinished", c: failCmd("boom"), k: Known{Next: 10, Message: finishedMsg()}, wantErr: ErrAlreadyFinished},
		{name: "FinishAfterFinishIsDuplicate", c: finishCmd(), k: Known{Next: 10, Message: finishedMsg()}, want: duplicateOf(4)},
		{name: "FinishAfterFinishWithExpectedSeqEqualIsDuplicate", c: at(finishCmd(), 10), k: Known{Next: 10, Message: finishedMsg()}, want: duplicateOf(4)},

		// Rule 4: duplicates and step conflicts.
		{name: "StartWhileInProgressIsDuplicate", c: startCmd(), k: Known{Next: 10, Message: inProgressMsg()}, want: withToken(duplicateOf(4))},
		{name: "StartWhileRestartedIsDuplicateOfLatestStart", c: startCmd(), k: Known{Next: 10, Message: restartedMsg()}, want: withToken(duplicateOf(3))},
		{name: "StartWhileInProgressWithExpectedSeqEqualIsDuplicate", c: at(startCmd(), 10), k: Known{Next: 10, Message: inProgressMsg()}, want: withToken(duplicateOf(4))},
		{name: "StartWhenReceivedAppends", c: startCmd(), k: Known{Next: 10, Message: receivedMsg()}, want: withToken(appendAt(10))},
		{name: "StepWithSameOutputIsDuplicate", c: stepCmd(0, []byte("out")), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "out")}, want: duplicateOf(2)},
		{name: "StepWithNilOutputOverEmptyIsDuplicate", c: stepCmd(0, nil), k: Known{Next: 10, Message: inProgressMsg(), Step: &StepRecord{Index: 0, Seq: 2, Output: []byte{}}}, want: duplicateOf(2)},
		{name: "StepWithEmptyOutputOverNilIsDuplicate", c: stepCmd(0, []byte{}), k: Known{Next: 10, Message: inProgressMsg(), Step: &StepRecord{Index: 0, Seq: 2, Output: nil}}, want: duplicateOf(2)},
		{name: "StepWithOtherOutputIsStepConflict", c: stepCmd(0, []byte("other")), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "out")}, wantErr: ErrStepConflict},
		{name: "StepWithLongerOutputIsStepConflict", c: stepCmd(0, []byte("out\x00")), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "out")}, wantErr: ErrStepConflict},
		{name: "StepWithEmptyOutputOverNonEmptyIsStepConflict", c: stepCmd(0, nil), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "out")}, wantErr: ErrStepConflict},
		{name: "StepWithOutputOverEmptyIsStepConflict", c: stepCmd(0, []byte("x")), k: Known{Next: 10, Message: inProgressMsg(), Step: &StepRecord{Index: 0, Seq: 2}}, wantErr: ErrStepConflict},
		{name: "StepRepeatedWhileErroredIsDuplicate", c: stepCmd(0, []byte("out")), k: Known{Next: 10, Message: erroredMsg(), Step: step(0, 2, "out")}, want: duplicateOf(2)},
		{name: "StepNewIndexAppends", c: stepCmd(3, []byte("out")), k: Known{Next: 10, Message: inProgressMsg()}, want: appendAt(10)},
		{name: "StepSkippingIndexesAppends", c: stepCmd(MaxStepIndex, nil), k: Known{Next: 10, Message: inProgressMsg()}, want: appendAt(10)},
		{name: "StepBelowHighestAppends", c: stepCmd(1, []byte("x")), k: Known{Next: 10, Message: nonContiguousMsg()}, want: appendAt(10)},
		{name: "StepWhenReceivedAppends", c: stepCmd(0, nil), k: Known{Next: 10, Message: receivedMsg()}, want: appendAt(10)},
		{name: "FailWithSameTextAfterErrorIsDuplicate", c: failCmd("boom"), k: Known{Next: 10, Message: erroredMsg()}, want: duplicateOf(3)},
		{name: "FailWithOtherTextAfterErrorAppends", c: failCmd("bang"), k: Known{Next: 10, Message: erroredMsg()}, want: appendAt(10)},
		{name: "FailWithSameTextAfterStepAppends", c: failCmd("boom"), k: Known{Next: 10, Message: erroredThenStepMsg()}, want: appendAt(10)},
		{name: "FailWithSameTextAfterRestartAppends", c: failCmd("boom"), k: Known{Next: 10, Message: restartedMsg()}, want: appendAt(10)},
		{name: "FailWithSameTextAfterStepInProgressAppends", c: failCmd("boom"), k: Known{Next: 10, Message: inProgressMsg()}, want: appendAt(10)},
		{name: "FailWhenReceivedAppends", c: failCmd("boom"), k: Known{Next: 10, Message: receivedMsg()}, want: appendAt(10)},
		{name: "FinishInProgressAppends", c: finishCmd(), k: Known{Next: 10, Message: inProgressMsg()}, want: appendAt(10)},
		{name: "FinishWhenErroredAppends", c: finishCmd(), k: Known{Next: 10, Message: erroredMsg()}, want: appendAt(10)},

		// Rule 5: start after an error is a retry.
		{name: "StartAfterErrorAppends", c: startCmd(), k: Known{Next: 10, Message: erroredMsg()}, want: withToken(appendAt(10))},
		{name: "StartAfterErrorAndStepAppends", c: startCmd(), k: Known{Next: 10, Message: erroredThenStepMsg()}, want: withToken(appendAt(10))},

		// The redelivery decision of receive.
		{name: "ReceiveNewMessageStarts", c: receiveCmd(), k: Known{Next: 10},
			want: Outcome{Append: true, Seq: 10, Decision: Decision{Action: Start}}},
		{name: "ReceiveNewMessageWithReceivedAtStarts", c: receiveAtCmd(42), k: Known{Next: 3},
			want: Outcome{Append: true, Seq: 3, Decision: Decision{Action: Start}}},
		{name: "ReceiveStatusUnknownMessageStarts", c: receiveCmd(), k: Known{Next: 10, Message: &Message{ID: testMsg, LastStep: NoStep}},
			want: Outcome{Append: true, Seq: 10, Decision: Decision{Action: Start}}},
		{name: "ReceiveReceivedResumesFromZero", c: receiveCmd(), k: Known{Next: 10, Message: receivedMsg()},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: 0}}},
		{name: "ReceiveRestartedWithoutStepResumesFromZero", c: receiveCmd(), k: Known{Next: 10, Message: restartedMsg()},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: 0}}},
		{name: "ReceiveInProgressResumesAfterHighestStep", c: receiveCmd(), k: Known{Next: 10, Message: inProgressMsg()},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: 3}}},
		{name: "ReceiveNonContiguousStepsResumesAfterHighest", c: receiveCmd(), k: Known{Next: 10, Message: nonContiguousMsg()},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: 8}}},
		{name: "ReceiveErroredResumes", c: receiveCmd(), k: Known{Next: 10, Message: erroredMsg()},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: 1}}},
		{name: "ReceiveErroredThenStepResumesAfterThatStep", c: receiveCmd(), k: Known{Next: 10, Message: erroredThenStepMsg()},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: 5}}},
		{name: "ReceiveMaxStepIndexResumesPastUint32", c: receiveCmd(), k: Known{Next: 10, Message: &Message{ID: testMsg, Status: StatusInProgress, StartedSeq: 1, LastStep: MaxStepIndex, LastType: StepCompleted, LastSeq: 2}},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: MaxStepIndex + 1}}},
		{name: "ReceiveFinishedSkips", c: receiveCmd(), k: Known{Next: 10, Message: finishedMsg()},
			want: Outcome{Decision: Decision{Action: Skip}}},
		{name: "ReceiveKnownWithOtherReceivedAtResumes", c: receiveAtCmd(99), k: Known{Next: 10, Message: receivedMsg()},
			want: Outcome{Decision: Decision{Action: Resume, ResumeFrom: 0}}},

		// §7 leases: a start of a leased message.
		{name: "LeasedStartBySameWorkerIsDuplicate", c: leaseStartCmd("w1", 500), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			want: Outcome{Seq: 1, Duplicate: true, Token: 1, LeaseExpiresAt: leaseUntil}},
		{name: "LeasedStartBySameWorkerWithoutLeaseIsDuplicate", c: leaseStartCmd("w1", 0), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			want: Outcome{Seq: 1, Duplicate: true, Token: 1, LeaseExpiresAt: leaseUntil}},
		{name: "LeasedStartBySameWorkerAtLastMomentIsDuplicate", c: leaseStartCmd("w1", 500), k: Known{Next: 10, Message: leasedMsg(), Now: leaseUntil - 1},
			want: Outcome{Seq: 1, Duplicate: true, Token: 1, LeaseExpiresAt: leaseUntil}},
		{name: "LeasedStartByOtherWorkerIsBusy", c: leaseStartCmd("w2", 500), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			wantErr: &BusyError{Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{name: "LeasedStartByOtherWorkerWithoutLeaseIsBusy", c: leaseStartCmd("w2", 0), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			wantErr: &BusyError{Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{name: "LeasedStartWithoutWorkerIsBusy", c: startCmd(), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			wantErr: &BusyError{Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{name: "LeasedStartWithLeaseWithoutWorkerIsBusy", c: leaseStartCmd("", 500), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			wantErr: &BusyError{Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{name: "LeasedByNoWorkerStartWithoutWorkerIsBusy", c: startCmd(), k: Known{Next: 10, Message: leasedAnonymouslyMsg(), Now: leaseNow},
			wantErr: &BusyError{Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{name: "LeasedByNoWorkerStartByWorkerIsBusy", c: leaseStartCmd("w1", 500), k: Known{Next: 10, Message: leasedAnonymouslyMsg(), Now: leaseNow},
			wantErr: &BusyError{Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{name: "BusyAtLastMomentRetriesAfterOne", c: leaseStartCmd("w2", 500), k: Known{Next: 10, Message: leasedMsg(), Now: leaseUntil - 1},
			wantErr: &BusyError{Worker: "w1", Token: 1, RetryAfterMS: 1}},
		{name: "BusyUntilRenewedLeaseLapses", c: leaseStartCmd("w2", 500), k: Known{Next: 10, Message: renewedMsg(), Now: 7000},
			wantErr: &BusyError{Worker: "w1", Token: 1, RetryAfterMS: 1500}},
		{name: "BusyBeforeQuarantine", c: leaseStartCmd("w2", 500), k: Known{Next: 10, Message: attempted(leasedMsg(), 5), Now: leaseNow, MaxAttempts: 1},
			wantErr: &BusyError{Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{name: "LeasedDuplicateBeforeQuarantine", c: leaseStartCmd("w1", 500), k: Known{Next: 10, Message: attempted(leasedMsg(), 5), Now: leaseNow, MaxAttempts: 1},
			want: Outcome{Seq: 1, Duplicate: true, Token: 1, LeaseExpiresAt: leaseUntil}},
		{name: "LeasedStartAfterFinishIsAlreadyFinished", c: leaseStartCmd("w1", 500), k: Known{Next: 10, Message: finishedMsg(), Now: leaseNow}, wantErr: ErrAlreadyFinished},

		// §7 leases: a start of an in-progress message that holds none.
		{name: "LapsedLeaseStartWithLeaseIsTakeover", c: leaseStartCmd("w2", 300), k: Known{Next: 10, Message: leasedMsg(), Now: leaseUntil},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: leaseUntil + 300}},
		{name: "LapsedLeaseStartBySameWorkerWithLeaseIsTakeover", c: leaseStartCmd("w1", 300), k: Known{Next: 10, Message: leasedMsg(), Now: 9000},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: 9300}},
		{name: "LapsedLeaseStartWithLeaseWithoutWorkerIsTakeover", c: leaseStartCmd("", 300), k: Known{Next: 10, Message: leasedMsg(), Now: 9000},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: 9300}},
		{name: "LapsedLeaseStartWithoutLeaseIsDuplicate", c: leaseStartCmd("w2", 0), k: Known{Next: 10, Message: leasedMsg(), Now: leaseUntil},
			want: Outcome{Seq: 1, Duplicate: true, Token: 1}},
		{name: "LapsedLeaseStartWithoutWorkerOrLeaseIsDuplicate", c: startCmd(), k: Known{Next: 10, Message: leasedMsg(), Now: leaseUntil},
			want: Outcome{Seq: 1, Duplicate: true, Token: 1}},
		{name: "LapsedRenewedLeaseStartWithLeaseIsTakeover", c: leaseStartCmd("w2", 300), k: Known{Next: 10, Message: renewedMsg(), Now: 8500},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: 8800}},
		{name: "UnleasedStartWithLeaseIsTakeover", c: leaseStartCmd("w2", 300), k: Known{Next: 10, Message: inProgressMsg(), Now: 9000},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: 9300}},
		{name: "UnleasedStartWithWorkerWithoutLeaseIsDuplicate", c: leaseStartCmd("w2", 0), k: Known{Next: 10, Message: inProgressMsg(), Now: 9000},
			want: Outcome{Seq: 4, Duplicate: true, Token: 4}},
		{name: "ReceivedStartWithLeaseAppends", c: leaseStartCmd("w1", 300), k: Known{Next: 10, Message: receivedMsg(), Now: 9000},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: 9300}},
		{name: "ErroredStartWithLeaseAppends", c: leaseStartCmd("w2", 300), k: Known{Next: 10, Message: erroredMsg(), Now: 9000},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: 9300}},
		{name: "ErroredWithinItsLeaseHoldsNone", c: leaseStartCmd("w2", 300), k: Known{Next: 10, Message: erroredLeasedMsg(), Now: leaseNow},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: leaseNow + 300}},
		{name: "ErroredWithinItsLeaseStartWithoutLeaseAppends", c: startCmd(), k: Known{Next: 10, Message: erroredLeasedMsg(), Now: leaseNow},
			want: withToken(appendAt(10))},
		{name: "LeasedStartOutOfOrderIsSequenceConflict", c: at(leaseStartCmd("w1", 500), 11), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},

		// §7 quarantine: only a start that would append is refused.
		{name: "FirstStartUnderMaxAttemptsOneAppends", c: leaseStartCmd("w1", 300), k: Known{Next: 10, Message: receivedMsg(), Now: 9000, MaxAttempts: 1},
			want: Outcome{Append: true, Seq: 10, Token: 10, LeaseExpiresAt: 9300}},
		{name: "RetryAfterErrorUnderMaxAttemptsAppends", c: startCmd(), k: Known{Next: 10, Message: attempted(erroredMsg(), 1), Now: 9000, MaxAttempts: 2},
			want: withToken(appendAt(10))},
		{name: "RetryAfterErrorAtMaxAttemptsIsQuarantined", c: startCmd(), k: Known{Next: 10, Message: attempted(erroredMsg(), 2), Now: 9000, MaxAttempts: 2},
			wantErr: ErrQuarantined},
		{name: "RetryAfterErrorOverMaxAttemptsIsQuarantined", c: leaseStartCmd("w1", 300), k: Known{Next: 10, Message: attempted(erroredMsg(), 3), Now: 9000, MaxAttempts: 2},
			wantErr: ErrQuarantined},
		{name: "RetryAfterErrorWithoutLimitAppends", c: startCmd(), k: Known{Next: 10, Message: attempted(erroredMsg(), 1000), Now: 9000},
			want: withToken(appendAt(10))},
		{name: "TakeoverAtMaxAttemptsIsQuarantined", c: leaseStartCmd("w2", 300), k: Known{Next: 10, Message: attempted(leasedMsg(), 2), Now: leaseUntil, MaxAttempts: 2},
			wantErr: ErrQuarantined},
		{name: "TakeoverOfUnleasedAtMaxAttemptsIsQuarantined", c: leaseStartCmd("w2", 300), k: Known{Next: 10, Message: attempted(inProgressMsg(), 1), Now: 9000, MaxAttempts: 1},
			wantErr: ErrQuarantined},
		{name: "DuplicateStartAtMaxAttemptsIsDuplicate", c: startCmd(), k: Known{Next: 10, Message: attempted(inProgressMsg(), 2), Now: 9000, MaxAttempts: 2},
			want: withToken(duplicateOf(4))},
		{name: "DuplicateStartOfLapsedLeaseAtMaxAttemptsIsDuplicate", c: leaseStartCmd("w1", 0), k: Known{Next: 10, Message: attempted(leasedMsg(), 2), Now: leaseUntil, MaxAttempts: 2},
			want: Outcome{Seq: 1, Duplicate: true, Token: 1}},
		{name: "QuarantinedStartAfterFinishIsAlreadyFinished", c: startCmd(), k: Known{Next: 10, Message: attempted(finishedMsg(), 5), Now: 9000, MaxAttempts: 1}, wantErr: ErrAlreadyFinished},
		{name: "QuarantinedStartOutOfOrderIsSequenceConflict", c: at(startCmd(), 11), k: Known{Next: 10, Message: attempted(erroredMsg(), 2), Now: 9000, MaxAttempts: 2},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "QuarantinedStepAppends", c: stepCmd(3, nil), k: Known{Next: 10, Message: attempted(erroredMsg(), 2), Now: 9000, MaxAttempts: 2}, want: appendAt(10)},
		{name: "QuarantinedFailAppends", c: failCmd("bang"), k: Known{Next: 10, Message: attempted(erroredMsg(), 2), Now: 9000, MaxAttempts: 2}, want: appendAt(10)},
		{name: "QuarantinedFinishAppends", c: finishCmd(), k: Known{Next: 10, Message: attempted(erroredMsg(), 2), Now: 9000, MaxAttempts: 2}, want: appendAt(10)},

		// §7 fencing of step, finish, fail and renew.
		{name: "StepWithCurrentTokenAppends", c: token(stepCmd(3, []byte("x")), 4), k: Known{Next: 10, Message: inProgressMsg()}, want: appendAt(10)},
		{name: "StepWithStaleTokenIsFenced", c: token(stepCmd(3, []byte("x")), 1), k: Known{Next: 10, Message: inProgressMsg()},
			wantErr: &FencedError{Token: 1, CurrentToken: 4}},
		{name: "StepWithLaterTokenIsFenced", c: token(stepCmd(3, []byte("x")), 9), k: Known{Next: 10, Message: inProgressMsg()},
			wantErr: &FencedError{Token: 9, CurrentToken: 4}},
		{name: "StepWithStaleTokenDuplicateIsFenced", c: token(stepCmd(0, []byte("out")), 1), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "out")},
			wantErr: &FencedError{Token: 1, CurrentToken: 4}},
		{name: "StepWithStaleTokenConflictIsFenced", c: token(stepCmd(0, []byte("other")), 1), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "out")},
			wantErr: &FencedError{Token: 1, CurrentToken: 4}},
		{name: "StepWithCurrentTokenDuplicateIsDuplicate", c: token(stepCmd(0, []byte("out")), 4), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "out")}, want: duplicateOf(2)},
		{name: "StepWithCurrentTokenConflictIsStepConflict", c: token(stepCmd(0, []byte("other")), 4), k: Known{Next: 10, Message: inProgressMsg(), Step: step(0, 2, "out")}, wantErr: ErrStepConflict},
		{name: "StepWithStaleTokenAfterTakeoverIsFenced", c: token(stepCmd(0, nil), 1), k: Known{Next: 10, Message: func() *Message {
			m := leasedMsg()
			m.StartedSeq, m.Worker, m.Attempts, m.LastSeq = 7, "w2", 2, 7
			return m
		}(), Now: leaseNow}, wantErr: &FencedError{Token: 1, CurrentToken: 7}},
		{name: "StepWithoutTokenIsNotFenced", c: stepCmd(3, []byte("x")), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow}, want: appendAt(10)},
		{name: "StepWithTokenOfLapsedLeaseAppends", c: token(stepCmd(3, []byte("x")), 1), k: Known{Next: 10, Message: leasedMsg(), Now: 9000}, want: appendAt(10)},
		{name: "StepWithCurrentTokenWhileErroredAppends", c: token(stepCmd(3, []byte("x")), 1), k: Known{Next: 10, Message: erroredMsg()}, want: appendAt(10)},
		{name: "StepWithTokenOfNeverStartedMessageIsFenced", c: token(stepCmd(0, nil), 3), k: Known{Next: 10, Message: receivedMsg()},
			wantErr: &FencedError{Token: 3, CurrentToken: 0}},
		{name: "StepWithTokenZeroOfNeverStartedMessageIsFenced", c: token(stepCmd(0, nil), 0), k: Known{Next: 10, Message: receivedMsg()},
			wantErr: &FencedError{Token: 0, CurrentToken: 0}},
		{name: "StepWithStaleTokenAfterFinishIsAlreadyFinished", c: token(stepCmd(0, nil), 0), k: Known{Next: 10, Message: finishedMsg()}, wantErr: ErrAlreadyFinished},
		{name: "StepWithStaleTokenOfUnknownMessage", c: token(stepCmd(0, nil), 1), k: Known{Next: 10}, wantErr: ErrUnknownMessage},
		{name: "StepWithStaleTokenOutOfOrderIsSequenceConflict", c: at(token(stepCmd(0, nil), 1), 11), k: Known{Next: 10, Message: inProgressMsg()},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "RetryOfStepWithStaleTokenIsDuplicate", c: at(token(stepCmd(1, []byte("out")), 1), 5), k: Known{Next: 10, Message: inProgressMsg(), Prior: stepEvent(5, 1, []byte("out"))},
			want: duplicateOf(5)},
		{name: "FinishWithCurrentTokenAppends", c: token(finishCmd(), 4), k: Known{Next: 10, Message: inProgressMsg()}, want: appendAt(10)},
		{name: "FinishWithStaleTokenIsFenced", c: token(finishCmd(), 1), k: Known{Next: 10, Message: inProgressMsg()},
			wantErr: &FencedError{Token: 1, CurrentToken: 4}},
		{name: "FinishWithStaleTokenAfterFinishIsDuplicate", c: token(finishCmd(), 0), k: Known{Next: 10, Message: finishedMsg()}, want: duplicateOf(4)},
		{name: "FinishWithLaterTokenAfterFinishIsDuplicate", c: token(finishCmd(), 99), k: Known{Next: 10, Message: finishedMsg()}, want: duplicateOf(4)},
		{name: "FailWithCurrentTokenAppends", c: token(failCmd("bang"), 1), k: Known{Next: 10, Message: erroredMsg()}, want: appendAt(10)},
		{name: "FailWithCurrentTokenDuplicateIsDuplicate", c: token(failCmd("boom"), 1), k: Known{Next: 10, Message: erroredMsg()}, want: duplicateOf(3)},
		{name: "FailWithStaleTokenIsFenced", c: token(failCmd("bang"), 1), k: Known{Next: 10, Message: inProgressMsg()},
			wantErr: &FencedError{Token: 1, CurrentToken: 4}},
		{name: "FailWithStaleTokenDuplicateIsFenced", c: token(failCmd("boom"), 0), k: Known{Next: 10, Message: erroredMsg()},
			wantErr: &FencedError{Token: 0, CurrentToken: 1}},
		{name: "FailWithStaleTokenAfterFinishIsAlreadyFinished", c: token(failCmd("boom"), 0), k: Known{Next: 10, Message: finishedMsg()}, wantErr: ErrAlreadyFinished},

		// §7 renew.
		{name: "RenewLeasedAppends", c: renewCmd(1, 2000), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			want: Outcome{Append: true, Seq: 10, LeaseExpiresAt: leaseNow + 2000}},
		{name: "RenewShorterAppends", c: renewCmd(1, 1), k: Known{Next: 10, Message: renewedMsg(), Now: 7000},
			want: Outcome{Append: true, Seq: 10, LeaseExpiresAt: 7001}},
		{name: "RenewLapsedLeaseWithCurrentTokenAppends", c: renewCmd(1, 2000), k: Known{Next: 10, Message: leasedMsg(), Now: 9000},
			want: Outcome{Append: true, Seq: 10, LeaseExpiresAt: 11000}},
		{name: "RenewOfStartWithoutLeaseAppends", c: renewCmd(4, 2000), k: Known{Next: 10, Message: inProgressMsg(), Now: 9000},
			want: Outcome{Append: true, Seq: 10, LeaseExpiresAt: 11000}},
		{name: "RenewWithStaleTokenIsFenced", c: renewCmd(1, 2000), k: Known{Next: 10, Message: inProgressMsg(), Now: 9000},
			wantErr: &FencedError{Token: 1, CurrentToken: 4}},
		{name: "RenewWithStaleTokenOfLeasedIsFenced", c: renewCmd(0, 2000), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			wantErr: &FencedError{Token: 0, CurrentToken: 1}},
		{name: "RenewOfErroredIsFenced", c: renewCmd(1, 2000), k: Known{Next: 10, Message: erroredMsg(), Now: 9000},
			wantErr: &FencedError{Token: 1, CurrentToken: 1}},
		{name: "RenewOfErroredWithinItsLeaseIsFenced", c: renewCmd(1, 2000), k: Known{Next: 10, Message: erroredLeasedMsg(), Now: leaseNow},
			wantErr: &FencedError{Token: 1, CurrentToken: 1}},
		{name: "RenewOfFinishedIsFenced", c: renewCmd(1, 2000), k: Known{Next: 10, Message: finishedMsg(), Now: 9000},
			wantErr: &FencedError{Token: 1, CurrentToken: 1}},
		{name: "RenewOfNeverStartedIsFenced", c: renewCmd(0, 2000), k: Known{Next: 10, Message: receivedMsg(), Now: 9000},
			wantErr: &FencedError{Token: 0, CurrentToken: 0}},
		{name: "RenewOfUnknownMessage", c: renewCmd(1, 2000), k: Known{Next: 10, Now: 9000}, wantErr: ErrUnknownMessage},
		{name: "RenewOutOfOrderIsSequenceConflict", c: at(renewCmd(1, 2000), 11), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "RenewWithExpectedSeqEqualAppends", c: at(renewCmd(1, 2000), 10), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			want: Outcome{Append: true, Seq: 10, LeaseExpiresAt: leaseNow + 2000}},
		{name: "RetryOfRenewIsDuplicateWithTheLeaseItSet", c: at(renewCmd(1, 3000), 3), k: Known{Next: 10, Message: renewedMsg(), Now: 7000, Prior: renewedEvent(3, 5500, 1, 3000)},
			want: leaseOf(duplicateOf(3), 5500+3000)},
		{name: "RetryOfRenewOnceFencedIsDuplicate", c: at(renewCmd(1, 3000), 3), k: Known{Next: 10, Message: inProgressMsg(), Now: 7000, Prior: renewedEvent(3, 5500, 1, 3000)},
			want: leaseOf(duplicateOf(3), 5500+3000)},
		{name: "RetryOfRenewWithOtherLeaseIsSequenceConflict", c: at(renewCmd(1, 2000), 3), k: Known{Next: 10, Message: renewedMsg(), Now: 7000, Prior: renewedEvent(3, 5500, 1, 3000)},
			wantConflict: &SequenceConflictError{Expected: 3, Actual: 10}},
		{name: "RetryOfRenewWithOtherTokenIsSequenceConflict", c: at(renewCmd(2, 3000), 3), k: Known{Next: 10, Message: renewedMsg(), Now: 7000, Prior: renewedEvent(3, 5500, 1, 3000)},
			wantConflict: &SequenceConflictError{Expected: 3, Actual: 10}},

		// §7 release.
		{name: "ReleaseQuarantinedAppends", c: releaseCmd("fixed the parser"), k: Known{Next: 10, Message: attempted(erroredMsg(), 2), Now: 9000, MaxAttempts: 2}, want: appendAt(10)},
		{name: "ReleaseQuarantinedWithoutReasonAppends", c: releaseCmd(""), k: Known{Next: 10, Message: attempted(erroredMsg(), 3), Now: 9000, MaxAttempts: 2}, want: appendAt(10)},
		{name: "ReleaseQuarantinedInProgressAppends", c: releaseCmd(""), k: Known{Next: 10, Message: attempted(leasedMsg(), 2), Now: leaseUntil, MaxAttempts: 2}, want: appendAt(10)},
		{name: "ReleaseUnderMaxAttemptsIsNotQuarantined", c: releaseCmd(""), k: Known{Next: 10, Message: attempted(erroredMsg(), 1), Now: 9000, MaxAttempts: 2}, wantErr: ErrNotQuarantined},
		{name: "ReleaseWithoutLimitIsNotQuarantined", c: releaseCmd(""), k: Known{Next: 10, Message: attempted(erroredMsg(), 1000), Now: 9000}, wantErr: ErrNotQuarantined},
		{name: "ReleaseLeasedIsNotQuarantined", c: releaseCmd(""), k: Known{Next: 10, Message: attempted(leasedMsg(), 2), Now: leaseNow, MaxAttempts: 2}, wantErr: ErrNotQuarantined},
		{name: "ReleaseReceivedIsNotQuarantined", c: releaseCmd(""), k: Known{Next: 10, Message: receivedMsg(), Now: 9000, MaxAttempts: 1}, wantErr: ErrNotQuarantined},
		{name: "ReleaseFinishedIsNotQuarantined", c: releaseCmd(""), k: Known{Next: 10, Message: attempted(finishedMsg(), 5), Now: 9000, MaxAttempts: 1}, wantErr: ErrNotQuarantined},
		{name: "ReleaseUnknownMessage", c: releaseCmd(""), k: Known{Next: 10, Now: 9000, MaxAttempts: 1}, wantErr: ErrUnknownMessage},
		{name: "ReleaseOutOfOrderIsSequenceConflict", c: at(releaseCmd(""), 11), k: Known{Next: 10, Message: attempted(erroredMsg(), 2), Now: 9000, MaxAttempts: 2},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "RetryOfReleaseIsDuplicate", c: at(releaseCmd("fixed"), 4), k: Known{Next: 10, Message: erroredMsg(), Now: 9000, MaxAttempts: 2, Prior: releasedEvent(4, "fixed")},
			want: duplicateOf(4)},
		{name: "RetryOfReleaseWithoutReasonIsDuplicate", c: at(releaseCmd(""), 4), k: Known{Next: 10, Message: erroredMsg(), Now: 9000, MaxAttempts: 2, Prior: releasedEvent(4, "fixed")},
			want: duplicateOf(4)},
		{name: "RetryOfReleaseWithOtherReasonIsSequenceConflict", c: at(releaseCmd("other"), 4), k: Known{Next: 10, Message: erroredMsg(), Now: 9000, MaxAttempts: 2, Prior: releasedEvent(4, "fixed")},
			wantConflict: &SequenceConflictError{Expected: 4, Actual: 10}},

		// §7 retries of a start: the token of the retried event.
		{name: "RetryOfLeasedStartIsDuplicateWithItsTokenAndLease", c: at(leaseStartCmd("w1", leaseMS), 1), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow, Prior: leaseStartedEvent(1, leaseStart, "w1", leaseMS)},
			want: leaseOf(withToken(duplicateOf(1)), leaseStart+leaseMS)},
		{name: "RetryOfFencedStartIsDuplicateWithItsToken", c: at(leaseStartCmd("w1", leaseMS), 1), k: Known{Next: 10, Message: inProgressMsg(), Now: 9000, Prior: leaseStartedEvent(1, leaseStart, "w1", leaseMS)},
			want: leaseOf(withToken(duplicateOf(1)), leaseStart+leaseMS)},
		{name: "RetryOfStartByOtherWorkerIsDuplicateEvenWhenBusy", c: at(startCmd(), 1), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow, Prior: leaseStartedEvent(1, leaseStart, "w1", leaseMS)},
			want: leaseOf(withToken(duplicateOf(1)), leaseStart+leaseMS)},
		{name: "RetryOfStartWithOtherWorkerIsSequenceConflict", c: at(leaseStartCmd("w2", leaseMS), 1), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow, Prior: leaseStartedEvent(1, leaseStart, "w1", leaseMS)},
			wantConflict: &SequenceConflictError{Expected: 1, Actual: 10}},
		{name: "RetryOfStartWithOtherLeaseIsSequenceConflict", c: at(leaseStartCmd("w1", 2*leaseMS), 1), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow, Prior: leaseStartedEvent(1, leaseStart, "w1", leaseMS)},
			wantConflict: &SequenceConflictError{Expected: 1, Actual: 10}},
		{name: "RetryOfStartWithoutLeaseWithWorkerIsDuplicate", c: at(leaseStartCmd("w1", 0), 1), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow, Prior: leaseStartedEvent(1, leaseStart, "w1", leaseMS)},
			want: leaseOf(withToken(duplicateOf(1)), leaseStart+leaseMS)},
		{name: "RetryOfStartOfQuarantinedIsDuplicate", c: at(startCmd(), 1), k: Known{Next: 10, Message: attempted(erroredMsg(), 5), Now: 9000, MaxAttempts: 1, Prior: startedEvent(1)},
			want: withToken(duplicateOf(1))},

		// §7 decisions of receive: busy and quarantined.
		{name: "ReceiveLeasedIsBusy", c: receiveCmd(), k: Known{Next: 10, Message: leasedMsg(), Now: leaseNow},
			want: Outcome{Decision: Decision{Action: Busy, Rule: RuleLeased, Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}}},
		{name: "ReceiveLapsedLeaseResumes", c: receiveCmd(), k: Known{Next: 10, Message: leasedMsg(), Now: leaseUntil},
			want: Outcome{Decision: Decision{Action: Resume, Rule: RuleInProgress}}},
		{name: "ReceiveQuarantinedIsQuarantined", c: receiveCmd(), k: Known{Next: 10, Message: attempted(erroredMsg(), 2), Now: 9000, MaxAttempts: 2},
			want: Outcome{Decision: Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: 2, Error: "boom"}}},
		{name: "ReceiveLeasedAtMaxAttemptsIsBusy", c: receiveCmd(), k: Known{Next: 10, Message: attempted(leasedMsg(), 2), Now: leaseNow, MaxAttempts: 2},
			want: Outcome{Decision: Decision{Action: Busy, Rule: RuleLeased, Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}}},
		{name: "ReceiveFinishedAtMaxAttemptsSkips", c: receiveCmd(), k: Known{Next: 10, Message: attempted(finishedMsg(), 2), Now: 9000, MaxAttempts: 2},
			want: Outcome{Decision: Decision{Action: Skip, Rule: RuleFinished}}},

		// §7 fingerprints: checked before any decision, by a receive only
		// when both sides have one.
		{name: "ReceiveNewWithFingerprintStarts", c: fingerprintCmd("sha256:b"), k: Known{Next: 10},
			want: Outcome{Append: true, Seq: 10, Decision: Decision{Action: Start, Rule: RuleNeverSeen}}},
		{name: "ReceiveWithSameFingerprintResumes", c: fingerprintCmd("sha256:a"), k: Known{Next: 10, Message: fingerprintedMsg()},
			want: Outcome{Decision: Decision{Action: Resume, Rule: RuleReceived}}},
		{name: "ReceiveWithOtherFingerprintIsMismatch", c: fingerprintCmd("sha256:b"), k: Known{Next: 10, Message: fingerprintedMsg()},
			wantErr: &FingerprintMismatchError{Stored: "sha256:a"}},
		{name: "ReceiveWithoutFingerprintResumes", c: receiveCmd(), k: Known{Next: 10, Message: fingerprintedMsg()},
			want: Outcome{Decision: Decision{Action: Resume, Rule: RuleReceived}}},
		{name: "ReceiveWithFingerprintOfMessageWithoutOneResumes", c: fingerprintCmd("sha256:b"), k: Known{Next: 10, Message: receivedMsg()},
			want: Outcome{Decision: Decision{Action: Resume, Rule: RuleReceived}}},
		{name: "FingerprintMismatchBeforeSkip", c: fingerprintCmd("sha256:b"), k: Known{Next: 10, Message: func() *Message {
			m := finishedMsg()
			m.Fingerprint = "sha256:a"
			return m
		}()}, wantErr: &FingerprintMismatchError{Stored: "sha256:a"}},
		{name: "FingerprintMismatchBeforeBusy", c: fingerprintCmd("sha256:b"), k: Known{Next: 10, Message: func() *Message {
			m := leasedMsg()
			m.Fingerprint = "sha256:a"
			return m
		}(), Now: leaseNow}, wantErr: &FingerprintMismatchError{Stored: "sha256:a"}},
		{name: "FingerprintMismatchBeforeQuarantined", c: fingerprintCmd("sha256:b"), k: Known{Next: 10, Message: func() *Message {
			m := attempted(erroredMsg(), 2)
			m.Fingerprint = "sha256:a"
			return m
		}(), Now: 9000, MaxAttempts: 1}, wantErr: &FingerprintMismatchError{Stored: "sha256:a"}},
		{name: "FingerprintMismatchWithExpectedSeqEqual", c: at(fingerprintCmd("sha256:b"), 10), k: Known{Next: 10, Message: fingerprintedMsg()},
			wantErr: &FingerprintMismatchError{Stored: "sha256:a"}},
		{name: "SequenceConflictBeforeFingerprintMismatch", c: at(fingerprintCmd("sha256:b"), 11), k: Known{Next: 10, Message: fingerprintedMsg()},
			wantConflict: &SequenceConflictError{Expected: 11, Actual: 10}},
		{name: "RetryOfReceiveWithSameFingerprintIsDuplicate", c: at(fingerprintCmd("sha256:a"), 0), k: Known{Next: 10, Message: fingerprintedMsg(), Prior: func() *Event {
			e := receivedEvent(0, 1000)
			e.Fingerprint = "sha256:a"
			return e
		}()}, want: Outcome{Seq: 0, Duplicate: true, Decision: Decision{Action: Start, Rule: RuleNeverSeen}}},
		{name: "RetryOfReceiveWithOtherFingerprintIsSequenceConflict", c: at(fingerprintCmd("sha256:b"), 0), k: Known{Next: 10, Message: fingerprintedMsg(), Prior: func() *Event {
			e := receivedEvent(0, 1000)
			e.Fingerprint = "sha256:a"
			return e
		}()}, wantConflict: &SequenceConflictError{Expected: 0, Actual: 10}},
		{name: "RetryOfReceiveWithFingerprintOfOneWithoutIsSequenceConflict", c: at(fingerprintCmd("sha256:b"), 0), k: Known{Next: 10, Message: receivedMsg(), Prior: receivedEvent(0, 1000)},
			wantConflict: &SequenceConflictError{Expected: 0, Actual: 10}},
		{name: "RetryOfReceiveWithoutFingerprintIsDuplicate", c: at(receiveCmd(), 0), k: Known{Next: 10, Message: fingerprintedMsg(), Prior: func() *Event {
			e := receivedEvent(0, 1000)
			e.Fingerprint = "sha256:a"
			return e
		}()}, want: Outcome{Seq: 0, Duplicate: true, Decision: Decision{Action: Start, Rule: RuleNeverSeen}}},
		{name: "StartIgnoresFingerprint", c: func() Command { c := startCmd(); c.Fingerprint = "sha256:b"; return c }(), k: Known{Next: 10, Message: fingerprintedMsg()},
			want: withToken(appendAt(10))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			got, err := Evaluate(&c, tt.k)
			wantErr := tt.wantErr
			if tt.wantConflict != nil {
				wantErr = tt.wantConflict
			}
			switch {
			case wantErr != nil:
				if !matchError(err, wantErr) {
					t.Errorf("Evaluate(%s) = %+v, %v; want %#v", describe(&c), got, err, wantErr)
				}
			default:
				if tt.want.Decision.Rule == 0 {
					// The case names only the action; TestRedelivery
					// holds the rules of each.
					got.Decision.Rule = 0
				}
				if err != nil || got != tt.want {
					t.Errorf("Evaluate(%s) = %+v, %v; want %+v, nil", describe(&c), got, err, tt.want)
				}
			}
			if err != nil && got != (Outcome{}) {
				t.Errorf("Evaluate(%s) = %+v, %v; want the zero Outcome with an error", describe(&c), got, err)
			}
			if c.Op == OpReceive && err == nil && got.Decision.Action == 0 {
				t.Errorf("Evaluate(%s) = %+v; a receive must carry a decision", describe(&c), got)
			}
		})
	}
}

// TestEvaluate_DoesNotModifyKnown checks that Evaluate only reads what it is
// given, whatever it answers.
func TestEvaluate_DoesNotModifyKnown(t *testing.T) {
	commands := []Command{receiveCmd(), startCmd(), stepCmd(0, []byte("x")), stepCmd(0, []byte("out")), finishCmd(), failCmd("boom"), at(startCmd(), 1), at(startCmd(), 12),
		leaseStartCmd("w2", 300), token(stepCmd(0, nil), 0), renewCmd(1, 300), releaseCmd("r"), fingerprintCmd("sha256:b")}
	for _, c := range commands {
		for _, m := range []*Message{receivedMsg(), inProgressMsg(), erroredMsg(), finishedMsg(), leasedMsg(), attempted(erroredMsg(), 3), fingerprintedMsg()} {
			before := *m
			s := StepRecord{Index: 0, Seq: 2, Output: []byte("out")}
			prior := startedEvent(1)
			o, err := Evaluate(&c, Known{Next: 10, Message: m, Step: &s, Prior: prior, Now: leaseNow, MaxAttempts: 2})
			if *m != before || string(s.Output) != "out" || s.Index != 0 || s.Seq != 2 || !reflect.DeepEqual(prior, startedEvent(1)) {
				t.Errorf("Evaluate(%s) = %+v, %v on a %v message; it modified its Known", describe(&c), o, err, before.Status)
			}
		}
	}
}

func TestRedelivery(t *testing.T) {
	tests := []struct {
		name        string
		m           *Message
		now         int64
		maxAttempts int64
		want        Decision
	}{
		{"Nil", nil, 0, 0, Decision{Action: Start, Rule: RuleNeverSeen}},
		{"NilAtMaxAttempts", nil, 0, 1, Decision{Action: Start, Rule: RuleNeverSeen}},
		{"StatusUnknown", &Message{ID: testMsg, LastStep: 3}, 0, 0, Decision{Action: Start, Rule: RuleNeverSeen}},
		{"Received", receivedMsg(), 0, 0, Decision{Action: Resume, Rule: RuleReceived, ResumeFrom: 0}},
		{"InProgress", inProgressMsg(), 0, 0, Decision{Action: Resume, Rule: RuleInProgress, ResumeFrom: 3}},
		{"NonContiguous", nonContiguousMsg(), 0, 0, Decision{Action: Resume, Rule: RuleInProgress, ResumeFrom: 8}},
		{"Errored", erroredMsg(), 0, 0, Decision{Action: Resume, Rule: RuleErrored, ResumeFrom: 1}},
		{"Finished", finishedMsg(), 0, 0, Decision{Action: Skip, Rule: RuleFinished}},

		// Leases: busy while leased, by the lease of the current token.
		{"Leased", leasedMsg(), leaseNow, 0, Decision{Action: Busy, Rule: RuleLeased, Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{"LeasedFromItsStart", leasedMsg(), leaseStart, 0, Decision{Action: Busy, Rule: RuleLeased, Worker: "w1", Token: 1, RetryAfterMS: leaseMS}},
		{"LeasedAtLastMoment", leasedMsg(), leaseUntil - 1, 0, Decision{Action: Busy, Rule: RuleLeased, Worker: "w1", Token: 1, RetryAfterMS: 1}},
		{"LeasedByNoWorker", leasedAnonymouslyMsg(), leaseNow, 0, Decision{Action: Busy, Rule: RuleLeased, Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{"LeaseLapsed", leasedMsg(), leaseUntil, 0, Decision{Action: Resume, Rule: RuleInProgress, ResumeFrom: 0}},
		{"Renewed", renewedMsg(), 8000, 0, Decision{Action: Busy, Rule: RuleLeased, Worker: "w1", Token: 1, RetryAfterMS: 500}},
		{"RenewedLapsed", renewedMsg(), 8500, 0, Decision{Action: Resume, Rule: RuleInProgress, ResumeFrom: 1}},
		{"ErroredWithinItsLease", erroredLeasedMsg(), leaseNow, 0, Decision{Action: Resume, Rule: RuleErrored, ResumeFrom: 0}},
		{"FinishedWithinItsLease", func() *Message {
			m := leasedMsg()
			m.Status = StatusFinished
			return m
		}(), leaseNow, 0, Decision{Action: Skip, Rule: RuleFinished}},

		// Quarantine: not finished, not leased, attempts >= max_attempts.
		{"AtMaxAttempts", attempted(erroredMsg(), 2), 9000, 2, Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: 2, Error: "boom"}},
		{"OverMaxAttempts", attempted(erroredMsg(), 3), 9000, 2, Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: 3, Error: "boom"}},
		{"UnderMaxAttempts", attempted(erroredMsg(), 1), 9000, 2, Decision{Action: Resume, Rule: RuleErrored, ResumeFrom: 1}},
		{"NoLimit", attempted(erroredMsg(), 1000), 9000, 0, Decision{Action: Resume, Rule: RuleErrored, ResumeFrom: 1}},
		{"QuarantinedInProgressWithoutError", attempted(nonContiguousMsg(), 1), 9000, 1, Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: 1}},
		{"QuarantinedKeepsLastError", attempted(inProgressMsg(), 2), 9000, 2, Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: 2, Error: "boom"}},
		{"LeasedAtMaxAttemptsIsBusy", attempted(leasedMsg(), 1), leaseNow, 1, Decision{Action: Busy, Rule: RuleLeased, Worker: "w1", Token: 1, RetryAfterMS: leaseUntil - leaseNow}},
		{"LapsedAtMaxAttemptsIsQuarantined", attempted(leasedMsg(), 1), leaseUntil, 1, Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: 1}},
		{"FinishedAtMaxAttemptsSkips", attempted(finishedMsg(), 4), 9000, 1, Decision{Action: Skip, Rule: RuleFinished}},
		{"ReleasedResumes", attempted(erroredMsg(), 0), 9000, 1, Decision{Action: Resume, Rule: RuleErrored, ResumeFrom: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redelivery(tt.m, tt.now, tt.maxAttempts); got != tt.want {
				t.Errorf("Redelivery(%+v, %d, %d) = %+v, want %+v", tt.m, tt.now, tt.maxAttempts, got, tt.want)
			}
			// Without a fingerprint, Deliver decides as Redelivery does.
			if got, err := Deliver(tt.m, Delivery{}, Horizon{}, Moment{Now: tt.now, MaxAttempts: tt.maxAttempts}); err != nil || got != tt.want {
				t.Errorf("Deliver(%+v, \"\", %d, %d) = %+v, %v; want %+v, nil", tt.m, tt.now, tt.maxAttempts, got, err, tt.want)
			}
		})
	}
}

func TestDeliver(t *testing.T) {
	stored := fingerprintedMsg()
	tests := []struct {
		name        string
		m           *Message
		fingerprint string
		want        Decision
		wantErr     error
	}{
		{"NewWithFingerprint", nil, "sha256:b", Decision{Action: Start, Rule: RuleNeverSeen}, nil},
		{"StatusUnknownWithFingerprint", &Message{ID: testMsg, LastStep: NoStep, Fingerprint: "sha256:a"}, "sha256:b", Decision{Action: Start, Rule: RuleNeverSeen}, nil},
		{"SameFingerprint", stored, "sha256:a", Decision{Action: Resume, Rule: RuleReceived}, nil},
		{"OtherFingerprint", stored, "sha256:b", Decision{}, &FingerprintMismatchError{Stored: "sha256:a"}},
		{"FingerprintDiffersByCase", stored, "SHA256:A", Decision{}, &FingerprintMismatchError{Stored: "sha256:a"}},
		{"NoFingerprintGiven", stored, "", Decision{Action: Resume, Rule: RuleReceived}, nil},
		{"NoneStored", receivedMsg(), "sha256:b", Decision{Action: Resume, Rule: RuleReceived}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Deliver(tt.m, Delivery{Fingerprint: tt.fingerprint}, Horizon{}, Moment{})
			if tt.wantErr != nil {
				if !matchError(err, tt.wantErr) || got != (Decision{}) {
					t.Errorf("Deliver(%+v, %q) = %+v, %v; want %#v", tt.m, tt.fingerprint, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Deliver(%+v, %q) = %+v, %v; want %+v, nil", tt.m, tt.fingerprint, got, err, tt.want)
			}
		})
	}
}

func TestKnown_Replaying(t *testing.T) {
	release, start := releaseCmd(""), leaseStartCmd("w1", 300)
	tests := []struct {
		name            string
		c               *Command
		m               *Message
		wantMaxAttempts int64
	}{
		{"StartIsNeverQuarantined", &start, attempted(erroredMsg(), 5), 0},
		{"StepHasNoLimit", &Command{Op: OpStep}, attempted(erroredMsg(), 5), 0},
		{"ReleaseUnderItsAttempts", &release, attempted(erroredMsg(), 3), 3},
		{"ReleaseOfOneAttempt", &release, attempted(erroredMsg(), 1), 1},
		// max(1, attempts): a message started no time since it was
		// received or released was never quarantined.
		{"ReleaseOfNoAttempt", &release, attempted(erroredMsg(), 0), 1},
		{"ReleaseOfUnknownMessage", &release, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := Known{Next: 10, Message: tt.m, Now: 1, MaxAttempts: 7}
			k.Replaying(tt.c, 4242)
			if k.Now != 4242 || k.MaxAttempts != tt.wantMaxAttempts || k.Next != 10 || k.Message != tt.m {
				t.Errorf("Replaying(%s, 4242) on %+v: Now %d, MaxAttempts %d; want 4242, %d", describe(tt.c), tt.m, k.Now, k.MaxAttempts, tt.wantMaxAttempts)
			}
		})
	}
	// What a release replays under is what makes its message quarantined,
	// and no release of a message not quarantined replays.
	for _, attempts := range []int64{0, 1, 2, 5} {
		m := attempted(erroredMsg(), attempts)
		k := Known{Next: 10, Message: m}
		k.Replaying(&release, 9000)
		_, err := Evaluate(&release, k)
		if wantOK := attempts > 0; (err == nil) != wantOK {
			t.Errorf("Evaluate(release of an errored message started %d times, replaying) = %v; want an append: %t", attempts, err, wantOK)
		}
	}
	k := Known{Next: 10, Message: attempted(leasedMsg(), 3)}
	k.Replaying(&release, leaseNow)
	if _, err := Evaluate(&release, k); !errors.Is(err, ErrNotQuarantined) {
		t.Errorf("Evaluate(release of a leased message, replaying) = %v, want %v", err, ErrNotQuarantined)
	}
}

func TestCommand_Validate(t *testing.T) {
	with := func(c Command, f func(*Command)) Command {
		f(&c)
		return c
	}
	name256 := strings.Repeat("n", MaxNameBytes)
	name257 := strings.Repeat("n", MaxNameBytes+1)
	// 256 bytes of 2-byte runes, then one more.
	runes256 := strings.Repeat("é", MaxNameBytes/2)
	tests := []struct {
		name      string
		c         Command
		wantField string // "" for valid
	}{
		{"ValidReceive", receiveCmd(), ""},
		{"ValidReceiveAtZero", receiveAtCmd(0), ""},
		{"ValidStart", startCmd(), ""},
		{"ValidStepEmptyOutput", stepCmd(MaxStepIndex, nil), ""},
		{"ValidFinish", finishCmd(), ""},
		{"ValidFail", failCmd("boom"), ""},
		{"ValidFailErrorWithNewlineAndTab", failCmd("line 1\n\tline 2"), ""},
		{"ValidFailErrorAt64KiB", failCmd(strings.Repeat("e", MaxErrorBytes)), ""},
		{"ValidNamesAt256Bytes", with(startCmd(), func(c *Command) { c.Conversation, c.MessageID = name256, name256 }), ""},
		{"ValidMultibyteNamesAt256Bytes", with(startCmd(), func(c *Command) { c.Conversation, c.MessageID = runes256, runes256 }), ""},
		{"ValidUnicodeNames", with(startCmd(), func(c *Command) { c.Conversation, c.MessageID = "日本語 conv", "msg-😀" }), ""},
		{"ValidExpectedSeqZero", at(startCmd(), 0), ""},
		{"ValidExpectedSeqMax", at(startCmd(), 1<<63-1), ""},
		{"ValidNegativeReceivedAtNotGiven", with(receiveCmd(), func(c *Command) { c.ReceivedAt = -1 }), ""},
		{"ValidEmptyErrorOnStart", startCmd(), ""},

		{"OpZero", with(startCmd(), func(c *Command) { c.Op = 0 }), "op"},
		{"OpPastRelease", with(startCmd(), func(c *Command) { c.Op = OpRelease + 1 }), "op"},
		{"EmptyConversation", with(startCmd(), func(c *Command) { c.Conversation = "" }), "conversation"},
		{"LongConversation", with(startCmd(), func(c *Command) { c.Conversation = name257 }), "conversation"},
		{"LongMultibyteConversation", with(startCmd(), func(c *Command) { c.Conversation = runes256 + "x" }), "conversation"},
		{"InvalidUTF8Conversation", with(startCmd(), func(c *Command) { c.Conversation = "c\xff" }), "conversation"},
		{"SurrogateConversation", with(startCmd(), func(c *Command) { c.Conversation = "c\xed\xa0\x80" }), "conversation"},
		{"NULConversation", with(startCmd(), func(c *Command) { c.Conversation = "c\x00" }), "conversation"},
		{"NewlineConversation", with(startCmd(), func(c *Command) { c.Conversation = "c\n" }), "conversation"},
		{"DELConversation", with(startCmd(), func(c *Command) { c.Conversation = "c\x7f" }), "conversation"},
		{"C1ControlConversation", with(startCmd(), func(c *Command) { c.Conversation = "c\u0085" }), "conversation"},
		{"EmptyMessageID", with(startCmd(), func(c *Command) { c.MessageID = "" }), "message_id"},
		{"LongMessageID", with(startCmd(), func(c *Command) { c.MessageID = name257 }), "message_id"},
		{"InvalidUTF8MessageID", with(startCmd(), func(c *Command) { c.MessageID = "\xc3" }), "message_id"},
		{"TabMessageID", with(startCmd(), func(c *Command) { c.MessageID = "m\t1" }), "message_id"},
		{"EscapeMessageID", with(startCmd(), func(c *Command) { c.MessageID = "\x1b[31m" }), "message_id"},
		{"BadConversationNamedBeforeBadMessageID", with(startCmd(), func(c *Command) { c.Conversation, c.MessageID = "", "" }), "conversation"},
		{"FailEmptyError", failCmd(""), "error"},
		{"FailErrorOver64KiB", failCmd(strings.Repeat("e", MaxErrorBytes+1)), "error"},
		{"FailErrorInvalidUTF8", failCmd("bad \xff"), "error"},
		{"NegativeReceivedAt", receiveAtCmd(-1), "received_at"},
		{"MinReceivedAt", receiveAtCmd(-1 << 63), "received_at"},
		{"ExpectedSeqMinusTwo", at(startCmd(), -2), "expected_seq"},
		{"ExpectedSeqMin", at(failCmd("boom"), -1<<63), "expected_seq"},

		// Protocol 2 (SPEC §7).
		{"ValidStartWithWorkerAndLease", leaseStartCmd("worker-1 😀", 30_000), ""},
		{"ValidStartWithWorkerAt256Bytes", leaseStartCmd(name256, 0), ""},
		{"ValidStartLeaseOne", leaseStartCmd("", 1), ""},
		{"ValidStartLeaseADay", leaseStartCmd("w", MaxLeaseMS), ""},
		{"ValidRenew", renewCmd(1, 1), ""},
		{"ValidRenewTokenZero", renewCmd(0, MaxLeaseMS), ""},
		{"ValidStepWithToken", token(stepCmd(0, nil), 1<<63-1), ""},
		{"ValidStepWithTokenZero", token(stepCmd(0, nil), 0), ""},
		{"ValidFinishWithToken", token(finishCmd(), 3), ""},
		{"ValidFailWithToken", token(failCmd("boom"), 3), ""},
		{"ValidRelease", releaseCmd(""), ""},
		{"ValidReleaseWithReason", releaseCmd("the parser is fixed\n"), ""},
		{"ValidReleaseReasonAt64KiB", releaseCmd(strings.Repeat("r", MaxErrorBytes)), ""},
		{"ValidFingerprint", fingerprintCmd("sha256:9f86d081884c7d659a2feaa0c55ad015"), ""},
		{"ValidFingerprintAt256Bytes", fingerprintCmd(name256), ""},
		{"ValidMultibyteFingerprintAt256Bytes", fingerprintCmd(runes256), ""},
		{"ValidFingerprintWithControlCharacters", fingerprintCmd("a\tb\x00"), ""},

		{"StartWorkerOver256Bytes", leaseStartCmd(name257, 1000), "worker"},
		{"StartWorkerInvalidUTF8", leaseStartCmd("w\xff", 1000), "worker"},
		{"StartWorkerControlCharacter", leaseStartCmd("w\n", 1000), "worker"},
		{"StartLeaseNegative", leaseStartCmd("w", -1), "lease_ms"},
		{"StartLeaseMin", leaseStartCmd("w", -1<<63), "lease_ms"},
		{"StartLeaseOverADay", leaseStartCmd("w", MaxLeaseMS+1), "lease_ms"},
		{"RenewLeaseZero", renewCmd(1, 0), "lease_ms"},
		{"RenewLeaseNegative", renewCmd(1, -5), "lease_ms"},
		{"RenewLeaseOverADay", renewCmd(1, MaxLeaseMS+1), "lease_ms"},
		{"RenewWithoutToken", with(renewCmd(1, 1000), func(c *Command) { c.HasToken = false }), "token"},
		{"RenewTokenNegative", renewCmd(-1, 1000), "token"},
		{"StepTokenNegative", token(stepCmd(0, nil), -1), "token"},
		{"FinishTokenMin", token(finishCmd(), -1<<63), "token"},
		{"FailTokenNegative", token(failCmd("boom"), -2), "token"},
		{"FingerprintOver256Bytes", fingerprintCmd(name257), "fingerprint"},
		{"MultibyteFingerprintOver256Bytes", fingerprintCmd(runes256 + "x"), "fingerprint"},
		{"FingerprintInvalidUTF8", fingerprintCmd("sha256:\xff"), "fingerprint"},
		{"FingerprintSurrogate", fingerprintCmd("\xed\xa0\x80"), "fingerprint"},
		{"ReleaseReasonOver64KiB", releaseCmd(strings.Repeat("r", MaxErrorBytes+1)), "reason"},
		{"ReleaseReasonInvalidUTF8", releaseCmd("bad \xc3"), "reason"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.c.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Errorf("Validate(%s) = %v, want nil", describe(&tt.c), err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Errorf("Validate(%s) = %v, want a *FieldError naming %q", describe(&tt.c), err, tt.wantField)
			}
		})
	}
}

// TestSettled: Settled answers exactly the commands that Evaluate answers
// without appending and without an error, for a message received, with
// the same outcome: a receive without expected_seq, of a message in any
// state, at moments within a lease and after it, with and without an
// attempts limit reached, and with another fingerprint.
func TestSettled(t *testing.T) {
	msgs := map[string]func() *Message{
		"received": receivedMsg, "in progress": inProgressMsg, "errored": erroredMsg, "finished": finishedMsg,
		"leased": leasedMsg, "renewed": renewedMsg, "errored leased": erroredLeasedMsg, "fingerprinted": fingerprintedMsg,
		"attempted": func() *Message { return attempted(erroredMsg(), 3) },
	}
	cmds := map[string]Command{
		"receive": receiveCmd(), "receive by fingerprint": fingerprintCmd("sha256:b"), "receive at seq": at(receiveCmd(), 5),
		"start": startCmd(), "finish": finishCmd(), "renew": renewCmd(1, 1000),
	}
	settled := 0
	for mname, mk := range msgs {
		for cname, c := range cmds {
			for _, mo := range []Moment{{Now: leaseNow}, {Now: leaseUntil + 1}, {Now: leaseNow, MaxAttempts: 3}} {
				k := Known{Next: 5, Message: mk(), Now: mo.Now, MaxAttempts: mo.MaxAttempts}
				want, err := Evaluate(&c, k)
				wantOK := c.Op == OpReceive && c.ExpectedSeq == NoExpectedSeq && err == nil && !want.Append
				m := mk()
				got, ok := Settled(&c, m, mo)
				if ok != wantOK || (ok && !reflect.DeepEqual(got, want)) {
					t.Errorf("%s of a message %s at %+v: Settled = %+v, %v; Evaluate = %+v, %v", cname, mname, mo, got, ok, want, err)
				}
				if !reflect.DeepEqual(m, mk()) {
					t.Errorf("%s of a message %s: Settled changed the message to %+v", cname, mname, m)
				}
				if ok {
					settled++
				}
			}
		}
		if _, ok := Settled(&[]Command{receiveCmd()}[0], nil, Moment{Now: leaseNow}); ok {
			t.Errorf("Settled a receive of a message never received")
		}
	}
	if settled == 0 {
		t.Fatal("no command was settled")
	}
}
