package reliability

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// The sequential model of SPEC §1–§2 for one conversation whose message
// ids are 0..maxMsgs-1 and whose step indexes are 0..maxSteps-1, checked
// by porcupine against the histories the linearizability tests record.

const (
	maxMsgs  = 12
	maxSteps = 3
)

// opKind is a call of the protocol.
type opKind uint8

const (
	opReceive opKind = iota
	opDecide
	opStart
	opStep
	opFinish
)

var opNames = [...]string{"receive", "decide", "start", "step", "finish"}

// lInput is a call: its op, message, and for step its index and output.
type lInput struct {
	Op     opKind
	Msg    int
	Step   int
	Output string
}

// lOutput is what a call returned. Unknown: the connection broke, and the
// call may or may not have taken effect. Otherwise Code is the error code,
// or "" on success with Decision ("start", "resume", "skip"), ResumeFrom,
// and Seq and Duplicate where the reply has them (Seq is -1 otherwise).
type lOutput struct {
	Unknown    bool
	Code       string
	Decision   string
	ResumeFrom int64
	Seq        int64
	Duplicate  bool
}

// Message statuses of the model (no fail is sent, so never errored).
const (
	stUnknown uint8 = iota
	stReceived
	stInProgress
	stFinished
)

type mStep struct {
	Done   bool
	Output string
	Seq    int64
}

type mMsg struct {
	Status    uint8
	StartSeq  int64 // the seq of the latest processing_started
	FinishSeq int64
	Steps     [maxSteps]mStep
}

// lState is the model's state; it is comparable.
type lState struct {
	Next int64
	Msgs [maxMsgs]mMsg
}

func (m *mMsg) decision() lOutput {
	switch m.Status {
	case stUnknown:
		return lOutput{Decision: "start", Seq: -1}
	case stFinished:
		return lOutput{Decision: "skip", Seq: -1}
	}
	from := int64(0)
	for i := range m.Steps {
		if m.Steps[i].Done {
			from = int64(i) + 1
		}
	}
	return lOutput{Decision: "resume", ResumeFrom: from, Seq: -1}
}

// apply is the sequential specification: the state after in, and what in
// returns.
func apply(s lState, in lInput) (lState, lOutput) {
	m := &s.Msgs[in.Msg]
	fail := func(code string) lOutput { return lOutput{Code: code, Seq: -1} }
	appended := func() int64 { seq := s.Next; s.Next++; return seq }
	switch in.Op {
	case opDecide:
		return s, m.decision()
	case opReceive:
		out := m.decision()
		if m.Status == stUnknown {
			out.Seq = appended()
			m.Status = stReceived
		}
		return s, out
	}
	switch {
	case m.Status == stUnknown:
		return s, fail("unknown_message")
	case m.Status == stFinished && in.Op == opFinish:
		return s, lOutput{Seq: m.FinishSeq, Duplicate: true}
	case m.Status == stFinished:
		return s, fail("already_finished")
	}
	switch in.Op {
	case opStart:
		if m.Status == stInProgress {
			return s, lOutput{Seq: m.StartSeq, Duplicate: true}
		}
		m.StartSeq = appended()
		m.Status = stInProgress
		return s, lOutput{Seq: m.StartSeq}
	case opStep:
		st := &m.Steps[in.Step]
		if st.Done {
			if st.Output == in.Output {
				return s, lOutput{Seq: st.Seq, Duplicate: true}
			}
			return s, fail("step_conflict")
		}
		*st = mStep{Done: true, Output: in.Output, Seq: appended()}
		return s, lOutput{Seq: st.Seq}
	case opFinish:
		m.FinishSeq = appended()
		m.Status = stFinished
		return s, lOutput{Seq: m.FinishSeq}
	}
	panic(fmt.Sprintf("unknown op %d", in.Op))
}

// model is apply as a porcupine model: a call with an unknown outcome
// either took effect (any reply) or did not.
var model = porcupine.NondeterministicModel{
	Init: func() []any { return []any{lState{}} },
	Step: func(state, input, output any) []any {
		s, in, out := state.(lState), input.(lInput), output.(lOutput)
		next, want := apply(s, in)
		if out.Unknown {
			if next == s {
				return []any{s}
			}
			return []any{s, next}
		}
		if out == want {
			return []any{next}
		}
		return nil
	},
	Equal: func(a, b any) bool { return a.(lState) == b.(lState) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(lInput), output.(lOutput)
		call := fmt.Sprintf("%s(m%d", opNames[in.Op], in.Msg)
		if in.Op == opStep {
			call += fmt.Sprintf(", %d, %q", in.Step, in.Output)
		}
		call += ")"
		return call + " -> " + describeOutput(out)
	},
	DescribeState: func(state any) string {
		s := state.(lState)
		var b strings.Builder
		fmt.Fprintf(&b, "next_seq=%d", s.Next)
		for i, m := range s.Msgs {
			fmt.Fprintf(&b, "; m%d: %s", i, [...]string{"unknown", "received", "in_progress", "finished"}[m.Status])
			for j, st := range m.Steps {
				if st.Done {
					fmt.Fprintf(&b, " %d=%q@%d", j, st.Output, st.Seq)
				}
			}
		}
		return b.String()
	},
}

func describeOutput(out lOutput) string {
	switch {
	case out.Unknown:
		return "unknown (connection broke)"
	case out.Code != "":
		return out.Code
	case out.Decision == "resume":
		return fmt.Sprintf("resume from %d", out.ResumeFrom)
	case out.Decision != "" && out.Seq < 0:
		return out.Decision
	case out.Decision != "":
		return fmt.Sprintf("%s seq %d dup=%v", out.Decision, out.Seq, out.Duplicate)
	}
	return fmt.Sprintf("seq %d dup=%v", out.Seq, out.Duplicate)
}

// seqOp is a call in a sequential test history.
type seqOp struct {
	in  lInput
	out lOutput
}

func sequential(ops []seqOp) []porcupine.Operation {
	var h []porcupine.Operation
	for i, o := range ops {
		h = append(h, porcupine.Operation{ClientId: 0, Input: o.in, Output: o.out, Call: int64(2 * i), Return: int64(2*i + 1)})
	}
	return h
}

func ok(seq int64, dup bool) lOutput { return lOutput{Seq: seq, Duplicate: dup} }
func code(c string) lOutput          { return lOutput{Code: c, Seq: -1} }

// docsHistory is the start/step/finish walk of docs/PROTOCOL.md (without
// fail), as the model must accept it.
func docsHistory() []seqOp {
	return []seqOp{
		{lInput{Op: opStart, Msg: 0}, code("unknown_message")},
		{lInput{Op: opDecide, Msg: 0}, lOutput{Decision: "start", Seq: -1}},
		{lInput{Op: opReceive, Msg: 0}, lOutput{Decision: "start", Seq: 0}},
		{lInput{Op: opReceive, Msg: 0}, lOutput{Decision: "resume", Seq: -1}},
		{lInput{Op: opStep, Msg: 0, Step: 1, Output: "a"}, ok(1, false)},
		{lInput{Op: opStart, Msg: 0}, ok(2, false)},
		{lInput{Op: opStart, Msg: 0}, ok(2, true)},
		{lInput{Op: opDecide, Msg: 0}, lOutput{Decision: "resume", ResumeFrom: 2, Seq: -1}},
		{lInput{Op: opStep, Msg: 0, Step: 0, Output: "b"}, ok(3, false)},
		{lInput{Op: opStep, Msg: 0, Step: 0, Output: "b"}, ok(3, true)},
		{lInput{Op: opStep, Msg: 0, Step: 0, Output: "a"}, code("step_conflict")},
		{lInput{Op: opFinish, Msg: 0}, ok(4, false)},
		{lInput{Op: opFinish, Msg: 0}, ok(4, true)},
		{lInput{Op: opStep, Msg: 0, Step: 2, Output: "a"}, code("already_finished")},
		{lInput{Op: opStart, Msg: 0}, code("already_finished")},
		{lInput{Op: opReceive, Msg: 0}, lOutput{Decision: "skip", Seq: -1}},
		{lInput{Op: opFinish, Msg: 1}, code("unknown_message")},
		{lInput{Op: opReceive, Msg: 1}, lOutput{Decision: "start", Seq: 5}},
		{lInput{Op: opFinish, Msg: 1}, ok(6, false)},
	}
}

func TestModelAcceptsSpecHistory(t *testing.T) {
	m := model.ToModel()
	if res := porcupine.CheckOperationsTimeout(m, sequential(docsHistory()), 0); res != porcupine.Ok {
		t.Fatalf("the model rejects the protocol's own history: %v", res)
	}
}

// TestModelRejects changes one reply of the accepted history at a time;
// each change breaks a rule, and the model must reject the history.
func TestModelRejects(t *testing.T) {
	m := model.ToModel()
	wrong := map[int]lOutput{
		0:  ok(0, false),                                        // start of an unknown message appended
		2:  lOutput{Decision: "start", Seq: 1},                  // first seq is not 0
		3:  lOutput{Decision: "start", Seq: 1},                  // two starts for one message
		6:  ok(3, false),                                        // start while in progress appended again
		7:  lOutput{Decision: "resume", ResumeFrom: 1, Seq: -1}, // resume_from not highest + 1
		9:  code("step_conflict"),                               // identical step is a duplicate
		10: ok(3, true),                                         // different output is a conflict
		12: ok(5, false),                                        // finish after finish appended
		13: ok(5, false),                                        // step after finish
		15: lOutput{Decision: "resume", ResumeFrom: 3, Seq: -1}, // finished must skip
		17: lOutput{Decision: "start", Seq: 4},                  // seq reused
		18: ok(7, false),                                        // seq gap
	}
	for i, out := range wrong {
		h := docsHistory()
		h[i].out = out
		if res := porcupine.CheckOperationsTimeout(m, sequential(h), 0); res != porcupine.Illegal {
			t.Errorf("reply %d changed to %s: check says %v, want Illegal", i, describeOutput(out), res)
		}
	}
	// Concurrency: two overlapping receives of a new message cannot both
	// start it, whichever order they are linearized in.
	both := []porcupine.Operation{
		{ClientId: 0, Input: lInput{Op: opReceive, Msg: 2}, Output: lOutput{Decision: "start", Seq: 0}, Call: 0, Return: 10},
		{ClientId: 1, Input: lInput{Op: opReceive, Msg: 2}, Output: lOutput{Decision: "start", Seq: 0}, Call: 1, Return: 9},
	}
	if res := porcupine.CheckOperationsTimeout(m, both, 0); res != porcupine.Illegal {
		t.Errorf("two starts of one new message: %v, want Illegal", res)
	}
	// An unknown outcome may have taken effect, but a later reply must
	// still be consistent with one of the two.
	unknown := []porcupine.Operation{
		{ClientId: 0, Input: lInput{Op: opReceive, Msg: 1}, Output: lOutput{Decision: "start", Seq: 0}, Call: 0, Return: 1},
		{ClientId: 1, Input: lInput{Op: opStart, Msg: 1}, Output: lOutput{Unknown: true}, Call: 2, Return: 3},
		{ClientId: 0, Input: lInput{Op: opStart, Msg: 1}, Output: ok(1, true), Call: 4, Return: 5},
	}
	if res := porcupine.CheckOperationsTimeout(m, unknown, 0); res != porcupine.Ok {
		t.Errorf("unknown start that landed: %v, want Ok", res)
	}
	unknown[2].Output = ok(2, false)
	if res := porcupine.CheckOperationsTimeout(m, unknown, 0); res != porcupine.Illegal {
		t.Errorf("seq skipped after an unknown start: %v, want Illegal", res)
	}
}
