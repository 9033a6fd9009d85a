package conversation

import (
	"bytes"
	"fmt"
)

// Op is the operation of a write request.
type Op uint8

// The write operations. OpReceive appends a MessageReceived only for a new
// message; the others append their event: OpStart a ProcessingStarted,
// OpStep a StepCompleted, OpFinish a ProcessingFinished, OpFail an
// ErrorOccurred.
const (
	OpReceive Op = 1
	OpStart   Op = 2
	OpStep    Op = 3
	OpFinish  Op = 4
	OpFail    Op = 5
)

// eventType is the type of event that a request of op o appends.
func (o Op) eventType() Type { return Type(o) }

// NoExpectedSeq is Command.ExpectedSeq when the request gives none.
const NoExpectedSeq = -1

// Command is a write request for one message of a conversation.
type Command struct {
	Op           Op
	Conversation string
	MessageID    string
	// ReceivedAt is the receive's received_at when HasReceivedAt is set;
	// otherwise the caller fills in its commit time.
	ReceivedAt    int64
	HasReceivedAt bool
	StepIndex     uint32
	Output        []byte
	Error         string
	ExpectedSeq   int64 // NoExpectedSeq, or the seq the request expects to append at
}

// Validate checks the arguments of c against the limits of SPEC §3.
// Returns a *FieldError naming the first bad field.
func (c *Command) Validate() error {
	if c.Op < OpReceive || c.Op > OpFail {
		return &FieldError{Field: "op", Problem: fmt.Sprintf("%d is not a write operation", c.Op)}
	}
	if err := ValidName("conversation", c.Conversation); err != nil {
		return err
	}
	if err := ValidName("message_id", c.MessageID); err != nil {
		return err
	}
	if c.HasReceivedAt && c.ReceivedAt < 0 {
		return &FieldError{Field: "received_at", Problem: "must not be negative"}
	}
	if c.ExpectedSeq < NoExpectedSeq {
		return &FieldError{Field: "expected_seq", Problem: "must not be negative"}
	}
	if c.Op == OpFail {
		return ValidError(c.Error)
	}
	return nil
}

// Event returns the event c would append at seq, committed at ts (epoch
// ms). A receive without received_at is received at ts.
func (c *Command) Event(seq, ts int64) Event {
	e := Event{Conversation: c.Conversation, Seq: seq, TS: ts, Type: c.Op.eventType(), MessageID: c.MessageID}
	switch c.Op {
	case OpReceive:
		e.ReceivedAt = ts
		if c.HasReceivedAt {
			e.ReceivedAt = c.ReceivedAt
		}
	case OpStep:
		e.StepIndex, e.Output = c.StepIndex, c.Output
	case OpFail:
		e.Error = c.Error
	}
	return e
}

// CommandOf returns the command that appends e: the request whose retry
// with expected_seq = e.Seq would be answered as a duplicate of e.
func CommandOf(e *Event) Command {
	return Command{
		Op: Op(e.Type), Conversation: e.Conversation, MessageID: e.MessageID,
		ReceivedAt: e.ReceivedAt, HasReceivedAt: true,
		StepIndex: e.StepIndex, Output: e.Output, Error: e.Error,
		ExpectedSeq: e.Seq,
	}
}

// sameAs reports whether e is the event c would append: the same type and
// message id, and the same step index, output, error text and received_at
// where c gives them.
func (c *Command) sameAs(e *Event) bool {
	if e == nil || e.Type != c.Op.eventType() || e.MessageID != c.MessageID || e.Conversation != c.Conversation {
		return false
	}
	switch c.Op {
	case OpReceive:
		return !c.HasReceivedAt || c.ReceivedAt == e.ReceivedAt
	case OpStep:
		return c.StepIndex == e.StepIndex && bytes.Equal(c.Output, e.Output)
	case OpFail:
		return c.Error == e.Error
	}
	return true
}

// Known is what the write rules need to know to evaluate one command.
type Known struct {
	// Next is the conversation's next seq.
	Next int64
	// Message is the command's message, nil if it was never received.
	Message *Message
	// Step is, for an OpStep command, the step already completed at its index
	// for its message, nil if none.
	Step *StepRecord
	// Prior is the event stored at the command's ExpectedSeq, needed only
	// when that is below Next (see NeedsPrior). Nil means none was given.
	Prior *Event
}

// StepRecord is a completed step: its index, the seq of its event and the
// output it recorded.
type StepRecord struct {
	Index  uint32
	Seq    int64
	Output []byte
}

// NeedsPrior reports whether evaluating c against a conversation whose next
// seq is next needs the event stored at c.ExpectedSeq (Known.Prior).
func (c *Command) NeedsPrior(next int64) bool {
	return c.ExpectedSeq != NoExpectedSeq && c.ExpectedSeq < next
}

// Outcome is the result of a command that the rules accept.
type Outcome struct {
	// Append is set when the command appends an event at Seq.
	Append bool
	// Seq is the seq of the appended event, or of the original event when
	// Duplicate is set. It is unset for a receive that appends nothing.
	Seq int64
	// Duplicate is set when the command repeats a stored event.
	Duplicate bool
	// Decision is the redelivery decision of an OpReceive command.
	Decision Decision
}

// Evaluate applies the write rules of SPEC §2, in order, to c given k.
//
// Returns a *SequenceConflictError when c.ExpectedSeq is not k.Next and c is
// not a retry of k.Prior, ErrUnknownMessage when a start, step, finish or
// fail names a message never received, ErrAlreadyFinished for a start, step
// or fail after finish, and ErrStepConflict for a completed step with other
// output. A rejected command appends nothing.
func Evaluate(c *Command, k Known) (Outcome, error) {
	if c.ExpectedSeq != NoExpectedSeq && c.ExpectedSeq != k.Next {
		if c.ExpectedSeq < k.Next && k.Prior != nil && k.Prior.Seq == c.ExpectedSeq && c.sameAs(k.Prior) {
			o := Outcome{Seq: c.ExpectedSeq, Duplicate: true}
			if c.Op == OpReceive {
				o.Decision = Decision{Action: Start}
			}
			return o, nil
		}
		return Outcome{}, &SequenceConflictError{Expected: c.ExpectedSeq, Actual: k.Next}
	}
	appendAt := Outcome{Append: true, Seq: k.Next}
	m := k.Message
	if m != nil && m.Status == StatusUnknown {
		m = nil
	}
	if c.Op == OpReceive {
		d := Redelivery(m)
		if d.Action == Start {
			appendAt.Decision = d
			return appendAt, nil
		}
		return Outcome{Decision: d}, nil
	}
	if m == nil {
		return Outcome{}, ErrUnknownMessage
	}
	if m.Status == StatusFinished {
		if c.Op == OpFinish {
			return Outcome{Seq: m.LastSeq, Duplicate: true}, nil
		}
		return Outcome{}, ErrAlreadyFinished
	}
	switch c.Op {
	case OpStart:
		if m.Status == StatusInProgress {
			return Outcome{Seq: m.StartedSeq, Duplicate: true}, nil
		}
	case OpStep:
		if s := k.Step; s != nil {
			if bytes.Equal(s.Output, c.Output) {
				return Outcome{Seq: s.Seq, Duplicate: true}, nil
			}
			return Outcome{}, ErrStepConflict
		}
	case OpFail:
		if m.LastType == ErrorOccurred && m.Error == c.Error {
			return Outcome{Seq: m.LastSeq, Duplicate: true}, nil
		}
	}
	return appendAt, nil
}
