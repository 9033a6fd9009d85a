package reliability

import (
	"fmt"
	"strings"
	"testing"

	"github.com/anishathalye/porcupine"
)

// The sequential model of SPEC §1–§2 and §7 for one conversation whose
// message ids are 0..maxMsgs-1 and whose step indexes are 0..maxSteps-1,
// checked by porcupine against the histories the linearizability tests
// record.
//
// Time is left out of the model: every lease the histories take or renew
// is a day long (leaseMS), so none lapses during a run, and a message in
// progress holds a lease exactly when its current token took or renewed
// one. Takeovers still happen, of starts that took no lease, and the
// daemon runs with max_attempts = maxAttempts so that quarantine and
// release do too.

const (
	maxMsgs     = 12
	maxSteps    = 3
	maxAttempts = 2
)

// leaseMS are the lease_ms a history gives, by lInput.Lease (0: none): two,
// so that a retry with the other one is told apart.
var leaseMS = [...]int64{1: 86_400_000, 2: 86_399_000}

// The texts a history uses, by index (0: none): errors of fail,
// fingerprints of receive and decide, reasons of release.
var (
	errTexts     = [...]string{1: "e1", 2: "e2"}
	fingerprints = [...]string{1: "fa", 2: "fb"}
	reasons      = [...]string{1: "ops"}
)

// workerName is the name of worker w (0: none).
func workerName(w int) string { return fmt.Sprintf("w%d", w) }

// opKind is a call of the protocol.
type opKind uint8

const (
	opReceive opKind = iota
	opDecide
	opStart
	opStep
	opFinish
	opFail
	opRenew
	opRelease
)

var opNames = [...]string{"receive", "decide", "start", "step", "finish", "fail", "renew", "release"}

// lInput is a call: its op and message, and the arguments its op takes,
// texts and leases by index in the tables above (0: not given). Token
// counts when HasToken is set; ExpectedSeq when it is not -1.
type lInput struct {
	Op          opKind
	Msg         int
	Step        int
	Output      string
	Error       int
	Worker      int
	Lease       int
	Fingerprint int
	Reason      int
	Token       int64
	HasToken    bool
	ExpectedSeq int64
}

// lOutput is what a call returned. Unknown: the connection broke, and the
// call may or may not have taken effect. Otherwise Code is the error code,
// or "" on success with Decision ("start", "resume", "skip", "busy",
// "quarantined"), ResumeFrom, and Seq and Duplicate where the reply has
// them (Seq is -1 otherwise). Token is a start's token, or the holder's
// token of busy (then Worker names the holder), or the request's token of
// fenced (then Current is the message's, 0 for null). Actual is the next
// seq of sequence_conflict; Attempts and Error (by index) those of a
// quarantined decision; Stored the fingerprint (by index) of
// fingerprint_mismatch.
type lOutput struct {
	Unknown    bool
	Code       string
	Decision   string
	ResumeFrom int64
	Seq        int64
	Duplicate  bool
	Token      int64
	Worker     int
	Current    int64
	Actual     int64
	Attempts   int64
	Error      int
	Stored     int
}

// Message statuses of the model.
const (
	stUnknown uint8 = iota
	stReceived
	stInProgress
	stErrored
	stFinished
)

var statusNames = [...]string{"unknown", "received", "in_progress", "errored", "finished"}

type mStep struct {
	Done   bool
	Output string
	Seq    int64
}

type mMsg struct {
	Status      uint8
	Fingerprint int
	Token       int64 // the seq of the latest processing_started, 0 if none
	Worker      int   // of the latest processing_started
	Leased      bool  // its current token took or renewed a lease
	Attempts    int64 // processing_started since received or released
	LastError   int   // the text of its latest error_occurred
	LastErrored bool  // its latest event is an error_occurred
	LastSeq     int64 // the seq of its latest event
	FinishSeq   int64
	Steps       [maxSteps]mStep
}

// lState is the model's state; it is comparable. Log holds every event,
// eventSize bytes each, for retries by expected_seq.
type lState struct {
	Next int64
	Log  string
	Msgs [maxMsgs]mMsg
}

// eventSize is the size of an event in lState.Log: its op, message, two
// arguments (step index and output, error, fingerprint, worker and lease,
// lease, reason) and a renew's token.
const eventSize = 8

func encodeEvent(in lInput) string {
	var b [eventSize]byte
	b[0], b[1] = byte(in.Op), byte(in.Msg)
	switch in.Op {
	case opReceive:
		b[2] = byte(in.Fingerprint)
	case opStart:
		b[2], b[3] = byte(in.Worker), byte(in.Lease)
	case opStep:
		b[2], b[3] = byte(in.Step), in.Output[0]
	case opFail:
		b[2] = byte(in.Error)
	case opRenew:
		b[3] = byte(in.Lease)
		for i := range 4 {
			b[4+i] = byte(in.Token >> (8 * i))
		}
	case opRelease:
		b[2] = byte(in.Reason)
	}
	return string(b[:])
}

// retries reports whether in, given expected_seq below the next seq, is a
// retry of the logged event e (SPEC §2 rule 1): the same op and message,
// and the same arguments where in gives them.
func retries(in lInput, e string) bool {
	if e[0] != byte(in.Op) || e[1] != byte(in.Msg) {
		return false
	}
	given := func(asked int, stored byte) bool { return asked == 0 || byte(asked) == stored }
	switch in.Op {
	case opReceive:
		return given(in.Fingerprint, e[2])
	case opStart:
		return given(in.Worker, e[2]) && given(in.Lease, e[3])
	case opStep:
		return byte(in.Step) == e[2] && in.Output[0] == e[3]
	case opFail:
		return byte(in.Error) == e[2]
	case opRenew:
		return byte(in.Lease) == e[3] && encodeEvent(in)[4:] == e[4:]
	case opRelease:
		return given(in.Reason, e[2])
	}
	return true
}

func (m *mMsg) quarantined() bool {
	return m.Status != stUnknown && m.Status != stFinished && !(m.Status == stInProgress && m.Leased) && m.Attempts >= maxAttempts
}

func (m *mMsg) decision() lOutput {
	switch {
	case m.Status == stUnknown:
		return lOutput{Decision: "start", Seq: -1}
	case m.Status == stFinished:
		return lOutput{Decision: "skip", Seq: -1}
	case m.Status == stInProgress && m.Leased:
		return lOutput{Decision: "busy", Seq: -1, Worker: m.Worker, Token: m.Token}
	case m.quarantined():
		return lOutput{Decision: "quarantined", Seq: -1, Attempts: m.Attempts, Error: m.LastError}
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
	appended := func() int64 {
		seq := s.Next
		s.Next++
		s.Log += encodeEvent(in)
		m.LastSeq, m.LastErrored = seq, false
		return seq
	}
	if in.Op != opDecide && in.ExpectedSeq >= 0 && in.ExpectedSeq != s.Next {
		if in.ExpectedSeq < s.Next && retries(in, s.Log[in.ExpectedSeq*eventSize:][:eventSize]) {
			out := lOutput{Seq: in.ExpectedSeq, Duplicate: true}
			switch in.Op {
			case opReceive:
				out.Decision = "start"
			case opStart:
				out.Token = in.ExpectedSeq
			}
			return s, out
		}
		out := fail("sequence_conflict")
		out.Actual = s.Next
		return s, out
	}
	switch in.Op {
	case opDecide, opReceive:
		if m.Status != stUnknown && in.Fingerprint != 0 && m.Fingerprint != 0 && in.Fingerprint != m.Fingerprint {
			out := fail("fingerprint_mismatch")
			out.Stored = m.Fingerprint
			return s, out
		}
		out := m.decision()
		if in.Op == opReceive && m.Status == stUnknown {
			out.Seq = appended()
			m.Status, m.Fingerprint = stReceived, in.Fingerprint
		}
		return s, out
	}
	fenced := fail("fenced")
	fenced.Token, fenced.Current = in.Token, m.Token
	switch {
	case m.Status == stUnknown:
		return s, fail("unknown_message")
	case m.Status == stFinished && in.Op == opFinish:
		return s, lOutput{Seq: m.FinishSeq, Duplicate: true}
	case m.Status == stFinished && in.Op == opRenew:
		return s, fenced
	case m.Status == stFinished && in.Op == opRelease:
		return s, fail("not_quarantined")
	case m.Status == stFinished:
		return s, fail("already_finished")
	case in.HasToken && (m.Token == 0 || in.Token != m.Token || in.Op == opRenew && m.Status != stInProgress):
		return s, fenced
	}
	switch in.Op {
	case opStart:
		switch {
		case m.Status == stInProgress && m.Leased && in.Worker != 0 && in.Worker == m.Worker:
			return s, lOutput{Seq: m.Token, Duplicate: true, Token: m.Token}
		case m.Status == stInProgress && m.Leased:
			out := fail("busy")
			out.Worker, out.Token = m.Worker, m.Token
			return s, out
		case m.Status == stInProgress && in.Lease == 0:
			return s, lOutput{Seq: m.Token, Duplicate: true, Token: m.Token}
		case m.quarantined():
			return s, fail("quarantined")
		}
		m.Token = appended()
		m.Status, m.Worker, m.Leased = stInProgress, in.Worker, in.Lease != 0
		m.Attempts++
		return s, lOutput{Seq: m.Token, Token: m.Token}
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
	case opFail:
		if m.LastErrored && m.LastError == in.Error {
			return s, lOutput{Seq: m.LastSeq, Duplicate: true}
		}
		seq := appended()
		m.Status, m.LastError, m.LastErrored = stErrored, in.Error, true
		return s, lOutput{Seq: seq}
	case opFinish:
		m.FinishSeq = appended()
		m.Status = stFinished
		return s, lOutput{Seq: m.FinishSeq}
	case opRenew:
		m.Leased = true
		return s, lOutput{Seq: appended()}
	case opRelease:
		if !m.quarantined() {
			return s, fail("not_quarantined")
		}
		m.Attempts = 0
		return s, lOutput{Seq: appended()}
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
		return describeInput(input.(lInput)) + " -> " + describeOutput(output.(lOutput))
	},
	DescribeState: func(state any) string {
		s := state.(lState)
		var b strings.Builder
		fmt.Fprintf(&b, "next_seq=%d", s.Next)
		for i, m := range s.Msgs {
			if m.Status == stUnknown {
				continue
			}
			fmt.Fprintf(&b, "; m%d: %s", i, statusNames[m.Status])
			if m.Token > 0 {
				fmt.Fprintf(&b, " token=%d worker=%d leased=%t", m.Token, m.Worker, m.Leased)
			}
			if m.Attempts > 0 {
				fmt.Fprintf(&b, " attempts=%d", m.Attempts)
			}
			for j, st := range m.Steps {
				if st.Done {
					fmt.Fprintf(&b, " %d=%q@%d", j, st.Output, st.Seq)
				}
			}
		}
		return b.String()
	},
}

func describeInput(in lInput) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s(m%d", opNames[in.Op], in.Msg)
	switch in.Op {
	case opStep:
		fmt.Fprintf(&b, ", %d, %q", in.Step, in.Output)
	case opFail:
		fmt.Fprintf(&b, ", %q", errTexts[in.Error])
	}
	if in.Worker != 0 {
		fmt.Fprintf(&b, ", worker %s", workerName(in.Worker))
	}
	if in.Lease != 0 {
		fmt.Fprintf(&b, ", lease %d", leaseMS[in.Lease])
	}
	if in.Fingerprint != 0 {
		fmt.Fprintf(&b, ", fingerprint %s", fingerprints[in.Fingerprint])
	}
	if in.Reason != 0 {
		fmt.Fprintf(&b, ", reason %s", reasons[in.Reason])
	}
	if in.HasToken {
		fmt.Fprintf(&b, ", token %d", in.Token)
	}
	if in.ExpectedSeq >= 0 {
		fmt.Fprintf(&b, ", expected_seq %d", in.ExpectedSeq)
	}
	return b.String() + ")"
}

func describeOutput(out lOutput) string {
	switch {
	case out.Unknown:
		return "unknown (connection broke)"
	case out.Code == "sequence_conflict":
		return fmt.Sprintf("%s (next seq %d)", out.Code, out.Actual)
	case out.Code == "busy":
		return fmt.Sprintf("busy (worker %d, token %d)", out.Worker, out.Token)
	case out.Code == "fenced":
		return fmt.Sprintf("fenced (token %d, current %d)", out.Token, out.Current)
	case out.Code == "fingerprint_mismatch":
		return fmt.Sprintf("%s (stored %d)", out.Code, out.Stored)
	case out.Code != "":
		return out.Code
	case out.Decision == "resume":
		return fmt.Sprintf("resume from %d", out.ResumeFrom)
	case out.Decision == "busy":
		return fmt.Sprintf("busy (worker %d, token %d)", out.Worker, out.Token)
	case out.Decision == "quarantined":
		return fmt.Sprintf("quarantined (attempts %d, error %d)", out.Attempts, out.Error)
	case out.Decision != "" && out.Seq < 0:
		return out.Decision
	case out.Decision != "":
		return fmt.Sprintf("%s seq %d dup=%v", out.Decision, out.Seq, out.Duplicate)
	case out.Token != 0:
		return fmt.Sprintf("seq %d dup=%v token %d", out.Seq, out.Duplicate, out.Token)
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

// Inputs and outputs of the sequential histories.
func req(op opKind, msg int) lInput { return lInput{Op: op, Msg: msg, ExpectedSeq: -1} }
func step(msg, index int, output string) lInput {
	in := req(opStep, msg)
	in.Step, in.Output = index, output
	return in
}
func with(in lInput, f func(*lInput)) lInput { f(&in); return in }
func tok(in lInput, token int64) lInput {
	in.Token, in.HasToken = token, true
	return in
}
func at(in lInput, seq int64) lInput { in.ExpectedSeq = seq; return in }

func ok(seq int64, dup bool) lOutput { return lOutput{Seq: seq, Duplicate: dup} }
func started(seq int64, dup bool) lOutput {
	return lOutput{Seq: seq, Duplicate: dup, Token: seq}
}
func code(c string) lOutput      { return lOutput{Code: c, Seq: -1} }
func decided(d string) lOutput   { return lOutput{Decision: d, Seq: -1} }
func resumed(from int64) lOutput { return lOutput{Decision: "resume", ResumeFrom: from, Seq: -1} }
func received(seq int64) lOutput { return lOutput{Decision: "start", Seq: seq} }
func conflict(actual int64) lOutput {
	return lOutput{Code: "sequence_conflict", Seq: -1, Actual: actual}
}
func busy(worker int, token int64, decision bool) lOutput {
	out := lOutput{Code: "busy", Seq: -1, Worker: worker, Token: token}
	if decision {
		out.Code, out.Decision = "", "busy"
	}
	return out
}
func fenced(token, current int64) lOutput {
	return lOutput{Code: "fenced", Seq: -1, Token: token, Current: current}
}

// docsHistory is the start/step/finish walk of docs/PROTOCOL.md (without
// fail), as the model must accept it.
func docsHistory() []seqOp {
	return []seqOp{
		{req(opStart, 0), code("unknown_message")},
		{req(opDecide, 0), decided("start")},
		{req(opReceive, 0), received(0)},
		{req(opReceive, 0), resumed(0)},
		{step(0, 1, "a"), ok(1, false)},
		{req(opStart, 0), started(2, false)},
		{req(opStart, 0), started(2, true)},
		{req(opDecide, 0), resumed(2)},
		{step(0, 0, "b"), ok(3, false)},
		{step(0, 0, "b"), ok(3, true)},
		{step(0, 0, "a"), code("step_conflict")},
		{req(opFinish, 0), ok(4, false)},
		{req(opFinish, 0), ok(4, true)},
		{step(0, 2, "a"), code("already_finished")},
		{req(opStart, 0), code("already_finished")},
		{req(opReceive, 0), decided("skip")},
		{req(opFinish, 1), code("unknown_message")},
		{req(opReceive, 1), received(5)},
		{req(opFinish, 1), ok(6, false)},
	}
}

// leaseHistory walks protocol 2 on message 0 under maxAttempts 2: a lease
// and busy starts, a takeover of a start without one, fencing, renew,
// quarantine after a fail and after an unleased start, release,
// fingerprints, and retries by expected_seq.
func leaseHistory() []seqOp {
	leased := func(in lInput, worker, lease int) lInput {
		return with(in, func(in *lInput) { in.Worker, in.Lease = worker, lease })
	}
	fp := func(in lInput, f int) lInput { return with(in, func(in *lInput) { in.Fingerprint = f }) }
	fail := func(msg, text int) lInput { return with(req(opFail, msg), func(in *lInput) { in.Error = text }) }
	renew := func(msg int, token int64, lease int) lInput {
		return tok(with(req(opRenew, msg), func(in *lInput) { in.Lease = lease }), token)
	}
	quarantined := func(attempts int64, err int) lOutput {
		return lOutput{Decision: "quarantined", Seq: -1, Attempts: attempts, Error: err}
	}
	mismatch := lOutput{Code: "fingerprint_mismatch", Seq: -1, Stored: 1}
	return []seqOp{
		0:  {fp(req(opReceive, 0), 1), received(0)},
		1:  {fp(req(opDecide, 0), 2), mismatch},
		2:  {fp(req(opReceive, 0), 2), mismatch},
		3:  {req(opStart, 0), started(1, false)},               // attempt 1, no lease
		4:  {leased(req(opStart, 0), 2, 0), started(1, true)},  // no lease asked: a duplicate
		5:  {leased(req(opStart, 0), 1, 1), started(2, false)}, // a takeover by w1, attempt 2
		6:  {tok(step(0, 0, "a"), 1), fenced(1, 2)},
		7:  {tok(step(0, 0, "a"), 2), ok(3, false)},
		8:  {tok(step(0, 0, "a"), 1), fenced(1, 2)},           // a stale duplicate is fenced
		9:  {step(0, 0, "a"), ok(3, true)},                    // without a token, a duplicate
		10: {leased(req(opStart, 0), 1, 2), started(2, true)}, // the holder again
		11: {leased(req(opStart, 0), 2, 1), busy(1, 2, false)},
		12: {req(opStart, 0), busy(1, 2, false)},
		13: {fp(req(opReceive, 0), 1), busy(1, 2, true)},
		14: {req(opDecide, 0), busy(1, 2, true)}, // leased at max_attempts: busy
		15: {renew(0, 1, 1), fenced(1, 2)},
		16: {renew(0, 2, 2), ok(4, false)},
		17: {at(renew(0, 2, 2), 4), ok(4, true)}, // a retry
		18: {at(renew(0, 2, 1), 4), conflict(5)}, // another lease: not a retry
		19: {req(opRelease, 0), code("not_quarantined")},
		20: {tok(fail(0, 1), 2), ok(5, false)}, // errored at max_attempts: quarantined
		21: {tok(fail(0, 1), 2), ok(5, true)},
		22: {tok(fail(0, 1), 1), fenced(1, 2)},
		23: {renew(0, 2, 1), fenced(2, 2)}, // not in progress
		24: {req(opReceive, 0), quarantined(2, 1)},
		25: {req(opStart, 0), code("quarantined")},
		26: {at(req(opStart, 0), 2), started(2, true)}, // the retry of a fenced start
		27: {step(0, 1, "b"), ok(6, false)},            // steps still land
		28: {with(req(opRelease, 0), func(in *lInput) { in.Reason = 1 }), ok(7, false)},
		29: {req(opRelease, 0), code("not_quarantined")},
		30: {at(req(opRelease, 0), 7), ok(7, true)}, // a retry without reason
		31: {req(opDecide, 0), resumed(2)},
		32: {at(leased(req(opStart, 0), 2, 1), 8), started(8, false)}, // attempt 1 again
		33: {at(req(opStart, 0), 8), started(8, true)},                // a retry without worker or lease
		34: {at(leased(req(opStart, 0), 1, 0), 8), conflict(9)},       // another worker: not a retry
		35: {fail(0, 2), ok(9, false)},
		36: {req(opReceive, 0), resumed(2)},
		37: {req(opStart, 0), started(10, false)},                // attempt 2, no lease: quarantined
		38: {req(opStart, 0), started(10, true)},                 // a duplicate still
		39: {leased(req(opStart, 0), 1, 1), code("quarantined")}, // a takeover is refused
		40: {req(opDecide, 0), quarantined(2, 2)},
		41: {at(fp(req(opReceive, 0), 1), 0), lOutput{Decision: "start", Seq: 0, Duplicate: true}},
		42: {at(fp(req(opReceive, 0), 2), 0), conflict(11)},
		43: {tok(req(opFinish, 0), 10), ok(11, false)},
		44: {tok(req(opFinish, 0), 2), ok(11, true)}, // a stale finish of a finished message
		45: {renew(0, 10, 1), fenced(10, 10)},
		46: {req(opRelease, 0), code("not_quarantined")},
		47: {renew(1, 1, 1), code("unknown_message")},
		48: {req(opRelease, 1), code("unknown_message")},
		49: {req(opReceive, 1), received(12)},
		50: {tok(step(1, 0, "a"), 3), fenced(3, 0)}, // never started
		51: {req(opRelease, 1), code("not_quarantined")},
	}
}

func TestModelAcceptsSpecHistory(t *testing.T) {
	m := model.ToModel()
	for name, h := range map[string][]seqOp{"docs": docsHistory(), "lease": leaseHistory()} {
		if res, info := porcupine.CheckOperationsVerbose(m, sequential(h), 0); res != porcupine.Ok {
			t.Errorf("the model rejects the %s history: %v", name, res)
			if out := visualize(t, m, info); out != "" {
				t.Logf("visualization: %s", out)
			}
		}
	}
}

// TestModelRejects changes one reply of an accepted history at a time;
// each change breaks a rule, and the model must reject the history.
func TestModelRejects(t *testing.T) {
	m := model.ToModel()
	for _, tt := range []struct {
		name    string
		history func() []seqOp
		wrong   map[int]lOutput
	}{
		{"docs", docsHistory, map[int]lOutput{
			0:  ok(0, false),          // start of an unknown message appended
			2:  received(1),           // first seq is not 0
			3:  received(1),           // two starts for one message
			6:  started(3, false),     // start while in progress appended again
			7:  resumed(1),            // resume_from not highest + 1
			9:  code("step_conflict"), // identical step is a duplicate
			10: ok(3, true),           // different output is a conflict
			12: ok(5, false),          // finish after finish appended
			13: ok(5, false),          // step after finish
			15: resumed(3),            // finished must skip
			17: received(4),           // seq reused
			18: ok(7, false),          // seq gap
		}},
		{"lease", leaseHistory, map[int]lOutput{
			1:  resumed(0),                                             // a mismatching fingerprint decided
			4:  started(2, false),                                      // a start without lease took over
			5:  started(1, true),                                       // a start with lease did not take over
			6:  ok(3, false),                                           // a stale token was not fenced
			8:  ok(3, true),                                            // a stale duplicate was not fenced
			10: busy(1, 2, false),                                      // the holder itself was busy
			11: started(2, true),                                       // another worker got the lease
			12: started(2, true),                                       // a start without worker got the lease
			13: resumed(0),                                             // a leased message resumed
			14: lOutput{Decision: "quarantined", Seq: -1, Attempts: 2}, // leased, yet quarantined
			15: ok(5, false),                                           // a stale renew renewed
			17: ok(5, false),                                           // a renew retried appended again
			19: ok(5, false),                                           // a leased message released
			23: ok(6, false),                                           // an errored message renewed
			24: resumed(1),                                             // a quarantined message resumed
			25: started(6, false),                                      // a quarantined message started
			26: code("quarantined"),                                    // a retry refused by quarantine
			28: code("not_quarantined"),                                // a quarantined message not released
			29: ok(8, false),                                           // released twice
			33: started(9, false),                                      // a retry appended again
			37: code("quarantined"),                                    // attempts not reset by release
			38: code("quarantined"),                                    // a duplicate start refused by quarantine
			39: started(11, false),                                     // a quarantined message taken over
			40: resumed(2),                                             // a quarantined message resumed
			44: fenced(2, 10),                                          // a stale finish of a finished message fenced
			45: ok(12, false),                                          // a finished message renewed
			50: ok(13, false),                                          // a token of a message never started accepted
		}},
	} {
		for i, out := range tt.wrong {
			h := tt.history()
			h[i].out = out
			if res := porcupine.CheckOperationsTimeout(m, sequential(h), 0); res != porcupine.Illegal {
				t.Errorf("%s: reply %d to %s changed to %s: check says %v, want Illegal", tt.name, i, describeInput(h[i].in), describeOutput(out), res)
			}
		}
	}
	// Concurrency: two overlapping receives of a new message cannot both
	// start it, whichever order they are linearized in.
	both := []porcupine.Operation{
		{ClientId: 0, Input: req(opReceive, 2), Output: received(0), Call: 0, Return: 10},
		{ClientId: 1, Input: req(opReceive, 2), Output: received(0), Call: 1, Return: 9},
	}
	if res := porcupine.CheckOperationsTimeout(m, both, 0); res != porcupine.Illegal {
		t.Errorf("two starts of one new message: %v, want Illegal", res)
	}
	// Nor can two overlapping leased starts by two workers both hold it.
	leased := func(w int) lInput { return with(req(opStart, 0), func(in *lInput) { in.Worker, in.Lease = w, 1 }) }
	twoHolders := []porcupine.Operation{
		{ClientId: 0, Input: req(opReceive, 0), Output: received(0), Call: 0, Return: 1},
		{ClientId: 0, Input: leased(1), Output: started(1, false), Call: 2, Return: 10},
		{ClientId: 1, Input: leased(2), Output: started(1, true), Call: 3, Return: 9},
	}
	if res := porcupine.CheckOperationsTimeout(m, twoHolders, 0); res != porcupine.Illegal {
		t.Errorf("two workers holding one lease: %v, want Illegal", res)
	}
	twoHolders[2].Output = busy(1, 1, false)
	if res := porcupine.CheckOperationsTimeout(m, twoHolders, 0); res != porcupine.Ok {
		t.Errorf("the second worker busy: %v, want Ok", res)
	}
	// An unknown outcome may have taken effect, but a later reply must
	// still be consistent with one of the two.
	unknown := []porcupine.Operation{
		{ClientId: 0, Input: req(opReceive, 1), Output: received(0), Call: 0, Return: 1},
		{ClientId: 1, Input: req(opStart, 1), Output: lOutput{Unknown: true}, Call: 2, Return: 3},
		{ClientId: 0, Input: req(opStart, 1), Output: started(1, true), Call: 4, Return: 5},
	}
	if res := porcupine.CheckOperationsTimeout(m, unknown, 0); res != porcupine.Ok {
		t.Errorf("unknown start that landed: %v, want Ok", res)
	}
	unknown[2].Output = started(2, false)
	if res := porcupine.CheckOperationsTimeout(m, unknown, 0); res != porcupine.Illegal {
		t.Errorf("seq skipped after an unknown start: %v, want Illegal", res)
	}
}
