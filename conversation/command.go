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
// ErrorOccurred, OpRenew a LeaseRenewed, OpRelease a MessageReleased.
const (
	OpReceive Op = 1
	OpStart   Op = 2
	OpStep    Op = 3
	OpFinish  Op = 4
	OpFail    Op = 5
	OpRenew   Op = 6
	OpRelease Op = 7
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

	// Protocol 2 (SPEC §7). Fingerprint (receive), Worker (start) and
	// Reason (release) are "" when not given; LeaseMS (start, renew) is 0
	// when not given. Token (step, finish, fail, renew) counts when
	// HasToken is set.
	Fingerprint string
	Worker      string
	LeaseMS     int64
	Token       int64
	HasToken    bool
	Reason      string

	// Retention (SPEC §8): a receive's sent_at, when HasSentAt is set.
	SentAt    int64
	HasSentAt bool
}

// Delivery returns what the receive c says of the message it delivers.
func (c *Command) Delivery() Delivery {
	return Delivery{Fingerprint: c.Fingerprint, SentAt: c.SentAt, HasSentAt: c.HasSentAt}
}

// Validate checks the arguments of c against the limits of SPEC §3 and §7.
// Returns a *FieldError naming the first bad field.
func (c *Command) Validate() error {
	if c.Op < OpReceive || c.Op > OpRelease {
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
	if c.HasSentAt && c.SentAt < 0 {
		return &FieldError{Field: "sent_at", Problem: "must not be negative"}
	}
	if c.ExpectedSeq < NoExpectedSeq {
		return &FieldError{Field: "expected_seq", Problem: "must not be negative"}
	}
	if c.HasToken && c.Token < 0 {
		return &FieldError{Field: "token", Problem: "must not be negative"}
	}
	if c.Fingerprint != "" {
		if err := ValidFingerprint(c.Fingerprint); err != nil {
			return err
		}
	}
	if c.Worker != "" {
		if err := ValidName("worker", c.Worker); err != nil {
			return err
		}
	}
	if c.LeaseMS != 0 || c.Op == OpRenew {
		if err := ValidLease(c.LeaseMS); err != nil {
			return err
		}
	}
	switch c.Op {
	case OpFail:
		return ValidError(c.Error)
	case OpRenew:
		if !c.HasToken {
			return &FieldError{Field: "token", Problem: "is required"}
		}
	case OpRelease:
		if c.Reason != "" {
			return ValidText("reason", c.Reason)
		}
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
		e.Fingerprint = c.Fingerprint
	case OpStart:
		e.Worker, e.LeaseMS = c.Worker, c.LeaseMS
	case OpStep:
		e.StepIndex, e.Output = c.StepIndex, c.Output
	case OpFail:
		e.Error = c.Error
	case OpRenew:
		e.Token, e.LeaseMS = c.Token, c.LeaseMS
	case OpRelease:
		e.Reason = c.Reason
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
		Fingerprint: e.Fingerprint, Worker: e.Worker, LeaseMS: e.LeaseMS,
		Token: e.Token, HasToken: e.Type == LeaseRenewed, Reason: e.Reason,
	}
}

// sameAs reports whether e is the event c would append: the same type and
// message id, and the same step index, output, error text, received_at,
// fingerprint, worker, lease, token and reason where c gives them; when
// exact, an optional field c leaves out must be absent from e too.
func (c *Command) sameAs(e *Event, exact bool) bool {
	if e == nil || e.Type != c.Op.eventType() || e.MessageID != c.MessageID || e.Conversation != c.Conversation {
		return false
	}
	given := func(asked, stored string) bool { return asked == stored || !exact && asked == "" }
	switch c.Op {
	case OpReceive:
		return (!c.HasReceivedAt || c.ReceivedAt == e.ReceivedAt) && given(c.Fingerprint, e.Fingerprint)
	case OpStart:
		return given(c.Worker, e.Worker) && (c.LeaseMS == e.LeaseMS || !exact && c.LeaseMS == 0)
	case OpStep:
		return c.StepIndex == e.StepIndex && bytes.Equal(c.Output, e.Output)
	case OpFail:
		return c.Error == e.Error
	case OpRenew:
		return c.Token == e.Token && c.LeaseMS == e.LeaseMS
	case OpRelease:
		return given(c.Reason, e.Reason)
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
	// Now is the time the rules see (epoch ms): the store's clock when it
	// writes, an event's ts when it is replayed. Leases are judged by it.
	Now int64
	// MaxAttempts is how many times a message may be started before it is
	// quarantined; 0 for no limit.
	MaxAttempts int64
	// Exact makes a retry by expected_seq a duplicate only of the very
	// event the command makes: an optional field it leaves out must be
	// absent from the stored event too. A log replayed or imported is
	// exact; a request from a client is not (it may leave out what it
	// gave the first time).
	Exact bool
	// Horizon is the conversation's forgotten_before (SPEC §8).
	Horizon Horizon
}

// retried returns the outcome of a retry of the write that appended e: a
// duplicate answered as the write was, with the decision of a receive, the
// token of a start, and the lease a start or a renew set.
func (e *Event) retried() Outcome {
	o := Outcome{Seq: e.Seq, Duplicate: true}
	switch e.Type {
	case MessageReceived:
		o.Decision = Decision{Action: Start, Rule: RuleNeverSeen}
	case ProcessingStarted:
		o.Token = e.Seq
	}
	if e.LeaseMS > 0 {
		o.LeaseExpiresAt = e.TS + e.LeaseMS
	}
	return o
}

// Replaying sets k to judge c, the command of a logged event, as the rules
// judged it when the log recorded it at ts: at that time, and a release
// under the highest max_attempts that quarantines its message, for the log
// does not keep the setting of its day. A start is never refused by
// quarantine then, and a retry must be exact (see Known.Exact).
func (k *Known) Replaying(c *Command, ts int64) {
	k.Now, k.MaxAttempts, k.Exact = ts, 0, true
	if m := k.Message; c.Op == OpRelease && m != nil {
		k.MaxAttempts = max(1, m.Attempts)
	}
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
	// Token is, for an OpStart command, the seq of the processing_started
	// it appended or duplicates: the message's fencing token.
	Token int64
	// LeaseExpiresAt is, for an OpStart or OpRenew command that leaves the
	// message leased, when its lease lapses (epoch ms); 0 otherwise.
	LeaseExpiresAt int64
}

// Settled answers, without a writer, a command that the committed state m
// of its message settles without appending: a receive that gives no
// expected_seq and whose decision at mo is not to start the message (a
// skip, a resume, a busy or a quarantined message). ok is false for any
// other command, for a message never received (m nil), and when the rules
// refuse the command: those are the writer's to answer, in order with the
// writes.
func Settled(c *Command, m *Message, mo Moment) (o Outcome, ok bool) {
	if c.Op != OpReceive || c.ExpectedSeq != NoExpectedSeq || m == nil || m.Status == StatusUnknown {
		return Outcome{}, false
	}
	cp := *m
	o, err := Evaluate(c, Known{Message: &cp, Now: mo.Now, MaxAttempts: mo.MaxAttempts})
	return o, err == nil && !o.Append
}

// Evaluate applies the write rules of SPEC §2 and §7, in order, to c given
// k.
//
// Returns a *SequenceConflictError when c.ExpectedSeq is not k.Next and c is
// not a retry of k.Prior, a *FingerprintMismatchError for a receive whose
// fingerprint differs from the stored one, ErrUnknownMessage when a write
// other than receive names a message never received, ErrAlreadyFinished
// for a start, step or fail after finish, a *BusyError for a start of a
// message another worker leases, ErrQuarantined for a start that would
// append to a quarantined message, a *FencedError for a step, finish, fail
// or renew with a token that is not current (and a renew of a message not
// in progress), ErrNotQuarantined for a release of a message that is not
// quarantined, and ErrStepConflict for a completed step with other output.
// A rejected command appends nothing.
func Evaluate(c *Command, k Known) (Outcome, error) {
	if c.ExpectedSeq != NoExpectedSeq && c.ExpectedSeq != k.Next {
		if c.ExpectedSeq < k.Next && k.Prior != nil && k.Prior.Seq == c.ExpectedSeq && c.sameAs(k.Prior, k.Exact) {
			return k.Prior.retried(), nil
		}
		// A compacted message's finish is gone from the log, and its
		// tombstone keeps its seq: a retry of it is still a duplicate.
		if m := k.Message; c.ExpectedSeq < k.Next && k.Prior == nil && m != nil && m.Compacted &&
			c.Op == OpFinish && c.ExpectedSeq == m.LastSeq {
			return Outcome{Seq: m.LastSeq, Duplicate: true}, nil
		}
		return Outcome{}, &SequenceConflictError{Expected: c.ExpectedSeq, Actual: k.Next}
	}
	appendAt := Outcome{Append: true, Seq: k.Next}
	m := k.Message
	if m != nil && m.Status == StatusUnknown {
		m = nil
	}
	if c.Op == OpReceive {
		d, err := Deliver(m, c.Delivery(), k.Horizon, Moment{Now: k.Now, MaxAttempts: k.MaxAttempts})
		if err != nil {
			return Outcome{}, err
		}
		if d.Action == Start {
			appendAt.Decision = d
			return appendAt, nil
		}
		return Outcome{Decision: d}, nil
	}
	if m == nil {
		if k.Horizon.Set {
			return Outcome{}, errForgottenMessage
		}
		return Outcome{}, ErrUnknownMessage
	}
	if m.Status == StatusFinished {
		switch c.Op {
		case OpFinish:
			return Outcome{Seq: m.LastSeq, Duplicate: true}, nil
		case OpRenew:
			return Outcome{}, &FencedError{Token: c.Token, CurrentToken: m.StartedSeq, Compacted: m.Compacted}
		case OpRelease:
			return Outcome{}, ErrNotQuarantined
		}
		return Outcome{}, ErrAlreadyFinished
	}
	// A message never started has no current token: every token is stale.
	if c.HasToken && (m.StartedSeq == 0 || c.Token != m.StartedSeq || (c.Op == OpRenew && m.Status != StatusInProgress)) {
		return Outcome{}, &FencedError{Token: c.Token, CurrentToken: m.StartedSeq}
	}
	switch c.Op {
	case OpStart:
		return evaluateStart(c, m, k, appendAt)
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
	case OpRenew:
		appendAt.LeaseExpiresAt = k.Now + c.LeaseMS
	case OpRelease:
		if !m.Quarantined(k.Now, k.MaxAttempts) {
			return Outcome{}, ErrNotQuarantined
		}
	}
	return appendAt, nil
}

// evaluateStart applies the rules of a start of m, received and not
// finished, after §2 rules 1–3 (SPEC §7): the lease, then the §2
// duplicate, then quarantine, then the append at appendAt.
func evaluateStart(c *Command, m *Message, k Known, appendAt Outcome) (Outcome, error) {
	if m.Leased(k.Now) {
		if c.Worker != "" && c.Worker == m.Worker {
			return Outcome{Seq: m.StartedSeq, Duplicate: true, Token: m.StartedSeq, LeaseExpiresAt: m.LeaseUntil}, nil
		}
		return Outcome{}, &BusyError{Worker: m.Worker, Token: m.StartedSeq, RetryAfterMS: max(1, m.LeaseUntil-k.Now)}
	}
	if m.Status == StatusInProgress && c.LeaseMS == 0 {
		return Outcome{Seq: m.StartedSeq, Duplicate: true, Token: m.StartedSeq}, nil
	}
	// A first start, a retry after an error, or a takeover of a lapsed
	// lease (or of a start that held none).
	if m.Quarantined(k.Now, k.MaxAttempts) {
		return Outcome{}, ErrQuarantined
	}
	appendAt.Token = appendAt.Seq
	if c.LeaseMS > 0 {
		appendAt.LeaseExpiresAt = k.Now + c.LeaseMS
	}
	return appendAt, nil
}
