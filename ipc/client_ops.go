package ipc

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"liminald/conversation"
)

// Option is an optional argument of a request. Each method says which it
// takes; it ignores the others.
type Option func(*options)

type options struct {
	expectedSeq, receivedAt, fromSeq, fromPos, token                int64
	hasExpectedSeq, hasReceivedAt, hasFromSeq, hasFromPos, hasToken bool

	worker, fingerprint string // "" when not given
	leaseMS             int64  // with hasLease
	hasLease, withSteps bool
	sentAt              int64 // with hasSentAt
	hasSentAt           bool
}

// ExpectedSeq makes a write conditional: it must append at seq (SPEC §2).
// The server answers the same write sent again, once it landed, as a
// duplicate, so a client made by Dial sends it again when its connection
// is lost before the reply (see Client).
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

// Worker names the worker of a start: a busy decision or error names the
// holder of a lease by it (SPEC §7).
func Worker(name string) Option {
	return func(o *options) { o.worker = name }
}

// Lease makes a start take a lease of d on the message, rounded up to the
// millisecond (1 ms to 24 h): until it lapses, a delivery to anyone else
// is answered busy. A start with a lease of a message whose lease lapsed
// takes it over, and its token fences the old holder.
func Lease(d time.Duration) Option {
	return func(o *options) { o.leaseMS, o.hasLease = leaseMillis(d), true }
}

// Token fences a step, finish or fail: it fails with fenced unless token,
// the Token of the Ack of a start, is still the message's current one. A
// step, finish or fail with a token is sent again when the connection is
// lost before its reply, as with ExpectedSeq (see Client).
func Token(token int64) Option {
	return func(o *options) { o.token, o.hasToken = token, true }
}

// Fingerprint names the payload of a receive, decide or explain (such as
// its sha256): the first receive stores it, and a later one with another
// fingerprint fails with fingerprint_mismatch.
func Fingerprint(fp string) Option {
	return func(o *options) { o.fingerprint = fp }
}

// SentAt tells a receive, decide or explain when the message was first
// produced, in epoch milliseconds (such as its broker's timestamp): a
// message the conversation does not know that was sent at or before its
// horizon is decided Forgotten, not Start (SPEC §8).
func SentAt(ms int64) Option {
	return func(o *options) { o.sentAt, o.hasSentAt = ms, true }
}

// WithSteps makes a receive, decide or explain that resumes answer the
// completed steps too, in Decision.Steps.
func WithSteps() Option {
	return func(o *options) { o.withSteps = true }
}

func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// protocol2Fields are the arguments of protocol 2 (SPEC §7, §8) that ops
// of protocol 1 take beside their own. A protocol-1 server ignores them.
// options.feature lists them in this order.
var protocol2Fields = [...]string{"worker", "lease_ms", "token", "fingerprint", "with_steps", "sent_at"}

// feature returns what a request of op o with these options uses of
// protocol 2, as a ProtocolError names it; "" for nothing.
func (o *options) feature(op op) string {
	given := [...]bool{o.worker != "", o.hasLease, o.hasToken, o.fingerprint != "", o.withSteps, o.hasSentAt}
	var uses []string
	for i, f := range protocol2Fields {
		if given[i] {
			uses = append(uses, f)
		}
	}
	return featureOf(op, uses)
}

// featureOf names op with the protocol-2 arguments uses; "" when there
// are none.
func featureOf(op op, uses []string) string {
	if len(uses) == 0 {
		return ""
	}
	return op.String() + " with " + strings.Join(uses, ", ")
}

// request returns the call of op o with these options, built by build:
// safe to send again as retrySafe says, checked for the protocol-2
// arguments it carries.
func (o *options) request(op op, build func(dst []byte, id int64) []byte) *rpc {
	return &rpc{op: op, build: build, safe: retrySafe(op, o.hasExpectedSeq, o.hasToken), feature: o.feature(op)}
}

// read returns the call of read op o, built by build: safe to send again.
func read(o op, build func(dst []byte, id int64) []byte) *rpc {
	return &rpc{op: o, build: build, safe: true}
}

// leaseMillis returns d in milliseconds, rounded up; a d of zero or less
// stays as it is, for the server to refuse.
func leaseMillis(d time.Duration) int64 {
	if d <= 0 {
		return d.Milliseconds()
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// Decision is the answer to a receive or a decide. Its embedded
// conversation.Decision carries what each action needs: ResumeFrom with
// Resume; Worker, Token and RetryAfterMS with Busy; Attempts and Error
// with Quarantined; Compacted with Skip; the conversation's Horizon with
// Forgotten, and with Start when it has one.
type Decision struct {
	conversation.Decision
	// Seq is, for a receive that decided Start, the seq of its
	// message_received.
	Seq int64
	// Duplicate is set when a receive with ExpectedSeq was a retry of one
	// that already landed.
	Duplicate bool
	// Steps are, for a Resume asked WithSteps, the completed steps by
	// index (their Seq unset).
	Steps []conversation.StepRecord
}

// Ack is the answer to a write: the seq of the event appended, or of the
// original event when Duplicate is set. A start also answers its Token,
// the fencing token to give later writes; a start with a Lease and a
// renew answer when the lease lapses, LeaseExpiresAt (epoch ms by the
// server's clock; 0 when the message holds no live lease).
type Ack struct {
	Seq            int64
	Duplicate      bool
	Token          int64
	LeaseExpiresAt int64
}

// ConversationState is the state of a conversation: its next seq, its
// messages counted by status (tombstones as finished), the messages it
// compacted and its horizon (SPEC §8).
type ConversationState struct {
	Next      int64
	Counts    conversation.Counts
	Compacted int64
	Horizon   conversation.Horizon
}

// MessageState is the state of one message.
type MessageState struct {
	Status     conversation.Status
	ReceivedAt int64 // epoch ms; 0 when unknown
	LastStep   int64 // the highest completed step index, or conversation.NoStep
	Steps      []conversation.StepRecord
	Error      string // the last error; "" when none

	Attempts       int64  // starts since it was received or released
	Token          int64  // its current fencing token; 0 if never started
	Worker         string // the worker of its latest start; "" if none
	LeaseExpiresAt int64  // epoch ms; 0 when it holds no live lease
	Quarantined    bool
	Fingerprint    string // "" if it was received without one
	// Compacted is set for a tombstone (SPEC §8): finished, its events
	// gone, with no steps and no ReceivedAt.
	Compacted bool
}

// MessageSummary is an entry of Messages.
type MessageSummary struct {
	ID         string
	Status     conversation.Status // as stored: leased and quarantined are not statuses
	Attempts   int64
	LastStep   int64 // the highest completed step index, or conversation.NoStep
	ReceivedAt int64 // epoch ms; 0 for a tombstone, which does not keep it
	UpdatedAt  int64 // epoch ms: the ts of its latest event

	Worker         string // the worker of its latest start; "" if none
	LeaseExpiresAt int64  // epoch ms; 0 when it holds no live lease
	Quarantined    bool
	Compacted      bool
}

// Explanation is the answer to explain: the decision decide would answer,
// with the rule it follows (Decision.Rule), one sentence saying why, and
// the events of the message (at most ExplainEventsMax).
type Explanation struct {
	Decision
	Reason string
	Events []conversation.Event
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
	MessagesLimitMax      int `json:"messages_limit_max"`
	MaxLeaseMS            int `json:"max_lease_ms"`
	MaxOutputBytes        int `json:"max_output_bytes"`
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

	// Retention (SPEC §8): messages ever compacted, tombstones kept,
	// tombstones ever dropped, the newest horizon of any conversation
	// (epoch ms; nil when none), and compaction's passes since the store
	// opened.
	Compacted         int64           `json:"compacted"`
	Tombstones        int64           `json:"tombstones"`
	TombstonesDropped int64           `json:"tombstones_dropped"`
	ForgottenBefore   *int64          `json:"forgotten_before"`
	Compaction        CompactionStats `json:"compaction"`
}

// CompactionStats are compaction's figures since the store opened: its
// passes, those an error ended, and the time they took in all and the
// longest, in milliseconds.
type CompactionStats struct {
	Passes  int64   `json:"passes"`
	Failed  int64   `json:"failed"`
	MsTotal float64 `json:"ms_total"`
	MsMax   float64 `json:"ms_max"`
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

// do sends r and decodes the result into v (nil: none). A failure reply is
// returned as an *Error.
func (c *Client) do(ctx context.Context, v any, r *rpc) error {
	reply, err := c.roundTrip(ctx, r)
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
// limits; client names the caller in the server's debug log. The answer is
// kept for the connection: the checks of protocol 2 and of a step's
// output size use it.
func (c *Client) Hello(ctx context.Context, client string) (ServerInfo, error) {
	reply, err := c.roundTrip(ctx, helloRPC(client))
	if err != nil {
		return ServerInfo{}, err
	}
	return parseHello(reply)
}

// helloRPC is a hello, whose answer its connection keeps.
func helloRPC(client string) *rpc {
	r := read(opHello, func(dst []byte, id int64) []byte {
		dst = appendRequest(dst, id, "hello")
		if client != "" {
			dst = appendString(dst, "client", client)
		}
		return appendEnd(dst)
	})
	r.onOK = func(cc *clientConn, reply []byte) {
		if info, err := parseHello(reply); err == nil {
			cc.mu.Lock()
			cc.info = &info
			cc.mu.Unlock()
		}
	}
	return r
}

// parseHello decodes the reply to hello.
func parseHello(reply []byte) (ServerInfo, error) {
	var r struct {
		Protocol int `json:"protocol"`
		Server   struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
		Ops    []string `json:"ops"`
		Limits Limits   `json:"limits"`
	}
	if err := json.Unmarshal(reply, &r); err != nil {
		return ServerInfo{}, fmt.Errorf("decode reply: %w", err)
	}
	return ServerInfo{Protocol: r.Protocol, Name: r.Server.Name, Version: r.Server.Version, Ops: r.Ops, Limits: r.Limits}, nil
}

// Ping checks that the server answers.
func (c *Client) Ping(ctx context.Context) error {
	return c.do(ctx, nil, read(opPing, func(dst []byte, id int64) []byte { return appendEnd(appendRequest(dst, id, "ping")) }))
}

// lookupName returns the value of T, an enumeration of package
// conversation, whose wire name is name.
func lookupName[T interface {
	~uint8
	String() string
}](name string) (T, bool) {
	for v := T(1); v != 0; v++ {
		if v.String() == name {
			return v, true
		}
	}
	return 0, false
}

// stepReply is a completed step in a reply: with its seq in state,
// without in a decision.
type stepReply struct {
	Index  uint32 `json:"step_index"`
	Seq    int64  `json:"seq"`
	Output []byte `json:"output"`
}

func stepRecords(steps []stepReply) []conversation.StepRecord {
	var out []conversation.StepRecord
	for _, s := range steps {
		if s.Output == nil {
			s.Output = []byte{}
		}
		out = append(out, conversation.StepRecord{Index: s.Index, Seq: s.Seq, Output: s.Output})
	}
	return out
}

type decisionReply struct {
	Decision     string      `json:"decision"`
	ResumeFrom   int64       `json:"resume_from"`
	Seq          int64       `json:"seq"`
	Duplicate    bool        `json:"duplicate"`
	Worker       string      `json:"worker"`
	Token        int64       `json:"token"`
	RetryAfterMS int64       `json:"retry_after_ms"`
	Attempts     int64       `json:"attempts"`
	Error        string      `json:"error"`
	Steps        []stepReply `json:"steps"`
	Compacted    bool        `json:"compacted"`
	Horizon      *int64      `json:"forgotten_before"`
}

// horizon returns a forgotten_before, not set for null.
func horizon(before *int64) conversation.Horizon {
	if before == nil {
		return conversation.Horizon{}
	}
	return conversation.Horizon{Before: *before, Set: true}
}

func (r *decisionReply) decision() (Decision, error) {
	d := Decision{Decision: conversation.Decision{
		ResumeFrom: r.ResumeFrom, Worker: r.Worker, Token: r.Token, RetryAfterMS: r.RetryAfterMS,
		Attempts: r.Attempts, Error: r.Error, Compacted: r.Compacted, Horizon: horizon(r.Horizon),
	}, Seq: r.Seq, Duplicate: r.Duplicate, Steps: stepRecords(r.Steps)}
	var ok bool
	if d.Action, ok = lookupName[conversation.Action](r.Decision); !ok {
		return d, fmt.Errorf("decode reply: unknown decision %q", r.Decision)
	}
	return d, nil
}

// appendDeliveryOptions appends the optional arguments of a receive,
// decide or explain: Fingerprint, SentAt and WithSteps.
func appendDeliveryOptions(dst []byte, o *options) []byte {
	if o.fingerprint != "" {
		dst = appendString(dst, "fingerprint", o.fingerprint)
	}
	if o.hasSentAt {
		dst = appendInt(dst, "sent_at", o.sentAt)
	}
	if o.withSteps {
		dst = append(dst, `,"with_steps":true`...)
	}
	return dst
}

// decide sends a receive or a decide and returns its decision.
func (c *Client) decide(ctx context.Context, req *rpc) (Decision, error) {
	var r decisionReply
	if err := c.do(ctx, &r, req); err != nil {
		return Decision{}, err
	}
	return r.decision()
}

// Receive records a delivery of message msg of conversation conv and
// returns the redelivery decision; a Start appends its message_received.
// It takes ExpectedSeq, ReceivedAt, Fingerprint, SentAt and WithSteps.
//
// A message another worker holds a live lease on is decided Busy, one
// started max_attempts times Quarantined, a compacted one Skip with
// Compacted, and one the conversation forgot (SentAt at or before its
// horizon) Forgotten; none of them appends anything.
//
// Returns an *Error: fingerprint_mismatch (a
// *conversation.FingerprintMismatchError) when the message was received
// with another fingerprint, bad_request, sequence_conflict, unavailable,
// shutting_down.
func (c *Client) Receive(ctx context.Context, conv, msg string, opts ...Option) (Decision, error) {
	o := collect(opts)
	return c.decide(ctx, o.request(opReceive, func(dst []byte, id int64) []byte {
		dst = appendMessage(dst, id, "receive", conv, msg)
		if o.hasReceivedAt {
			dst = appendInt(dst, "received_at", o.receivedAt)
		}
		return appendEnd(appendExpectedSeq(appendDeliveryOptions(dst, &o), &o))
	}))
}

// Decide returns the redelivery decision for message msg of conversation
// conv without appending anything. It takes Fingerprint, SentAt and
// WithSteps.
// Returns the errors of Receive but sequence_conflict.
func (c *Client) Decide(ctx context.Context, conv, msg string, opts ...Option) (Decision, error) {
	o := collect(opts)
	return c.decide(ctx, o.request(opDecide, func(dst []byte, id int64) []byte {
		return appendEnd(appendDeliveryOptions(appendMessage(dst, id, "decide", conv, msg), &o))
	}))
}

// write sends a write op but receive.
func (c *Client) write(ctx context.Context, r *rpc) (Ack, error) {
	var a struct {
		Seq            int64 `json:"seq"`
		Duplicate      bool  `json:"duplicate"`
		Token          int64 `json:"token"`
		LeaseExpiresAt int64 `json:"lease_expires_at"`
	}
	err := c.do(ctx, &a, r)
	return Ack(a), err
}

// appendToken appends the token of Token, if given.
func appendToken(dst []byte, o *options) []byte {
	if o.hasToken {
		dst = appendInt(dst, "token", o.token)
	}
	return dst
}

// Start records that processing of message msg started, and answers its
// fencing token in Ack.Token. It takes ExpectedSeq, Worker and Lease.
//
// With a live lease held, a start by the same worker is a duplicate with
// the same token, and any other fails with busy. A start with a Lease of
// a message in progress whose lease lapsed (or that never had one) takes
// it over with a new token.
//
// Returns an *Error: busy (a *conversation.BusyError), quarantined
// (conversation.ErrQuarantined) when a start would append to a message
// started max_attempts times, unknown_message, already_finished,
// sequence_conflict, bad_request, unavailable, shutting_down.
func (c *Client) Start(ctx context.Context, conv, msg string, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, o.request(opStart, func(dst []byte, id int64) []byte {
		dst = appendMessage(dst, id, "start", conv, msg)
		if o.worker != "" {
			dst = appendString(dst, "worker", o.worker)
		}
		if o.hasLease {
			dst = appendInt(dst, "lease_ms", o.leaseMS)
		}
		return appendEnd(appendExpectedSeq(dst, &o))
	}))
}

// Step records step index of message msg with its output. It takes
// ExpectedSeq and Token.
//
// Returns an *Error: fenced (a *conversation.FencedError) when the Token
// is not the message's current one, step_conflict when the step completed
// with other output, unknown_message, already_finished,
// sequence_conflict, bad_request (also, before anything is sent, for an
// output over the server's max_output_bytes), unavailable, shutting_down.
func (c *Client) Step(ctx context.Context, conv, msg string, index uint32, output []byte, opts ...Option) (Ack, error) {
	o := collect(opts)
	r := o.request(opStep, func(dst []byte, id int64) []byte {
		dst = appendMessage(dst, id, "step", conv, msg)
		dst = appendInt(dst, "step_index", int64(index))
		dst = append(dst, `,"output":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, output)
		dst = append(dst, '"')
		return appendEnd(appendExpectedSeq(appendToken(dst, &o), &o))
	})
	r.output = len(output)
	return c.write(ctx, r)
}

// Finish records that message msg is fully processed. It takes
// ExpectedSeq and Token. Returns the errors of Step but step_conflict and
// already_finished: a finish after finish is a duplicate.
func (c *Client) Finish(ctx context.Context, conv, msg string, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, o.request(opFinish, func(dst []byte, id int64) []byte {
		dst = appendMessage(dst, id, "finish", conv, msg)
		return appendEnd(appendExpectedSeq(appendToken(dst, &o), &o))
	}))
}

// Fail records that processing message msg failed with errText; it may
// be started again. It takes ExpectedSeq and Token. Returns the errors of
// Step but step_conflict.
func (c *Client) Fail(ctx context.Context, conv, msg, errText string, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, o.request(opFail, func(dst []byte, id int64) []byte {
		dst = appendString(appendMessage(dst, id, "fail", conv, msg), "error", errText)
		return appendEnd(appendExpectedSeq(appendToken(dst, &o), &o))
	}))
}

// Renew extends the lease of the holder of token on message msg to lease
// from now, rounded up to the millisecond (1 ms to 24 h), and answers when
// it lapses in Ack.LeaseExpiresAt. A current token renews even a lapsed
// lease, and gives one to a start that had none. It takes ExpectedSeq;
// only with it is a renew sent again after a lost connection, as a renew
// sent twice renews twice.
//
// Returns an *Error: fenced (a *conversation.FencedError) when token is
// not the message's current one or the message is not in progress,
// unknown_message, sequence_conflict, bad_request, unavailable,
// shutting_down.
func (c *Client) Renew(ctx context.Context, conv, msg string, token int64, lease time.Duration, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, &rpc{op: opRenew, feature: "renew", safe: retrySafe(opRenew, o.hasExpectedSeq, true),
		build: func(dst []byte, id int64) []byte {
			dst = appendInt(appendMessage(dst, id, "renew", conv, msg), "token", token)
			dst = appendInt(dst, "lease_ms", leaseMillis(lease))
			return appendEnd(appendExpectedSeq(dst, &o))
		}})
}

// Release releases quarantined message msg, saying why in reason ("" for
// no reason): its attempts count again from 0, and its next delivery
// resumes it. It takes ExpectedSeq.
//
// Returns an *Error: not_quarantined (conversation.ErrNotQuarantined),
// unknown_message, sequence_conflict, bad_request, unavailable,
// shutting_down.
func (c *Client) Release(ctx context.Context, conv, msg, reason string, opts ...Option) (Ack, error) {
	o := collect(opts)
	return c.write(ctx, &rpc{op: opRelease, feature: "release", safe: retrySafe(opRelease, o.hasExpectedSeq, false),
		build: func(dst []byte, id int64) []byte {
			dst = appendMessage(dst, id, "release", conv, msg)
			if reason != "" {
				dst = appendString(dst, "reason", reason)
			}
			return appendEnd(appendExpectedSeq(dst, &o))
		}})
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
		Compacted int64  `json:"compacted"`
		Horizon   *int64 `json:"forgotten_before"`
	}
	err := c.do(ctx, &r, read(opState, func(dst []byte, id int64) []byte {
		return appendEnd(appendString(appendRequest(dst, id, "state"), "conversation", conv))
	}))
	m := r.Messages
	return ConversationState{Next: r.Next, Counts: conversation.Counts{
		Received: m.Received, InProgress: m.InProgress, Errored: m.Errored, Finished: m.Finished},
		Compacted: r.Compacted, Horizon: horizon(r.Horizon)}, err
}

// MessageState returns the state of message msg of conversation conv: its
// status is conversation.StatusUnknown if it was never received.
func (c *Client) MessageState(ctx context.Context, conv, msg string) (MessageState, error) {
	var r struct {
		Status         string      `json:"status"`
		ReceivedAt     int64       `json:"received_at"`
		LastStep       *int64      `json:"last_completed_step"`
		Error          string      `json:"error"`
		Steps          []stepReply `json:"steps"`
		Attempts       int64       `json:"attempts"`
		Token          int64       `json:"token"`
		Worker         string      `json:"worker"`
		LeaseExpiresAt int64       `json:"lease_expires_at"`
		Quarantined    bool        `json:"quarantined"`
		Fingerprint    string      `json:"fingerprint"`
		Compacted      bool        `json:"compacted"`
	}
	if err := c.do(ctx, &r, read(opState, func(dst []byte, id int64) []byte {
		return appendEnd(appendMessage(dst, id, "state", conv, msg))
	})); err != nil {
		return MessageState{}, err
	}
	status, _ := conversation.ParseStatus(r.Status)
	return MessageState{
		Status: status, ReceivedAt: r.ReceivedAt, LastStep: lastStep(r.LastStep), Steps: stepRecords(r.Steps), Error: r.Error,
		Attempts: r.Attempts, Token: r.Token, Worker: r.Worker, LeaseExpiresAt: r.LeaseExpiresAt,
		Quarantined: r.Quarantined, Fingerprint: r.Fingerprint, Compacted: r.Compacted,
	}, nil
}

// lastStep returns a last_completed_step, conversation.NoStep for null.
func lastStep(n *int64) int64 {
	if n == nil {
		return conversation.NoStep
	}
	return *n
}

// Messages returns up to limit messages of conversation conv (0: the
// server's default), by id, from the first whose id sorts after after
// ("": from the first), and the after of the next page ("" when there is
// none). status, unless "", keeps the messages of that stored status
// (received, in_progress, errored, finished), or those leased or
// quarantined.
//
// Returns an *Error: bad_request for an unknown status, unavailable,
// shutting_down.
func (c *Client) Messages(ctx context.Context, conv, status, after string, limit int) ([]MessageSummary, string, error) {
	var r struct {
		Messages []struct {
			ID             string `json:"message_id"`
			Status         string `json:"status"`
			Attempts       int64  `json:"attempts"`
			LastStep       *int64 `json:"last_completed_step"`
			ReceivedAt     int64  `json:"received_at"`
			UpdatedAt      int64  `json:"updated_at"`
			Worker         string `json:"worker"`
			LeaseExpiresAt int64  `json:"lease_expires_at"`
			Quarantined    bool   `json:"quarantined"`
			Compacted      bool   `json:"compacted"`
		} `json:"messages"`
		Next string `json:"next"`
	}
	req := read(opMessages, func(dst []byte, id int64) []byte {
		dst = appendString(appendRequest(dst, id, "messages"), "conversation", conv)
		if status != "" {
			dst = appendString(dst, "status", status)
		}
		if after != "" {
			dst = appendString(dst, "after", after)
		}
		if limit > 0 {
			dst = appendInt(dst, "limit", int64(limit))
		}
		return appendEnd(dst)
	})
	req.feature = "messages"
	err := c.do(ctx, &r, req)
	if err != nil {
		return nil, "", err
	}
	out := make([]MessageSummary, len(r.Messages))
	for i, m := range r.Messages {
		st, _ := conversation.ParseStatus(m.Status)
		out[i] = MessageSummary{
			ID: m.ID, Status: st, Attempts: m.Attempts, LastStep: lastStep(m.LastStep),
			ReceivedAt: m.ReceivedAt, UpdatedAt: m.UpdatedAt, Worker: m.Worker, LeaseExpiresAt: m.LeaseExpiresAt,
			Quarantined: m.Quarantined, Compacted: m.Compacted,
		}
	}
	return out, r.Next, nil
}

// Explain returns why a delivery of message msg of conversation conv
// would get the decision it gets now, and the message's events; it
// appends nothing. It takes Fingerprint and WithSteps. Returns the errors
// of Decide.
func (c *Client) Explain(ctx context.Context, conv, msg string, opts ...Option) (Explanation, error) {
	o := collect(opts)
	var r struct {
		decisionReply
		Rule   string               `json:"rule"`
		Reason string               `json:"reason"`
		Events []conversation.Event `json:"events"`
	}
	req := read(opExplain, func(dst []byte, id int64) []byte {
		return appendEnd(appendDeliveryOptions(appendMessage(dst, id, "explain", conv, msg), &o))
	})
	req.feature = "explain"
	if err := c.do(ctx, &r, req); err != nil {
		return Explanation{}, err
	}
	d, err := r.decision()
	if err != nil {
		return Explanation{}, err
	}
	var ok bool
	if d.Rule, ok = lookupName[conversation.Rule](r.Rule); !ok {
		return Explanation{}, fmt.Errorf("decode reply: unknown rule %q", r.Rule)
	}
	return Explanation{Decision: d, Reason: r.Reason, Events: r.Events}, nil
}

// Read returns up to limit events of conversation conv from seq fromSeq on
// (limit 0: the server's default), and the seq to read on from.
func (c *Client) Read(ctx context.Context, conv string, fromSeq int64, limit int) ([]conversation.Event, int64, error) {
	var r struct {
		Events []conversation.Event `json:"events"`
		Next   int64                `json:"next_seq"`
	}
	err := c.do(ctx, &r, read(opRead, func(dst []byte, id int64) []byte {
		dst = appendString(appendRequest(dst, id, "read"), "conversation", conv)
		dst = appendInt(dst, "from_seq", fromSeq)
		if limit > 0 {
			dst = appendInt(dst, "limit", int64(limit))
		}
		return appendEnd(dst)
	}))
	return r.Events, r.Next, err
}

// Subscribe opens a subscription to the events of conversation conv, or of
// every conversation when conv is "". It takes FromSeq (with a
// conversation) or FromPos, to catch up from there first; without either
// it delivers the events committed from now on. The subscription lives on
// the client's connection of the moment, and ends with it (see Client).
func (c *Client) Subscribe(ctx context.Context, conv string, opts ...Option) (*Stream, error) {
	o := collect(opts)
	s := &Stream{conv: conv, events: make(chan conversation.Event, c.streamBuffer), ended: make(chan struct{})}
	r := read(opSubscribe, func(dst []byte, id int64) []byte {
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
	})
	r.onOK = func(cc *clientConn, reply []byte) {
		var r struct {
			Sub int64 `json:"sub"`
		}
		json.Unmarshal(reply, &r)
		s.cc, s.id = cc, r.Sub
		cc.mu.Lock()
		cc.subs[s.id] = s
		cc.mu.Unlock()
	}
	if _, err := c.roundTrip(ctx, r); err != nil {
		return nil, err
	}
	return s, nil
}

// Unsubscribe ends subscription sub of the client's current connection;
// its Stream returns ErrUnsubscribed after the events it holds. Numbers
// are the connection's: once the client dialled again, only a Stream of
// the current connection is ended by its number, and the number of one
// that ended with an earlier connection is ignored (nil). Stream.Close
// ends its own subscription whatever connection it is on.
func (c *Client) Unsubscribe(ctx context.Context, sub int64) error {
	c.mu.Lock()
	cc, redialled := c.cur, c.dials > 1
	c.mu.Unlock()
	cc.mu.Lock()
	_, ours := cc.subs[sub]
	cc.mu.Unlock()
	if !ours && redialled {
		return nil
	}
	return cc.unsubscribe(ctx, sub)
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
	err := c.do(ctx, &r, read(opConversations, func(dst []byte, id int64) []byte {
		dst = appendRequest(dst, id, "conversations")
		if after != "" {
			dst = appendString(dst, "after", after)
		}
		if limit > 0 {
			dst = appendInt(dst, "limit", int64(limit))
		}
		return appendEnd(dst)
	}))
	out := make([]ConversationSummary, len(r.Conversations))
	for i, s := range r.Conversations {
		out[i] = ConversationSummary(s)
	}
	return out, err
}

// Stats returns the figures of the server and its store.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := c.do(ctx, &st, read(opStats, func(dst []byte, id int64) []byte { return appendEnd(appendRequest(dst, id, "stats")) }))
	return st, err
}
