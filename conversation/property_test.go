package conversation

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"pgregory.net/rapid"
)

// The small worlds that random histories draw from, so that they collide.
var (
	propMessageIDs = []string{"m1", "m2", "m3"}
	// Weighted towards steps, so that step duplicates and conflicts happen
	// before most messages finish.
	propOps     = []Op{OpReceive, OpReceive, OpStart, OpStart, OpStep, OpStep, OpStep, OpStep, OpFinish, OpFail, OpFail}
	propOutputs = [][]byte{nil, {}, []byte("x"), []byte("yz"), {0x00, 0xff}}
	propErrors  = []string{"boom", "timeout"}
)

// modelType is the event type each op appends, written out here rather than
// taken from the package.
var modelType = map[Op]Type{
	OpReceive: MessageReceived,
	OpStart:   ProcessingStarted,
	OpStep:    StepCompleted,
	OpFinish:  ProcessingFinished,
	OpFail:    ErrorOccurred,
}

// modelSameEvent reports whether e is the event c would append, by SPEC §2
// rule 1: the same type and message id, and the same step index, output,
// error text and received_at where c gives them.
func modelSameEvent(c *Command, e *Event) bool {
	if e.Type != modelType[c.Op] || e.MessageID != c.MessageID {
		return false
	}
	switch e.Type {
	case MessageReceived:
		return !c.HasReceivedAt || e.ReceivedAt == c.ReceivedAt
	case StepCompleted:
		return e.StepIndex == c.StepIndex && string(e.Output) == string(c.Output)
	case ErrorOccurred:
		return e.Error == c.Error
	}
	return true
}

// modelMessage is what a naive scan of the raw log knows of one message.
type modelMessage struct {
	received    bool
	finishedSeq int64 // -1 if not finished
	lastStart   int64 // seq of the latest processing_started, -1 if none
	lastError   int64 // seq of the latest error_occurred, -1 if none
	last        *Event
	maxStep     int64 // -1 if no step
	steps       map[uint32]*Event
}

func modelScan(log []Event, id string) modelMessage {
	m := modelMessage{finishedSeq: -1, lastStart: -1, lastError: -1, maxStep: -1, steps: map[uint32]*Event{}}
	for i := range log {
		e := &log[i]
		if e.MessageID != id {
			continue
		}
		m.last = e
		switch e.Type {
		case MessageReceived:
			m.received = true
		case ProcessingStarted:
			m.lastStart = e.Seq
		case StepCompleted:
			if _, ok := m.steps[e.StepIndex]; !ok {
				m.steps[e.StepIndex] = e
			}
			if int64(e.StepIndex) > m.maxStep {
				m.maxStep = int64(e.StepIndex)
			}
		case ProcessingFinished:
			m.finishedSeq = e.Seq
		case ErrorOccurred:
			m.lastError = e.Seq
		}
	}
	return m
}

// modelStatus is the status of message id by a scan of the log.
func modelStatus(log []Event, id string) Status {
	m := modelScan(log, id)
	switch {
	case !m.received:
		return StatusUnknown
	case m.finishedSeq >= 0:
		return StatusFinished
	case m.lastStart < 0 && m.lastError < 0:
		return StatusReceived
	case m.lastStart > m.lastError:
		return StatusInProgress
	default:
		return StatusErrored
	}
}

// modelRedelivery is the redelivery decision for id by a scan of the log.
func modelRedelivery(log []Event, id string) Decision {
	m := modelScan(log, id)
	switch modelStatus(log, id) {
	case StatusFinished:
		return Decision{Action: Skip, Rule: RuleFinished}
	case StatusReceived:
		return Decision{Action: Resume, Rule: RuleReceived, ResumeFrom: m.maxStep + 1}
	case StatusInProgress:
		return Decision{Action: Resume, Rule: RuleInProgress, ResumeFrom: m.maxStep + 1}
	case StatusErrored:
		return Decision{Action: Resume, Rule: RuleErrored, ResumeFrom: m.maxStep + 1}
	default:
		return Decision{Action: Start, Rule: RuleNeverSeen}
	}
}

// modelEvaluate applies SPEC §2 to c against the raw log by scanning it.
func modelEvaluate(log []Event, c *Command) (Outcome, error) {
	next := int64(len(log))
	if c.ExpectedSeq != NoExpectedSeq && c.ExpectedSeq != next {
		if c.ExpectedSeq >= 0 && c.ExpectedSeq < next && modelSameEvent(c, &log[c.ExpectedSeq]) {
			o := Outcome{Seq: c.ExpectedSeq, Duplicate: true}
			switch c.Op {
			case OpReceive:
				o.Decision = Decision{Action: Start, Rule: RuleNeverSeen}
			case OpStart:
				o.Token = c.ExpectedSeq
			}
			return o, nil
		}
		return Outcome{}, &SequenceConflictError{Expected: c.ExpectedSeq, Actual: next}
	}
	m := modelScan(log, c.MessageID)
	if c.Op == OpReceive {
		d := modelRedelivery(log, c.MessageID)
		if d.Action == Start {
			return Outcome{Append: true, Seq: next, Decision: d}, nil
		}
		return Outcome{Decision: d}, nil
	}
	if !m.received {
		return Outcome{}, ErrUnknownMessage
	}
	if m.finishedSeq >= 0 {
		if c.Op == OpFinish {
			return Outcome{Seq: m.finishedSeq, Duplicate: true}, nil
		}
		return Outcome{}, ErrAlreadyFinished
	}
	switch c.Op {
	case OpStart:
		if m.lastStart > m.lastError {
			return Outcome{Seq: m.lastStart, Duplicate: true, Token: m.lastStart}, nil
		}
		return Outcome{Append: true, Seq: next, Token: next}, nil
	case OpStep:
		if e := m.steps[c.StepIndex]; e != nil {
			if string(e.Output) == string(c.Output) {
				return Outcome{Seq: e.Seq, Duplicate: true}, nil
			}
			return Outcome{}, ErrStepConflict
		}
	case OpFail:
		if m.last.Type == ErrorOccurred && m.last.Error == c.Error {
			return Outcome{Seq: m.last.Seq, Duplicate: true}, nil
		}
	}
	return Outcome{Append: true, Seq: next}, nil
}

// sameResult reports whether two results of a rule evaluation agree.
func sameResult(o1 Outcome, err1 error, o2 Outcome, err2 error) bool {
	if err1 == nil || err2 == nil {
		return err1 == nil && err2 == nil && o1 == o2
	}
	var sc1, sc2 *SequenceConflictError
	if errors.As(err1, &sc1) || errors.As(err2, &sc2) {
		return errors.As(err1, &sc1) && errors.As(err2, &sc2) && *sc1 == *sc2
	}
	return errors.Is(err1, err2)
}

// drawCommand draws a command against the conversation whose log is log.
func drawCommand(t *rapid.T, name string, log []Event) Command {
	next := int64(len(log))
	if next > 0 && rapid.IntRange(0, 9).Draw(t, "retryLogged") == 0 {
		// Exactly the command of a logged event, retried.
		c := CommandOf(&log[rapid.Int64Range(0, next-1).Draw(t, "retrySeq")])
		if c.Op == OpReceive && rapid.Bool().Draw(t, "retryWithoutReceivedAt") {
			c.HasReceivedAt, c.ReceivedAt = false, 0
		}
		return c
	}
	c := Command{
		Op:           rapid.SampledFrom(propOps).Draw(t, "op"),
		Conversation: name,
		MessageID:    rapid.SampledFrom(propMessageIDs).Draw(t, "messageID"),
		ExpectedSeq:  NoExpectedSeq,
	}
	switch c.Op {
	case OpReceive:
		if rapid.Bool().Draw(t, "hasReceivedAt") {
			c.HasReceivedAt, c.ReceivedAt = true, rapid.Int64Range(0, 3).Draw(t, "receivedAt")
		}
	case OpStep:
		c.StepIndex = uint32(rapid.IntRange(0, 5).Draw(t, "stepIndex"))
		c.Output = rapid.SampledFrom(propOutputs).Draw(t, "output")
	case OpFail:
		c.Error = rapid.SampledFrom(propErrors).Draw(t, "error")
	}
	switch rapid.IntRange(0, 5).Draw(t, "expectedSeqKind") {
	case 3: // right
		c.ExpectedSeq = next
	case 4: // wrong, possibly ahead
		c.ExpectedSeq = rapid.Int64Range(0, next+2).Draw(t, "wrongSeq")
	case 5: // a past seq, a retry only by chance
		if next > 0 {
			c.ExpectedSeq = rapid.Int64Range(0, next-1).Draw(t, "pastSeq")
		}
	}
	return c
}

// TestEvaluate_RandomHistories builds random histories command by command
// and checks the rules, the state and the redelivery decision against naive
// scans of the log.
func TestEvaluate_RandomHistories(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const name = "conv"
		state := NewState(name)
		var log []Event
		n := rapid.IntRange(1, 80).Draw(t, "commands")
		for i := 0; i < n; i++ {
			c := drawCommand(t, name, log)
			k := state.Known(&c)
			if c.NeedsPrior(state.Next) {
				prior := log[c.ExpectedSeq]
				k.Prior = &prior
			}
			wantO, wantErr := modelEvaluate(log, &c)
			o, err := Evaluate(&c, k)
			if !sameResult(o, err, wantO, wantErr) {
				t.Fatalf("command %d: Evaluate(%s) = %+v, %v; want %+v, %v", i, describe(&c), o, err, wantO, wantErr)
			}
			if c.ExpectedSeq >= 0 && c.ExpectedSeq < state.Next && isLoggedCommand(log, &c) && err != nil {
				t.Fatalf("command %d: Evaluate(%s) = %v; a retry of the logged event must be a duplicate", i, describe(&c), err)
			}
			if err != nil {
				continue
			}
			// (d) a duplicate points at a logged event of the same type and message.
			if o.Duplicate {
				if o.Append || o.Seq < 0 || o.Seq >= int64(len(log)) {
					t.Fatalf("command %d: Evaluate(%s) = %+v; a duplicate must point into the log of %d events", i, describe(&c), o, len(log))
				}
				if e := log[o.Seq]; e.Type != modelType[c.Op] || e.MessageID != c.MessageID {
					t.Fatalf("command %d: Evaluate(%s) = %+v, but the event at %d is %v of %q", i, describe(&c), o, o.Seq, e.Type, e.MessageID)
				}
			}
			if !o.Append {
				continue
			}
			e := c.Event(o.Seq, 1_000_000+int64(i))
			if err := state.Apply(&e); err != nil {
				t.Fatalf("command %d: Evaluate(%s) = %+v, but Apply(%+v) = %v", i, describe(&c), o, e, err)
			}
			log = append(log, e)
		}

		// (a) the replay of the log is the state built incrementally.
		replayed, err := Replay(name, log)
		if err != nil {
			t.Fatalf("Replay(%q, log of %d events) = %v", name, len(log), err)
		}
		if !reflect.DeepEqual(replayed, state) {
			t.Fatalf("Replay(%q, log) = %+v, want %+v", name, replayed, state)
		}
		// (c) seqs are 0..n-1.
		for i := range log {
			if log[i].Seq != int64(i) {
				t.Fatalf("log[%d].Seq = %d, want %d", i, log[i].Seq, i)
			}
		}
		if state.Next != int64(len(log)) {
			t.Fatalf("Next = %d, want %d", state.Next, len(log))
		}
		// (b) the redelivery decision, and the status, of every message.
		for _, id := range append([]string{"never"}, propMessageIDs...) {
			want := modelRedelivery(log, id)
			if got := Redelivery(state.Messages[id], 0, 0); got != want {
				t.Fatalf("Redelivery(Messages[%q] = %+v) = %+v, want %+v", id, state.Messages[id], got, want)
			}
			var status Status
			if m := state.Messages[id]; m != nil {
				status = m.Status
			}
			if want := modelStatus(log, id); status != want {
				t.Fatalf("Messages[%q].Status = %v, want %v", id, status, want)
			}
		}
		// The completed steps are those of the log.
		steps := 0
		for i := range log {
			e := &log[i]
			if e.Type != StepCompleted {
				continue
			}
			steps++
			r, ok := state.Steps[StepKey{e.MessageID, e.StepIndex}]
			if !ok || r.Seq != e.Seq || r.Index != e.StepIndex || !bytes.Equal(r.Output, e.Output) {
				t.Fatalf("Steps[%q, %d] = %+v, %t; want the step at seq %d", e.MessageID, e.StepIndex, r, ok, e.Seq)
			}
		}
		if len(state.Steps) != steps {
			t.Fatalf("len(Steps) = %d, want %d", len(state.Steps), steps)
		}
		// (e) the counts are those of the messages.
		var want Counts
		for _, m := range state.Messages {
			switch m.Status {
			case StatusReceived:
				want.Received++
			case StatusInProgress:
				want.InProgress++
			case StatusErrored:
				want.Errored++
			case StatusFinished:
				want.Finished++
			}
		}
		if state.Counts != want {
			t.Fatalf("Counts = %+v, want %+v from the messages", state.Counts, want)
		}
	})
}

// isLoggedCommand reports whether c is exactly the command of the event
// logged at c.ExpectedSeq (as CommandOf would make it, received_at aside).
func isLoggedCommand(log []Event, c *Command) bool {
	e := &log[c.ExpectedSeq]
	want := CommandOf(e)
	got := *c
	if got.Op == OpReceive && !got.HasReceivedAt {
		got.HasReceivedAt, got.ReceivedAt = true, e.ReceivedAt
	}
	return got.Op == want.Op && got.Conversation == want.Conversation && got.MessageID == want.MessageID &&
		got.ReceivedAt == want.ReceivedAt && got.StepIndex == want.StepIndex &&
		bytes.Equal(got.Output, want.Output) && got.Error == want.Error
}
