package conversation

import "fmt"

// Counts is the number of a conversation's messages in each status.
type Counts struct {
	Received   int64
	InProgress int64
	Errored    int64
	Finished   int64
}

// Total returns the number of messages counted.
func (c Counts) Total() int64 { return c.Received + c.InProgress + c.Errored + c.Finished }

// Move counts a message whose status changed from one status to another;
// StatusUnknown is counted nowhere.
func (c *Counts) Move(from, to Status) {
	if from == to {
		return
	}
	if p := c.at(from); p != nil {
		*p--
	}
	if p := c.at(to); p != nil {
		*p++
	}
}

func (c *Counts) at(s Status) *int64 {
	switch s {
	case StatusReceived:
		return &c.Received
	case StatusInProgress:
		return &c.InProgress
	case StatusErrored:
		return &c.Errored
	case StatusFinished:
		return &c.Finished
	}
	return nil
}

// Summary is a conversation's name, next seq and messages counted by
// status (a tombstone counts as finished), with what retention left of it
// (SPEC §8): the messages it compacted and its horizon.
type Summary struct {
	Name      string
	Next      int64
	Counts    Counts
	Compacted int64
	Horizon   Horizon
}

// StepKey names a completed step of a conversation.
type StepKey struct {
	MessageID string
	Index     uint32
}

// State is the state of one conversation: the replay of its events.
type State struct {
	Name     string
	Next     int64
	Messages map[string]*Message
	Steps    map[StepKey]StepRecord
	Counts   Counts
	// Gaps is set for a conversation that compacted messages (SPEC §8):
	// its log may skip the seqs of their events.
	Gaps bool
	// Horizon is its forgotten_before.
	Horizon Horizon
}

// NewState returns the state of the empty conversation name.
func NewState(name string) *State {
	return &State{Name: name, Messages: make(map[string]*Message), Steps: make(map[StepKey]StepRecord)}
}

// Known returns what the write rules need to evaluate c against s.
func (s *State) Known(c *Command) Known {
	k := Known{Next: s.Next, Message: s.Messages[c.MessageID], Horizon: s.Horizon}
	if c.Op == OpStep {
		if r, ok := s.Steps[StepKey{c.MessageID, c.StepIndex}]; ok {
			k.Step = &r
		}
	}
	return k
}

// Apply appends e to s. It checks that e is the next event of the
// conversation and that the write rules would append it: an event the rules
// would reject or call a duplicate is an error, and s is left unchanged.
func (s *State) Apply(e *Event) error {
	if e.Conversation != s.Name {
		return fmt.Errorf("event of conversation %q applied to %q", e.Conversation, s.Name)
	}
	if e.Seq != s.Next && !(s.Gaps && e.Seq > s.Next) {
		return fmt.Errorf("event seq %d, want %d", e.Seq, s.Next)
	}
	if !e.Type.Valid() {
		return fmt.Errorf("seq %d: %v is not an event type", e.Seq, e.Type)
	}
	c := CommandOf(e)
	k := s.Known(&c)
	k.Next = e.Seq // past a gap
	k.Replaying(&c, e.TS)
	o, err := Evaluate(&c, k)
	if err != nil {
		return fmt.Errorf("seq %d: %v of %q: %w", e.Seq, e.Type, e.MessageID, err)
	}
	if !o.Append {
		return fmt.Errorf("seq %d: %v of %q appends nothing (duplicate of seq %d)", e.Seq, e.Type, e.MessageID, o.Seq)
	}
	s.apply(e)
	return nil
}

// apply advances s by e without checking the rules.
func (s *State) apply(e *Event) {
	m := s.Messages[e.MessageID]
	if m == nil {
		m = &Message{}
		s.Messages[e.MessageID] = m
	}
	from := m.Status
	m.Apply(e)
	s.Counts.Move(from, m.Status)
	if e.Type == StepCompleted {
		s.Steps[StepKey{e.MessageID, e.StepIndex}] = StepRecord{Index: e.StepIndex, Seq: e.Seq, Output: e.Output}
	}
	s.Next = e.Seq + 1
}

// Restore adds tombstone t to s (SPEC §8), in seq order with the events
// that remain: t's message must be unknown to s, and t's seq must not be
// below s's next seq. Leaves s unchanged on an error.
func (s *State) Restore(t Tombstone) error {
	if m := s.Messages[t.MessageID]; m != nil && m.Status != StatusUnknown {
		return fmt.Errorf("tombstone of %q at seq %d: the message is %v at seq %d", t.MessageID, t.Seq, m.Status, m.LastSeq)
	}
	if t.Seq < s.Next {
		return fmt.Errorf("tombstone of %q at seq %d, below the next seq %d", t.MessageID, t.Seq, s.Next)
	}
	s.Messages[t.MessageID] = t.Message()
	s.Counts.Move(StatusUnknown, StatusFinished)
	s.Next = t.Seq + 1
	return nil
}

// Replay returns the state of conversation name whose log is events, in seq
// order from 0. Returns an error naming the first event that State.Apply
// refuses.
func Replay(name string, events []Event) (*State, error) {
	s := NewState(name)
	for i := range events {
		if err := s.Apply(&events[i]); err != nil {
			return nil, err
		}
	}
	return s, nil
}
