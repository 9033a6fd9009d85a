package conversation

// Status is where a message stands in its lifecycle.
type Status uint8

// The statuses. The numbers are stored in the database: never renumber.
const (
	StatusUnknown    Status = 0 // never received
	StatusReceived   Status = 1 // received, never started
	StatusInProgress Status = 2 // started, no finish or error since
	StatusErrored    Status = 3 // its latest start was followed by an error
	StatusFinished   Status = 4 // fully processed
)

var statusNames = [...]string{"unknown", "received", "in_progress", "errored", "finished"}

// ParseStatus returns the status whose wire name is s. Returns false if
// there is none.
func ParseStatus(s string) (Status, bool) {
	for i, name := range statusNames {
		if name == s {
			return Status(i), true
		}
	}
	return 0, false
}

// String returns the wire name of s, such as "in_progress".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return "unknown"
}

// NoStep is Message.LastStep when no step of the message completed.
const NoStep = -1

// Message is what is known of one message of a conversation: enough to apply
// every write rule and to decide a redelivery without reading its events.
type Message struct {
	ID          string
	Status      Status
	ReceivedAt  int64
	ReceivedSeq int64
	// StartedSeq is the seq of its latest processing_started, 0 if it was
	// never started (seq 0 of a conversation is always a message_received):
	// the message's fencing token.
	StartedSeq  int64
	LastStep    int64  // highest completed step index, or NoStep
	Error       string // text of its latest error_occurred, "" if none
	LastType    Type   // type of its latest event
	LastSeq     int64  // seq of its latest event
	LastTS      int64  // ts of its latest event
	Fingerprint string // given by its message_received, "" if none
	Worker      string // given by its latest processing_started, "" if none
	// LeaseUntil is when the lease of its current token lapses (epoch ms):
	// the ts of its latest processing_started or lease_renewed plus that
	// event's lease_ms; 0 when the token never had a lease.
	LeaseUntil int64
	// Attempts counts its processing_started events since it was received
	// or last released.
	Attempts int64
	// Compacted is set for a tombstone: a finished message whose events
	// were compacted away (SPEC §8). It keeps only what Tombstone keeps.
	Compacted bool
}

// Apply advances m by e, an event of m. It does not check the write rules;
// Evaluate does that before an event is made.
func (m *Message) Apply(e *Event) {
	switch e.Type {
	case MessageReceived:
		*m = Message{ID: e.MessageID, Status: StatusReceived, ReceivedAt: e.ReceivedAt, ReceivedSeq: e.Seq,
			LastStep: NoStep, Fingerprint: e.Fingerprint}
	case ProcessingStarted:
		m.Status, m.StartedSeq, m.Worker, m.LeaseUntil = StatusInProgress, e.Seq, e.Worker, 0
		if e.LeaseMS > 0 {
			m.LeaseUntil = e.TS + e.LeaseMS
		}
		m.Attempts++
	case StepCompleted:
		if int64(e.StepIndex) > m.LastStep {
			m.LastStep = int64(e.StepIndex)
		}
	case ProcessingFinished:
		m.Status = StatusFinished
	case ErrorOccurred:
		m.Status, m.Error = StatusErrored, e.Error
	case LeaseRenewed:
		m.LeaseUntil = e.TS + e.LeaseMS
	case MessageReleased:
		m.Attempts = 0
	}
	m.LastType, m.LastSeq, m.LastTS = e.Type, e.Seq, e.TS
}

// Token returns m's fencing token: the seq of its latest
// processing_started, 0 if it was never started.
func (m *Message) Token() int64 { return m.StartedSeq }

// Leased reports whether m holds a live lease at now (epoch ms): it is in
// progress and its current token's lease has not lapsed.
func (m *Message) Leased(now int64) bool {
	return m.Status == StatusInProgress && now < m.LeaseUntil
}

// Quarantined reports whether m is quarantined at now when a message may be
// started at most maxAttempts times (0: no limit): it is received and not
// finished, holds no live lease, and was started maxAttempts times since it
// was received or released.
func (m *Message) Quarantined(now, maxAttempts int64) bool {
	return maxAttempts > 0 && m.Status != StatusUnknown && m.Status != StatusFinished &&
		!m.Leased(now) && m.Attempts >= maxAttempts
}

// Moment is what the rules judge a message by beside its state: the time
// (epoch ms) and the max_attempts setting in force (0: no limit).
type Moment struct {
	Now         int64
	MaxAttempts int64
}

// Action is what a redelivery of a message should do.
type Action uint8

// The actions of a redelivery decision.
const (
	Start       Action = 1 // never seen: process it from the beginning
	Resume      Action = 2 // seen, not finished: process it from ResumeFrom
	Skip        Action = 3 // finished: do nothing
	Busy        Action = 4 // a worker holds a live lease on it: try again later
	Quarantined Action = 5 // started max_attempts times: an operator must release it
	Forgotten   Action = 6 // sent before the conversation's horizon: the caller chooses
)

var actionNames = [...]string{Start: "start", Resume: "resume", Skip: "skip", Busy: "busy", Quarantined: "quarantined",
	Forgotten: "forgotten"}

// String returns the wire name of a, such as "resume".
func (a Action) String() string {
	if a >= Start && a <= Forgotten {
		return actionNames[a]
	}
	return "invalid"
}

// Rule is the rule a decision follows, as explain names it.
type Rule uint8

// The rules of a redelivery decision.
const (
	RuleNeverSeen   Rule = 1
	RuleFinished    Rule = 2
	RuleLeased      Rule = 3
	RuleQuarantined Rule = 4
	RuleInProgress  Rule = 5
	RuleReceived    Rule = 6
	RuleErrored     Rule = 7
	RuleForgotten   Rule = 8
	RuleCompacted   Rule = 9
)

var ruleNames = [...]string{RuleNeverSeen: "never_seen", RuleFinished: "finished", RuleLeased: "leased",
	RuleQuarantined: "quarantined", RuleInProgress: "in_progress", RuleReceived: "received", RuleErrored: "errored",
	RuleForgotten: "forgotten", RuleCompacted: "compacted"}

// String returns the wire name of r, such as "never_seen".
func (r Rule) String() string {
	if r >= RuleNeverSeen && r <= RuleCompacted {
		return ruleNames[r]
	}
	return "invalid"
}

// Decision is the answer to a delivery of a message.
type Decision struct {
	Action Action
	Rule   Rule
	// With Resume: the highest completed step + 1, or 0.
	ResumeFrom int64
	// With Busy: the lease holder, its token, and how long until the lease
	// lapses (at least 1).
	Worker       string
	Token        int64
	RetryAfterMS int64
	// With Quarantined: the attempts and the latest error ("" if none).
	Attempts int64
	Error    string
	// With Skip: set when the message is a tombstone (SPEC §8).
	Compacted bool
	// With Forgotten, and with Start in a conversation that has one: the
	// conversation's horizon.
	Horizon Horizon
}

// Horizon is a conversation's forgotten_before (SPEC §8): the finished_at
// of the newest tombstone it dropped. A message the conversation does not
// know and that was sent at or before it may have been processed and
// forgotten. The zero Horizon is none: nothing was ever dropped.
type Horizon struct {
	Before int64 // epoch ms, when Set
	Set    bool
}

// Covers reports whether a message sent at sentAt (epoch ms) may have been
// forgotten: h is set and sentAt <= h.Before.
func (h Horizon) Covers(sentAt int64) bool { return h.Set && sentAt <= h.Before }

// Advance returns the horizon after a tombstone finished at finishedAt was
// dropped: the later of the two.
func (h Horizon) Advance(finishedAt int64) Horizon {
	if h.Set && h.Before >= finishedAt {
		return h
	}
	return Horizon{Before: finishedAt, Set: true}
}

// Delivery is what a receive or a decide says of the message it delivers
// beside its id.
type Delivery struct {
	Fingerprint string // "" for none
	// SentAt is when the message was first produced (epoch ms), when
	// HasSentAt is set.
	SentAt    int64
	HasSentAt bool
}

// Redelivery decides a delivery of a message whose known state is m (nil
// if the message was never received) at now (epoch ms), when a message
// may be started at most maxAttempts times (0: no limit): skip when
// finished, busy while leased, quarantined when started too often, resume
// after the highest completed step when seen, start when new. It does not
// check a fingerprint (see Deliver).
func Redelivery(m *Message, now, maxAttempts int64) Decision {
	switch {
	case m == nil || m.Status == StatusUnknown:
		return Decision{Action: Start, Rule: RuleNeverSeen}
	case m.Compacted:
		return Decision{Action: Skip, Rule: RuleCompacted, Compacted: true}
	case m.Status == StatusFinished:
		return Decision{Action: Skip, Rule: RuleFinished}
	case m.Leased(now):
		return Decision{Action: Busy, Rule: RuleLeased, Worker: m.Worker, Token: m.StartedSeq, RetryAfterMS: max(1, m.LeaseUntil-now)}
	case m.Quarantined(now, maxAttempts):
		return Decision{Action: Quarantined, Rule: RuleQuarantined, Attempts: m.Attempts, Error: m.Error}
	}
	d := Decision{Action: Resume, ResumeFrom: m.LastStep + 1}
	switch m.Status {
	case StatusInProgress:
		d.Rule = RuleInProgress
	case StatusErrored:
		d.Rule = RuleErrored
	default:
		d.Rule = RuleReceived
	}
	return d
}

// Deliver decides delivery d of a message whose known state is m (nil if
// the message is unknown), in a conversation whose horizon is h, at mo:
// after checking d's fingerprint against the stored one, a message the
// conversation does not know and that d says was sent at or before the
// horizon is forgotten (SPEC §8); otherwise it is decided as Redelivery
// does, and a start carries the horizon when there is one. Returns a
// *FingerprintMismatchError when both fingerprints are given and differ.
func Deliver(m *Message, d Delivery, h Horizon, mo Moment) (Decision, error) {
	if m != nil && m.Status != StatusUnknown && d.Fingerprint != "" && m.Fingerprint != "" && d.Fingerprint != m.Fingerprint {
		return Decision{}, &FingerprintMismatchError{Stored: m.Fingerprint}
	}
	dec := Redelivery(m, mo.Now, mo.MaxAttempts)
	if dec.Action == Start {
		if d.HasSentAt && h.Covers(d.SentAt) {
			return Decision{Action: Forgotten, Rule: RuleForgotten, Horizon: h}, nil
		}
		dec.Horizon = h
	}
	return dec, nil
}

// Tombstone is what remains of a compacted message (SPEC §8): enough to
// skip its redeliveries, to answer writes to it as for a finished message,
// and to check fingerprints.
type Tombstone struct {
	MessageID   string
	FinishedAt  int64 // the ts of its processing_finished
	Seq         int64 // the seq of its processing_finished
	Attempts    int64
	Fingerprint string // "" if none
}

// Tombstone returns what remains of m, finished, once it is compacted.
func (m *Message) Tombstone() Tombstone {
	return Tombstone{MessageID: m.ID, FinishedAt: m.LastTS, Seq: m.LastSeq, Attempts: m.Attempts, Fingerprint: m.Fingerprint}
}

// Message returns the state of the message t remains of.
func (t Tombstone) Message() *Message {
	return &Message{ID: t.MessageID, Status: StatusFinished, LastStep: NoStep, LastType: ProcessingFinished,
		LastSeq: t.Seq, LastTS: t.FinishedAt, Attempts: t.Attempts, Fingerprint: t.Fingerprint, Compacted: true}
}
