package conversation

import (
	"bytes"
	"reflect"
	"testing"

	"pgregory.net/rapid"
)

// The small worlds that random histories draw from, so that they collide.
var (
	propMessageIDs = []string{"m1", "m2", "m3"}
	// Weighted towards steps, so that step duplicates and conflicts happen
	// before most messages finish, and towards starts, so that leases,
	// takeovers and quarantine happen.
	propOps = []Op{OpReceive, OpReceive, OpStart, OpStart, OpStart, OpStep, OpStep, OpStep, OpStep,
		OpFinish, OpFail, OpFail, OpRenew, OpRenew, OpRelease}
	propOutputs      = [][]byte{nil, {}, []byte("x"), []byte("yz"), {0x00, 0xff}}
	propErrors       = []string{"boom", "timeout"}
	propWorkers      = []string{"", "w1", "w2"}
	propLeases       = []int64{0, 0, 5, 20, 60} // ms; 0: none
	propFingerprints = []string{"", "f1", "f2"}
	propReasons      = []string{"", "fixed"}
)

// modelType is the event type each op appends, written out here rather than
// taken from the package.
var modelType = map[Op]Type{
	OpReceive: MessageReceived,
	OpStart:   ProcessingStarted,
	OpStep:    StepCompleted,
	OpFinish:  ProcessingFinished,
	OpFail:    ErrorOccurred,
	OpRenew:   LeaseRenewed,
	OpRelease: MessageReleased,
}

// modelSameEvent reports whether e is the event c would append, by SPEC §2
// rule 1: the same type and message id, and the same step index, output,
// error text, received_at, fingerprint, worker, lease, token and reason
// where c gives them.
func modelSameEvent(c *Command, e *Event) bool {
	if e.Type != modelType[c.Op] || e.MessageID != c.MessageID {
		return false
	}
	givenText := func(asked, stored string) bool { return asked == "" || asked == stored }
	switch e.Type {
	case MessageReceived:
		return (!c.HasReceivedAt || e.ReceivedAt == c.ReceivedAt) && givenText(c.Fingerprint, e.Fingerprint)
	case ProcessingStarted:
		return givenText(c.Worker, e.Worker) && (c.LeaseMS == 0 || c.LeaseMS == e.LeaseMS)
	case StepCompleted:
		return e.StepIndex == c.StepIndex && string(e.Output) == string(c.Output)
	case ErrorOccurred:
		return e.Error == c.Error
	case LeaseRenewed:
		return e.Token == c.Token && e.LeaseMS == c.LeaseMS
	case MessageReleased:
		return givenText(c.Reason, e.Reason)
	}
	return true
}

// modelMessage is what a naive scan of the raw log knows of one message.
type modelMessage struct {
	received    *Event // its message_received, nil if none
	finishedSeq int64  // -1 if not finished
	lastStart   *Event // its latest processing_started, nil if none
	lastError   *Event // its latest error_occurred, nil if none
	last        *Event
	maxStep     int64 // -1 if no step
	steps       map[uint32]*Event
	// lease is the latest processing_started or lease_renewed of the
	// current token (lastStart's seq), nil if none.
	lease *Event
	// attempts counts its processing_started since it was received or
	// last released.
	attempts int64
}

func modelScan(log []Event, id string) modelMessage {
	m := modelMessage{finishedSeq: -1, maxStep: -1, steps: map[uint32]*Event{}}
	for i := range log {
		e := &log[i]
		if e.MessageID != id {
			continue
		}
		m.last = e
		switch e.Type {
		case MessageReceived:
			m.received = e
		case ProcessingStarted:
			m.lastStart, m.lease = e, e
			m.attempts++
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
			m.lastError = e
		case LeaseRenewed:
			if m.lastStart != nil && e.Token == m.lastStart.Seq {
				m.lease = e
			}
		case MessageReleased:
			m.attempts = 0
		}
	}
	return m
}

// status is the status of the scanned message.
func (m *modelMessage) status() Status {
	switch {
	case m.received == nil:
		return StatusUnknown
	case m.finishedSeq >= 0:
		return StatusFinished
	case m.lastStart == nil && m.lastError == nil:
		return StatusReceived
	case m.lastError == nil || m.lastStart != nil && m.lastStart.Seq > m.lastError.Seq:
		return StatusInProgress
	default:
		return StatusErrored
	}
}

// token is the seq of the latest processing_started, 0 if none.
func (m *modelMessage) token() int64 {
	if m.lastStart == nil {
		return 0
	}
	return m.lastStart.Seq
}

// worker is the worker of the latest processing_started.
func (m *modelMessage) worker() string {
	if m.lastStart == nil {
		return ""
	}
	return m.lastStart.Worker
}

// leaseUntil is when the current token's lease lapses, 0 if it has none.
func (m *modelMessage) leaseUntil() int64 {
	if m.lease == nil || m.lease.LeaseMS == 0 {
		return 0
	}
	return m.lease.TS + m.lease.LeaseMS
}

func (m *modelMessage) leased(now int64) bool {
	return m.status() == StatusInProgress && now < m.leaseUntil()
}

func (m *modelMessage) quarantined(now, maxAttempts int64) bool {
	s := m.status()
	return maxAttempts > 0 && s != StatusUnknown && s != StatusFinished && !m.leased(now) && m.attempts >= maxAttempts
}

func (m *modelMessage) errorText() string {
	if m.lastError == nil {
		return ""
	}
	return m.lastError.Error
}

// modelRedelivery is the redelivery decision for id at now under
// maxAttempts, by a scan of the log.
func modelRedelivery(log []Event, id string, now, maxAttempts int64) Decision {
	m := modelScan(log, id)
	switch {
	case m.status() == StatusUnknown:
		return Decision{Action: Start, Rule: RuleNeverSeen}
	case m.status() == StatusFinished:
		return Decision{Action: Skip, Rule: RuleFinished}
	case m.leased(now):
		return Decision{Action: Busy, Rule: RuleLeased, Worker: m.worker(), Token: m.token(), RetryAfterMS: max(1, m.leaseUntil()-now)}
	case m.quarantined(now, maxAttempts):
		return Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: m.attempts, Error: m.errorText()}
	}
	rule := map[Status]Rule{StatusReceived: RuleReceived, StatusInProgress: RuleInProgress, StatusErrored: RuleErrored}[m.status()]
	return Decision{Action: Resume, Rule: rule, ResumeFrom: m.maxStep + 1}
}

// modelEvaluate applies SPEC §2 and §7 to c at now under maxAttempts
// against the raw log, by scanning it.
func modelEvaluate(log []Event, c *Command, now, maxAttempts int64) (Outcome, error) {
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
			// A retry answers the lease its start or renew set.
			if e := &log[c.ExpectedSeq]; (c.Op == OpStart || c.Op == OpRenew) && e.LeaseMS > 0 {
				o.LeaseExpiresAt = e.TS + e.LeaseMS
			}
			return o, nil
		}
		return Outcome{}, &SequenceConflictError{Expected: c.ExpectedSeq, Actual: next}
	}
	m := modelScan(log, c.MessageID)
	if c.Op == OpReceive {
		if m.received != nil && c.Fingerprint != "" && m.received.Fingerprint != "" && c.Fingerprint != m.received.Fingerprint {
			return Outcome{}, &FingerprintMismatchError{Stored: m.received.Fingerprint}
		}
		d := modelRedelivery(log, c.MessageID, now, maxAttempts)
		if d.Action == Start {
			return Outcome{Append: true, Seq: next, Decision: d}, nil
		}
		return Outcome{Decision: d}, nil
	}
	if m.received == nil {
		return Outcome{}, ErrUnknownMessage
	}
	fenced := &FencedError{Token: c.Token, CurrentToken: m.token()}
	if m.finishedSeq >= 0 {
		switch c.Op {
		case OpFinish:
			return Outcome{Seq: m.finishedSeq, Duplicate: true}, nil
		case OpRenew:
			return Outcome{}, fenced
		case OpRelease:
			return Outcome{}, ErrNotQuarantined
		}
		return Outcome{}, ErrAlreadyFinished
	}
	// A token is current when it names the latest processing_started; a
	// message never started has no current token.
	if c.HasToken && (m.lastStart == nil || c.Token != m.lastStart.Seq || c.Op == OpRenew && m.status() != StatusInProgress) {
		return Outcome{}, fenced
	}
	appendAt := Outcome{Append: true, Seq: next}
	switch c.Op {
	case OpStart:
		if m.leased(now) {
			if c.Worker != "" && c.Worker == m.worker() {
				return Outcome{Seq: m.token(), Duplicate: true, Token: m.token(), LeaseExpiresAt: m.leaseUntil()}, nil
			}
			return Outcome{}, &BusyError{Worker: m.worker(), Token: m.token(), RetryAfterMS: max(1, m.leaseUntil()-now)}
		}
		if m.status() == StatusInProgress && c.LeaseMS == 0 {
			return Outcome{Seq: m.token(), Duplicate: true, Token: m.token()}, nil
		}
		if m.quarantined(now, maxAttempts) {
			return Outcome{}, ErrQuarantined
		}
		appendAt.Token = next
		if c.LeaseMS > 0 {
			appendAt.LeaseExpiresAt = now + c.LeaseMS
		}
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
	case OpRenew:
		appendAt.LeaseExpiresAt = now + c.LeaseMS
	case OpRelease:
		if !m.quarantined(now, maxAttempts) {
			return Outcome{}, ErrNotQuarantined
		}
	}
	return appendAt, nil
}

// sameResult reports whether two results of a rule evaluation agree, every
// field of the outcome and of a structured error included.
func sameResult(o1 Outcome, err1 error, o2 Outcome, err2 error) bool {
	if err1 == nil || err2 == nil {
		return err1 == nil && err2 == nil && o1 == o2
	}
	return o1 == o2 && matchError(err1, err2)
}

// drawToken draws a token for a write to message id: one of its
// processing_started seqs (the latest is current), 0, or any seq.
func drawToken(t *rapid.T, log []Event, id string) int64 {
	var starts []int64
	for i := range log {
		if log[i].MessageID == id && log[i].Type == ProcessingStarted {
			starts = append(starts, log[i].Seq)
		}
	}
	switch k := rapid.IntRange(0, 5).Draw(t, "tokenKind"); {
	case k <= 2 && len(starts) > 0:
		return starts[len(starts)-1]
	case k == 3 && len(starts) > 0:
		return rapid.SampledFrom(starts).Draw(t, "earlierToken")
	case k == 4:
		return 0
	default:
		return rapid.Int64Range(0, int64(len(log))+1).Draw(t, "anyToken")
	}
}

// drawCommand draws a command against the conversation whose log is log.
func drawCommand(t *rapid.T, name string, log []Event) Command {
	next := int64(len(log))
	if next > 0 && rapid.IntRange(0, 9).Draw(t, "retryLogged") == 0 {
		// Exactly the command of a logged event retried, perhaps without
		// the arguments a retry may leave out.
		c := CommandOf(&log[rapid.Int64Range(0, next-1).Draw(t, "retrySeq")])
		if rapid.Bool().Draw(t, "retryWithoutOptional") {
			c.HasReceivedAt, c.ReceivedAt = false, 0
			c.Fingerprint, c.Worker, c.Reason = "", "", ""
			if c.Op == OpStart {
				c.LeaseMS = 0
			}
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
		c.Fingerprint = rapid.SampledFrom(propFingerprints).Draw(t, "fingerprint")
	case OpStart:
		c.Worker = rapid.SampledFrom(propWorkers).Draw(t, "worker")
		c.LeaseMS = rapid.SampledFrom(propLeases).Draw(t, "leaseMS")
	case OpStep:
		c.StepIndex = uint32(rapid.IntRange(0, 5).Draw(t, "stepIndex"))
		c.Output = rapid.SampledFrom(propOutputs).Draw(t, "output")
	case OpFail:
		c.Error = rapid.SampledFrom(propErrors).Draw(t, "error")
	case OpRenew:
		c.Token, c.HasToken = drawToken(t, log, c.MessageID), true
		c.LeaseMS = rapid.SampledFrom(propLeases[2:]).Draw(t, "renewMS")
	case OpRelease:
		c.Reason = rapid.SampledFrom(propReasons).Draw(t, "reason")
	}
	switch c.Op {
	case OpStep, OpFinish, OpFail:
		if rapid.Bool().Draw(t, "hasToken") {
			c.Token, c.HasToken = drawToken(t, log, c.MessageID), true
		}
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

// TestEvaluate_RandomHistories builds random histories command by command,
// on a clock that moves on by a random step before each command (events
// take ts = now) and under a max_attempts that changes now and then, and
// checks the rules, the state and the redelivery decision against naive
// scans of the log.
func TestEvaluate_RandomHistories(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		const name = "conv"
		state := NewState(name)
		var log []Event
		now := rapid.Int64Range(0, 1_000_000).Draw(t, "clock")
		maxAttempts := rapid.Int64Range(0, 3).Draw(t, "maxAttempts")
		tokens := make(map[string]int64) // the highest token each message had
		n := rapid.IntRange(1, 100).Draw(t, "commands")
		for i := 0; i < n; i++ {
			now += rapid.SampledFrom([]int64{0, 1, 3, 10, 30}).Draw(t, "advance")
			if rapid.IntRange(0, 19).Draw(t, "reload") == 0 {
				maxAttempts = rapid.Int64Range(0, 3).Draw(t, "maxAttempts")
			}
			c := drawCommand(t, name, log)
			if err := c.Validate(); err != nil {
				t.Fatalf("command %d: drawn %s is not valid: %v", i, describe(&c), err)
			}
			k := state.Known(&c)
			k.Now, k.MaxAttempts = now, maxAttempts
			if c.NeedsPrior(state.Next) {
				prior := log[c.ExpectedSeq]
				k.Prior = &prior
			}
			wantO, wantErr := modelEvaluate(log, &c, now, maxAttempts)
			o, err := Evaluate(&c, k)
			if !sameResult(o, err, wantO, wantErr) {
				t.Fatalf("command %d at %d, max_attempts %d: Evaluate(%s) = %+v, %v; want %+v, %v", i, now, maxAttempts, describe(&c), o, err, wantO, wantErr)
			}
			if c.ExpectedSeq >= 0 && c.ExpectedSeq < state.Next && isLoggedCommand(log, &c) && err != nil {
				t.Fatalf("command %d: Evaluate(%s) = %v; a retry of the logged event must be a duplicate", i, describe(&c), err)
			}
			if err == nil {
				// A duplicate points at a logged event of the same type and message.
				if o.Duplicate {
					if o.Append || o.Seq < 0 || o.Seq >= int64(len(log)) {
						t.Fatalf("command %d: Evaluate(%s) = %+v; a duplicate must point into the log of %d events", i, describe(&c), o, len(log))
					}
					if e := log[o.Seq]; e.Type != modelType[c.Op] || e.MessageID != c.MessageID {
						t.Fatalf("command %d: Evaluate(%s) = %+v, but the event at %d is %v of %q", i, describe(&c), o, o.Seq, e.Type, e.MessageID)
					}
				}
				if o.Append {
					e := c.Event(o.Seq, now)
					if err := state.Apply(&e); err != nil {
						t.Fatalf("command %d: Evaluate(%s) = %+v, but Apply(%+v) = %v", i, describe(&c), o, e, err)
					}
					log = append(log, e)
				}
			}
			// Every message's decision and status at this moment, and tokens
			// that only grow.
			for _, id := range propMessageIDs {
				checkMessage(t, state, log, id, now, maxAttempts)
				if m := state.Messages[id]; m != nil {
					if m.Token() < tokens[id] {
						t.Fatalf("command %d: Messages[%q].Token() = %d, down from %d", i, id, m.Token(), tokens[id])
					}
					tokens[id] = m.Token()
				}
			}
		}

		// The replay of the log is the state built incrementally.
		replayed, err := Replay(name, log)
		if err != nil {
			t.Fatalf("Replay(%q, log of %d events) = %v", name, len(log), err)
		}
		if !reflect.DeepEqual(replayed, state) {
			t.Fatalf("Replay(%q, log) = %+v, want %+v", name, replayed, state)
		}
		// Seqs are 0..n-1.
		for i := range log {
			if log[i].Seq != int64(i) {
				t.Fatalf("log[%d].Seq = %d, want %d", i, log[i].Seq, i)
			}
		}
		if state.Next != int64(len(log)) {
			t.Fatalf("Next = %d, want %d", state.Next, len(log))
		}
		// Decisions of a message never seen, and once every lease lapsed.
		checkMessage(t, state, log, "never", now, maxAttempts)
		for _, id := range propMessageIDs {
			checkMessage(t, state, log, id, now+1000, maxAttempts)
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
		// The counts are those of the messages.
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

// checkMessage checks what state knows of message id against a scan of
// log: its status, token, worker, lease, attempts, fingerprint, last error
// and highest step, and its redelivery decision at now under maxAttempts.
func checkMessage(t *rapid.T, state *State, log []Event, id string, now, maxAttempts int64) {
	want := modelRedelivery(log, id, now, maxAttempts)
	m := state.Messages[id]
	if got := Redelivery(m, now, maxAttempts); got != want {
		t.Fatalf("at %d, max_attempts %d: Redelivery(Messages[%q] = %+v) = %+v, want %+v", now, maxAttempts, id, m, got, want)
	}
	s := modelScan(log, id)
	if m == nil {
		if s.received != nil {
			t.Fatalf("Messages[%q] = nil, but it was received at seq %d", id, s.received.Seq)
		}
		return
	}
	fingerprint := ""
	if s.received != nil {
		fingerprint = s.received.Fingerprint
	}
	type fields struct {
		Status      Status
		Token       int64
		Worker      string
		LeaseUntil  int64
		Attempts    int64
		Fingerprint string
		Error       string
		LastStep    int64
	}
	got := fields{m.Status, m.Token(), m.Worker, m.LeaseUntil, m.Attempts, m.Fingerprint, m.Error, m.LastStep}
	if w := (fields{s.status(), s.token(), s.worker(), s.leaseUntil(), s.attempts, fingerprint, s.errorText(), s.maxStep}); got != w {
		t.Fatalf("Messages[%q] = %+v, want %+v by a scan of the log", id, got, w)
	}
	if m.Leased(now) != s.leased(now) || m.Quarantined(now, maxAttempts) != s.quarantined(now, maxAttempts) {
		t.Fatalf("at %d, max_attempts %d: Messages[%q] leased %t, quarantined %t; want %t, %t", now, maxAttempts, id,
			m.Leased(now), m.Quarantined(now, maxAttempts), s.leased(now), s.quarantined(now, maxAttempts))
	}
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
		bytes.Equal(got.Output, want.Output) && got.Error == want.Error &&
		got.Fingerprint == want.Fingerprint && got.Worker == want.Worker && got.LeaseMS == want.LeaseMS &&
		got.Token == want.Token && got.HasToken == want.HasToken && got.Reason == want.Reason
}
