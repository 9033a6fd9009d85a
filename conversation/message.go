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
	StartedSeq  int64  // seq of its latest processing_started (0 if never started)
	LastStep    int64  // highest completed step index, or NoStep
	Error       string // text of its latest error_occurred, "" if none
	LastType    Type   // type of its latest event
	LastSeq     int64  // seq of its latest event
}

// Apply advances m by e, an event of m. It does not check the write rules;
// Evaluate does that before an event is made.
func (m *Message) Apply(e *Event) {
	switch e.Type {
	case MessageReceived:
		*m = Message{ID: e.MessageID, Status: StatusReceived, ReceivedAt: e.ReceivedAt, ReceivedSeq: e.Seq, LastStep: NoStep}
	case ProcessingStarted:
		m.Status, m.StartedSeq = StatusInProgress, e.Seq
	case StepCompleted:
		if int64(e.StepIndex) > m.LastStep {
			m.LastStep = int64(e.StepIndex)
		}
	case ProcessingFinished:
		m.Status = StatusFinished
	case ErrorOccurred:
		m.Status, m.Error = StatusErrored, e.Error
	}
	m.LastType, m.LastSeq = e.Type, e.Seq
}

// Action is what a redelivery of a message should do.
type Action uint8

// The actions of a redelivery decision.
const (
	Start  Action = 1 // never seen: process it from the beginning
	Resume Action = 2 // seen, not finished: process it from ResumeFrom
	Skip   Action = 3 // finished: do nothing
)

var actionNames = [...]string{Start: "start", Resume: "resume", Skip: "skip"}

// String returns the wire name of a, such as "resume".
func (a Action) String() string {
	if a >= Start && a <= Skip {
		return actionNames[a]
	}
	return "invalid"
}

// Decision is the answer to a delivery of a message.
type Decision struct {
	Action     Action
	ResumeFrom int64 // with Resume: the highest completed step + 1, or 0
}

// Redelivery decides a delivery of a message whose known state is m (nil if
// the message was never received): skip when finished, resume after the
// highest completed step when seen, start when new.
func Redelivery(m *Message) Decision {
	switch {
	case m == nil || m.Status == StatusUnknown:
		return Decision{Action: Start}
	case m.Status == StatusFinished:
		return Decision{Action: Skip}
	default:
		return Decision{Action: Resume, ResumeFrom: m.LastStep + 1}
	}
}
