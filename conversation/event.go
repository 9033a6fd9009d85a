package conversation

import "fmt"

// Type is the type of an event.
type Type uint8

// The event types, in the order of a message's lifecycle. The numbers are
// stored in the database: append new types, never renumber.
const (
	MessageReceived    Type = 1
	ProcessingStarted  Type = 2
	StepCompleted      Type = 3
	ProcessingFinished Type = 4
	ErrorOccurred      Type = 5
	LeaseRenewed       Type = 6 // protocol 2
	MessageReleased    Type = 7 // protocol 2
)

// lastType is the highest event type.
const lastType = MessageReleased

var typeNames = [...]string{
	MessageReceived:    "message_received",
	ProcessingStarted:  "processing_started",
	StepCompleted:      "step_completed",
	ProcessingFinished: "processing_finished",
	ErrorOccurred:      "error_occurred",
	LeaseRenewed:       "lease_renewed",
	MessageReleased:    "message_released",
}

// String returns the wire name of t, such as "step_completed".
func (t Type) String() string {
	if t.Valid() {
		return typeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// Valid reports whether t is one of the event types.
func (t Type) Valid() bool { return t >= MessageReceived && t <= lastType }

// ParseType returns the type whose wire name is s.
// Returns false if there is none.
func ParseType(s string) (Type, bool) {
	for t := MessageReceived; t <= lastType; t++ {
		if typeNames[t] == s {
			return t, true
		}
	}
	return 0, false
}

// Event is one stored event of a conversation's log.
//
// Seq is its position in the conversation (from 0, contiguous), Pos its
// position in the whole database (strictly increasing in commit order) and
// TS the commit time in epoch milliseconds. ReceivedAt and Fingerprint
// belong to MessageReceived, Worker and LeaseMS to ProcessingStarted,
// StepIndex and Output to StepCompleted, Error to ErrorOccurred, Token and
// LeaseMS to LeaseRenewed, Reason to MessageReleased; the other types leave
// them zero. Fingerprint, Worker, Reason and a start's LeaseMS are optional
// ("" or 0 when not given).
type Event struct {
	Conversation string
	Seq          int64
	Pos          int64
	TS           int64
	Type         Type
	MessageID    string
	ReceivedAt   int64
	Fingerprint  string
	Worker       string
	LeaseMS      int64
	StepIndex    uint32
	Output       []byte
	Error        string
	Token        int64
	Reason       string
}
