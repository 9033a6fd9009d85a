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

// describe shows c in test messages.
func describe(c *Command) string {
	var b strings.Builder
	switch c.Op {
	case OpReceive:
		b.WriteString("receive")
	case OpStart:
		b.WriteString("start")
	case OpStep:
		b.WriteString("step")
	case OpFinish:
		b.WriteString("finish")
	case OpFail:
		b.WriteString("fail")
	default:
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
	if c.ExpectedSeq != NoExpectedSeq {
		fmt.Fprintf(&b, " expected_seq=%d", c.ExpectedSeq)
	}
	return b.String()
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
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := tt.c
			got, err := Evaluate(&c, tt.k)
			switch {
			case tt.wantConflict != nil:
				var sc *SequenceConflictError
				if !errors.As(err, &sc) || *sc != *tt.wantConflict {
					t.Errorf("Evaluate(%s) = %+v, %v; want sequence_conflict %+v", describe(&c), got, err, *tt.wantConflict)
				}
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("Evaluate(%s) = %+v, %v; want %v", describe(&c), got, err, tt.wantErr)
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
	for _, c := range []Command{receiveCmd(), startCmd(), stepCmd(0, []byte("x")), stepCmd(0, []byte("out")), finishCmd(), failCmd("boom"), at(startCmd(), 1), at(startCmd(), 12)} {
		for _, m := range []*Message{receivedMsg(), inProgressMsg(), erroredMsg(), finishedMsg()} {
			before := *m
			s := StepRecord{Index: 0, Seq: 2, Output: []byte("out")}
			prior := startedEvent(1)
			o, err := Evaluate(&c, Known{Next: 10, Message: m, Step: &s, Prior: prior})
			if *m != before || string(s.Output) != "out" || s.Index != 0 || s.Seq != 2 || !reflect.DeepEqual(prior, startedEvent(1)) {
				t.Errorf("Evaluate(%s) = %+v, %v on a %v message; it modified its Known", describe(&c), o, err, before.Status)
			}
		}
	}
}

func TestRedelivery(t *testing.T) {
	tests := []struct {
		name string
		m    *Message
		want Decision
	}{
		{"Nil", nil, Decision{Action: Start, Rule: RuleNeverSeen}},
		{"StatusUnknown", &Message{ID: testMsg, LastStep: 3}, Decision{Action: Start, Rule: RuleNeverSeen}},
		{"Received", receivedMsg(), Decision{Action: Resume, Rule: RuleReceived, ResumeFrom: 0}},
		{"InProgress", inProgressMsg(), Decision{Action: Resume, Rule: RuleInProgress, ResumeFrom: 3}},
		{"NonContiguous", nonContiguousMsg(), Decision{Action: Resume, Rule: RuleInProgress, ResumeFrom: 8}},
		{"Errored", erroredMsg(), Decision{Action: Resume, Rule: RuleErrored, ResumeFrom: 1}},
		{"Finished", finishedMsg(), Decision{Action: Skip, Rule: RuleFinished}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Redelivery(tt.m, 0, 0); got != tt.want {
				t.Errorf("Redelivery(%+v) = %+v, want %+v", tt.m, got, tt.want)
			}
		})
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
