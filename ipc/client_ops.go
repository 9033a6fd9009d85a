package ipc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"liminald/conversation"
)

// Option is an optional argument of a request. Each method says which it
// takes; it ignores the others.
type Option func(*options)

type options struct {
	expectedSeq, receivedAt, fromSeq, fromPos             int64
	hasExpectedSeq, hasReceivedAt, hasFromSeq, hasFromPos bool
}

// ExpectedSeq makes a write conditional: it must append at seq (SPEC §2).
func ExpectedSeq(seq int64) Option {
	return func(o *options) { o.expectedSeq, o.hasExpectedSeq = seq, true }
}

// ReceivedAt gives a receive's received_at, in epoch milliseconds.
func ReceivedAt(ms int64) Option {
	return func(o *options) { o.receivedAt, o.hasReceivedAt = ms, true }
}

// FromSeq makes a subscription to one conversation catch up from seq.
func FromSeq(seq int64) Option {
	return func(o *options) { o.fromSeq, o.hasFromSeq = seq, true }
}

// FromPos makes a subscription catch up from position pos.
func FromPos(pos int64) Option {
	return func(o *options) { o.fromPos, o.hasFromPos = pos, true }
}

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// Decision is the answer to a receive or a decide.
type Decision struct {
	conversation.Decision
	// Seq is, for a receive that decided Start, the seq of its
	// message_received.
	Seq int64
	// Duplicate is set when a receive with ExpectedSeq was a retry of one
	// that already landed.
	Duplicate bool
}

// Ack is the answer to a start, step, finish or fail: the seq of the event
// appended, or of the original event when Duplicate is set.
type Ack struct {
	Seq       int64
	Duplicate bool
}

// ConversationState is the state of a conversation: its next seq and its
// messages counted by status.
type ConversationState struct {
	Next   int64
	Counts conversation.Counts
}

// MessageState is the state of one message.
type MessageState struct {
	Status     conversation.Status
	ReceivedAt int64 // epoch ms; 0 when unknown
	LastStep   int64 // the highest completed step index, or conversation.NoStep
	Steps      []conversation.StepRecord
	Error      string // the last error; "" when none
}

// ConversationSummary is an entry of Conversations.
type ConversationSummary struct {
	Name     string
	Next     int64
	Messages int64
}

// ServerInfo is the answer to hello.
type ServerInfo struct {
	Protocol int
	Name     string
	Version  string
	Ops      []string
	Limits   Limits
}

// Limits are the limits a server reports in hello.
type Limits struct {
	MaxLineBytes          int `json:"max_line_bytes"`
	MaxInflight           int `json:"max_inflight"`
	MaxNameBytes          int `json:"max_name_bytes"`
	MaxErrorBytes         int `json:"max_error_bytes"`
	ReadLimitMax          int `json:"read_limit_max"`
	ConversationsLimitMax int `json:"conversations_limit_max"`
}

// Stats are the figures of a server and its store, as the stats op
// reports them.
type Stats struct {
	Conversations int64       `json:"conversations"`
	Messages      int64       `json:"messages"`
	Events        int64       `json:"events"`
	DBBytes       int64       `json:"db_bytes"`
	UptimeSeconds int64       `json:"uptime_s"`
	Connections   int64       `json:"connections"`
	Subscribers   int64       `json:"subscribers"`
	Commits       CommitStats `json:"commits"`
}

// CommitStats are the store's group-commit figures since it opened: the
// transactions committed and failed, the write requests they answered, the
// events appended, the most and the mean requests per transaction, and the
// mean and the longest time a transaction took, in milliseconds.
type CommitStats struct {
	Count       int64   `json:"count"`
	Failed      int64   `json:"failed"`
	Requests    int64   `json:"requests"`
	Appended    int64   `json:"appended"`
	MaxBatch    int64   `json:"max_batch"`
	AvgBatch    float64 `json:"avg_batch"`
	CommitMsAvg float64 `json:"commit_ms_avg"`
	CommitMsMax float64 `json:"commit_ms_max"`
}

// Uptime returns how long the server has been up.
func (s *Stats) Uptime() time.Duration { return time.Duration(s.UptimeSeconds) * time.Second }

// appendRequest starts request id of op.
func appendRequest(dst []byte, id int64, op string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendInt(dst, id, 10)
	return appendString(dst, "op", op)
}

// appendMessage starts request id of op on message msg of conversation conv.
func appendMessage(dst []byte, id int64, op, conv, msg string) []byte {
	dst = appendString(appendRequest(dst, id, op), "conversation", conv)
	return appendString(dst, "message_id", msg)
}

func appendExpectedSeq(dst []byte, o *options) []byte {
	if o.hasExpectedSeq {
		dst = appendInt(dst, "expected_seq", o.expectedSeq)
	}
	return dst
}

// do sends the request build appends and decodes the result into v (nil:
// none). A failure reply is returned as an *Error.
func (c *Client) do(ctx context.Context, v any, build func(dst []byte, id int64) []byte) error {
	reply, err := c.roundTrip(ctx, build)
	if err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(reply, v); err != nil {
		return fmt.Errorf("decode reply: %w", err)
	}
	return nil
}

// Hello returns the server's protocol version, name, version, ops and
// limits; client names the caller in the server's debug log.
func (c *Client) Hello(ctx context.Context, client string) (ServerInfo, error) {
	var r struct {
		Protocol int `json:"protocol"`
		Server   struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
		Ops    []string `json:"ops"`
		Limits Limits   `json:"limits"`
	}
	err := c.do(ctx, &r, func(dst []byte, id int64) []byte {
		dst = appendRequest(dst, id, "hello")
		if client != "" {
			dst = appendString(dst, "client", client)
		}
		return appendEnd(dst)
	})
	return ServerInfo{Protocol: r.Protocol, Name: r.Server.Name, Version: r.Server.Version, Ops: r.Ops, Limits: r.Limits}, err
}

// Ping checks that the server answers.
func (c *Client) Ping(ctx context.Context) error {
	return c.do(ctx, nil, func(dst []byte, id int64) []byte { return appendEnd(appendRequest(dst, id, "ping")) })
}

type decisionReply struct {
	Decision   string `json:"decision"`
	ResumeFrom int64  `json:"resume_from"`
	Seq        int64  `json:"seq"`
	Duplicate  bool   `json:"duplicate"`
}

func (r *decisionReply) decision() (Decision, error) {
	d := Decision{Decision: conversation.Decision{ResumeFrom: r.ResumeFrom}, Seq: r.Seq, Duplicate: r.Duplicate}
	for a := conversation.Start; a <= conversation.Skip; a++ {
		if a.String() == r.Decision {
			d.Action = a
			return d, nil
		}
	}
	return d, fmt.Errorf("decode reply: unknown decision %q", r.Decision)
}

// Receive records a delivery of message msg of conversation conv and
// returns the redelivery decision; a Start appends its message_received.
// It takes ExpectedSeq and ReceivedAt.
//
// Returns an *Error: bad_request, sequence_conflict, unavailable,
// shutting_down.
func (c *Client) Receive(ctx context.Context, conv, msg string, opts ...Option) (Decision, error) {
	o := collect(opts)
	var r decisionReply
	if err := c.do(ctx, &r, func(dst []byte, id int64) []byte {
		dst = appendMessage(dst, id, "receive", conv, msg)
		if o.hasReceivedAt {
			dst = appendInt(dst, "received_at", o.receivedAt)
		}
		return appendEnd(appendExpectedSeq(dst, &o))
	}); err != nil {
		return Decision{}, err
	}
	return r.decision()
}

// Decide returns the redelivery decision for message msg of conversation
// conv without appending anything.
func (c *Client) Decide(ctx context.Context, conv, msg string) (Decision, error) {
	var r decisionReply
	if err := c.do(ctx, &r, func(dst []byte, id int64) []byte {
		return appendEnd(appendMessage(dst, id, "decide", conv, msg))
	}); err != nil {
		return Decision{}, err
	}
	return r.decision()
}

// write sends a start, step, finish or fail.
func (c *Client) write(ctx context.Context, build func(dst []byte, id int64) []byte) (Ack, error) {
	var a struct {
		Seq       int64 `json:"seq"`
		Duplicate bool  `json:"duplicate"`
	}
	err := c.do(ctx, &a, build)
	return Ack{Seq: a.Seq, Duplicate: a.Duplicate}, err
}

// Start records that processing of message msg started. It takes
// ExpectedSeq.
//
// Returns an *Error: unknown_message, already_finished, sequence_conflict,
// bad_request, unavailable, shutting_down.
func (c *Client) Start(ctx context.Context, conv, msg string, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, func(dst []byte, id int64) []byte {
		return appendEnd(appendExpectedSeq(appendMessage(dst, id, "start", conv, msg), &o))
	})
}

// Step records step index of message msg with its output. It takes
// ExpectedSeq.
//
// Returns an *Error: step_conflict when the step completed with other
// output, and those of Start.
func (c *Client) Step(ctx context.Context, conv, msg string, index uint32, output []byte, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, func(dst []byte, id int64) []byte {
		dst = appendMessage(dst, id, "step", conv, msg)
		dst = appendInt(dst, "step_index", int64(index))
		dst = append(dst, `,"output":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, output)
		dst = append(dst, '"')
		return appendEnd(appendExpectedSeq(dst, &o))
	})
}

// Finish records that message msg is fully processed. It takes
// ExpectedSeq. Returns the errors of Start but already_finished.
func (c *Client) Finish(ctx context.Context, conv, msg string, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, func(dst []byte, id int64) []byte {
		return appendEnd(appendExpectedSeq(appendMessage(dst, id, "finish", conv, msg), &o))
	})
}

// Fail records that processing message msg failed with errText. It takes
// ExpectedSeq. Returns the errors of Start.
func (c *Client) Fail(ctx context.Context, conv, msg, errText string, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, func(dst []byte, id int64) []byte {
		dst = appendString(appendMessage(dst, id, "fail", conv, msg), "error", errText)
		return appendEnd(appendExpectedSeq(dst, &o))
	})
}

// State returns the state of conversation conv; a conversation without
// events has next seq 0 and no messages.
func (c *Client) State(ctx context.Context, conv string) (ConversationState, error) {
	var r struct {
		Next     int64 `json:"next_seq"`
		Messages struct {
			Received   int64 `json:"received"`
			InProgress int64 `json:"in_progress"`
			Errored    int64 `json:"errored"`
			Finished   int64 `json:"finished"`
		} `json:"messages"`
	}
	err := c.do(ctx, &r, func(dst []byte, id int64) []byte {
		return appendEnd(appendString(appendRequest(dst, id, "state"), "conversation", conv))
	})
	m := r.Messages
	return ConversationState{Next: r.Next, Counts: conversation.Counts{
		Received: m.Received, InProgress: m.InProgress, Errored: m.Errored, Finished: m.Finished}}, err
}

// MessageState returns the state of message msg of conversation conv: its
// status is conversation.StatusUnknown if it was never received.
func (c *Client) MessageState(ctx context.Context, conv, msg string) (MessageState, error) {
	var r struct {
		Status     string  `json:"status"`
		ReceivedAt *int64  `json:"received_at"`
		LastStep   *int64  `json:"last_completed_step"`
		Error      *string `json:"error"`
		Steps      []struct {
			Index  uint32 `json:"step_index"`
			Seq    int64  `json:"seq"`
			Output []byte `json:"output"`
		} `json:"steps"`
	}
	if err := c.do(ctx, &r, func(dst []byte, id int64) []byte {
		return appendEnd(appendMessage(dst, id, "state", conv, msg))
	}); err != nil {
		return MessageState{}, err
	}
	m := MessageState{LastStep: conversation.NoStep}
	for st := conversation.StatusUnknown; st <= conversation.StatusFinished; st++ {
		if st.String() == r.Status {
			m.Status = st
		}
	}
	if r.ReceivedAt != nil {
		m.ReceivedAt = *r.ReceivedAt
	}
	if r.LastStep != nil {
		m.LastStep = *r.LastStep
	}
	if r.Error != nil {
		m.Error = *r.Error
	}
	for _, s := range r.Steps {
		if s.Output == nil {
			s.Output = []byte{}
		}
		m.Steps = append(m.Steps, conversation.StepRecord{Index: s.Index, Seq: s.Seq, Output: s.Output})
	}
	return m, nil
}

// Read returns up to limit events of conversation conv from seq fromSeq on
// (limit 0: the server's default), and the seq to read on from.
func (c *Client) Read(ctx context.Context, conv string, fromSeq int64, limit int) ([]conversation.Event, int64, error) {
	var r struct {
		Events []conversation.Event `json:"events"`
		Next   int64                `json:"next_seq"`
	}
	err := c.do(ctx, &r, func(dst []byte, id int64) []byte {
		dst = appendString(appendRequest(dst, id, "read"), "conversation", conv)
		dst = appendInt(dst, "from_seq", fromSeq)
		if limit > 0 {
			dst = appendInt(dst, "limit", int64(limit))
		}
		return appendEnd(dst)
	})
	return r.Events, r.Next, err
}

// Subscribe opens a subscription to the events of conversation conv, or of
// every conversation when conv is "". It takes FromSeq (with a
// conversation) or FromPos, to catch up from there first; without either
// it delivers the events committed from now on.
func (c *Client) Subscribe(ctx context.Context, conv string, opts ...Option) (*Stream, error) {
	o := collect(opts)
	s := &Stream{c: c, conv: conv, events: make(chan conversation.Event, c.streamBuffer), ended: make(chan struct{})}
	cl, err := c.send(func(dst []byte, id int64) []byte {
		dst = appendRequest(dst, id, "subscribe")
		if conv != "" {
			dst = appendString(dst, "conversation", conv)
		}
		if o.hasFromSeq {
			dst = appendInt(dst, "from_seq", o.fromSeq)
		}
		if o.hasFromPos {
			dst = appendInt(dst, "from_pos", o.fromPos)
		}
		return appendEnd(dst)
	}, func(reply []byte) {
		var r struct {
			Sub int64 `json:"sub"`
		}
		json.Unmarshal(reply, &r)
		s.id = r.Sub
		c.mu.Lock()
		c.subs[s.id] = s
		c.mu.Unlock()
	}, false)
	if err != nil {
		return nil, err
	}
	if _, err := c.wait(ctx, cl); err != nil {
		return nil, err
	}
	return s, nil
}

// Unsubscribe ends subscription sub; its Stream returns ErrUnsubscribed
// after the events it holds.
func (c *Client) Unsubscribe(ctx context.Context, sub int64) error {
	cl, err := c.send(func(dst []byte, id int64) []byte {
		return appendEnd(appendInt(appendRequest(dst, id, "unsubscribe"), "sub", sub))
	}, func([]byte) { c.endSub(sub, ErrUnsubscribed) }, false)
	if err != nil {
		return err
	}
	_, err = c.wait(ctx, cl)
	return err
}

// Conversations returns up to limit conversations (0: the server's
// default) whose names sort after after, by name.
func (c *Client) Conversations(ctx context.Context, after string, limit int) ([]ConversationSummary, error) {
	var r struct {
		Conversations []struct {
			Name     string `json:"conversation"`
			Next     int64  `json:"next_seq"`
			Messages int64  `json:"messages"`
		} `json:"conversations"`
	}
	err := c.do(ctx, &r, func(dst []byte, id int64) []byte {
		dst = appendRequest(dst, id, "conversations")
		if after != "" {
			dst = appendString(dst, "after", after)
		}
		if limit > 0 {
			dst = appendInt(dst, "limit", int64(limit))
		}
		return appendEnd(dst)
	})
	out := make([]ConversationSummary, len(r.Conversations))
	for i, s := range r.Conversations {
		out[i] = ConversationSummary(s)
	}
	return out, err
}

// Stats returns the figures of the server and its store.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := c.do(ctx, &st, func(dst []byte, id int64) []byte { return appendEnd(appendRequest(dst, id, "stats")) })
	return st, err
}
