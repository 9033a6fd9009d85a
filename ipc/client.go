package ipc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"

	"liminald/internal/paths"
)

// Client is a connection to a liminald server. It is safe for concurrent
// use: requests from any number of goroutines are pipelined on the one
// connection, each with an id of its own, and one reader goroutine matches
// the replies to them in order and hands pushes to their subscriptions.
//
// # Restarts
//
// A client made by Dial keeps its socket's path and dials it again when
// its connection is lost (the daemon restarted, or was stopped), on the
// next call that needs it, trying with backoff (10 ms doubling to 1 s)
// for up to its ReconnectTimeout (DefaultReconnectTimeout) or until the
// call's ctx ends. What happens to a call whose connection was lost
// depends on whether it may be sent again:
//
//   - Calls that are safe to send twice are sent again on the new
//     connection, and the caller sees nothing of the restart: the reads
//     (Hello, Ping, Decide, State, MessageState, Read, Messages, Explain,
//     Conversations, Stats, Subscribe), and the writes the server answers
//     as duplicates when they already landed: any write with ExpectedSeq,
//     and a Step, Finish or Fail with a Token. Such a write may come back
//     with Ack.Duplicate (or Decision.Duplicate) set for the event it
//     appended itself before the connection broke, or fenced if another
//     worker took the message over in between.
//   - A write that is not safe to send twice (a Receive, Start, Step,
//     Finish or Fail without ExpectedSeq or Token; a Renew or Release
//     without ExpectedSeq), whose request was sent before the connection
//     broke, fails with an *UnavailableError with Sent set: it may or may
//     not have landed, and the caller decides (a Decide or MessageState
//     tells). A call not yet sent when the connection broke is sent on
//     the new connection, whatever it is.
//   - A shutting_down reply (the daemon is stopping) is treated as a lost
//     connection for the calls safe to send again, which go to the next
//     daemon; other calls get it as an *Error, as before.
//   - Subscriptions end with their connection: Next returns an
//     *UnavailableError after the events it holds. Subscribe again from
//     the position after the last event Next returned (FromPos(e.Pos+1),
//     or FromSeq(e.Seq+1) for one conversation) to go on without a gap.
//
// While the server cannot be reached, calls fail after the reconnect
// timeout with an *UnavailableError naming the socket and wrapping the
// dial error: errors.Is(err, CodeUnavailable) holds, as for every
// *UnavailableError, and so does Retryable. A client made by NewClient
// cannot dial again: when its connection ends, it ends too, and its calls
// fail with an error wrapping ErrClientClosed, as does a client made with
// ReconnectTimeout(0).
//
// # Protocol
//
// The first call on a connection that uses a protocol-2 feature (a Start
// with Worker or Lease; a Step, Finish or Fail with Token; a Receive,
// Decide or Explain with Fingerprint, SentAt or WithSteps; Renew,
// Release, Messages, Explain) asks hello first, once per connection, and
// fails with a *ProtocolError, sending nothing more, when the server
// speaks protocol 1: such a server ignores the fields it does not know,
// and would answer a start with a lease ok, with no token and no lease.
//
// # Errors
//
// For every method: a failure reply comes back as an *Error, so that
// errors.Is(err, ipc.CodeStepConflict) tests its code, and errors.Is(err,
// conversation.ErrStepConflict) or errors.As(err, &sequenceConflict) the
// domain error it stands for. A method returns ctx's error if ctx ends
// before the reply comes (the request may still take effect), an
// *UnavailableError when the server cannot be reached (above), a
// *ProtocolError for a protocol-2 feature the server does not speak, and
// ErrClientClosed after Close. A ctx without a deadline is bounded by the
// client's CallTimeout (DefaultCallTimeout). Writing a request does not
// heed ctx: while the server holds back (64 requests unanswered), the
// write waits.
type Client struct {
	path             string // the socket; "" for a client made by NewClient
	redial           bool   // the client dials path again when its connection is lost
	streamBuffer     int    // events a Stream holds; DefaultStreamBuffer
	reconnectTimeout time.Duration
	callTimeout      time.Duration
	closing          chan struct{}  // closed by Close
	wg               sync.WaitGroup // reader goroutines, background unsubscribes

	mu      sync.Mutex // guards the fields below
	cur     *clientConn
	conns   map[*clientConn]struct{} // those whose reader has not ended
	dialing chan struct{}            // closed when the dial under way ends; nil when none
	dialErr error                    // the error of the last dial
	dials   int                      // connections made
	closed  bool
}

// The defaults of the client's options.
const (
	// DefaultReconnectTimeout is how long a call waits for the server to
	// come back once its connection was lost.
	DefaultReconnectTimeout = 10 * time.Second
	// DefaultCallTimeout bounds a call whose ctx has no deadline.
	DefaultCallTimeout = time.Minute
)

// The bounds of the backoff between dials while the server is away.
const (
	minBackoff = 10 * time.Millisecond
	maxBackoff = time.Second
)

// ClientOption is an optional setting of a Client, given to Dial or
// NewClient.
type ClientOption func(*Client)

// ReconnectTimeout sets how long a call of a client made by Dial waits for
// the server to come back once its connection was lost, dialling again
// with backoff, before it fails with an *UnavailableError
// (DefaultReconnectTimeout); the call's ctx may end it sooner. With d of 0
// or less the client never dials again: when its connection ends, it ends
// too, as one made by NewClient.
func ReconnectTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.reconnectTimeout = d }
}

// CallTimeout bounds each call whose ctx has no deadline of its own: the
// call returns context.DeadlineExceeded after d (DefaultCallTimeout). A d
// of 0 or less leaves such calls unbounded. It bounds requests and their
// replies, not the wait of Stream.Next for the next event.
func CallTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.callTimeout = d }
}

// DefaultSocket returns the socket a client talks to when it is given
// none, found as the daemon finds its own (SPEC §5): the one
// $LIMINAL_SOCKET names, else $XDG_RUNTIME_DIR/liminald/liminald.sock,
// else /run/liminald/liminald.sock for root, else
// /tmp/liminald-<uid>/liminald.sock. It does not read the daemon's
// configuration file: a socket set only there must be named.
func DefaultSocket() string { return paths.FindSocket(os.Getenv, os.Getuid()) }

// UnavailableError is a call that could not reach the server at Socket:
// it was down past the reconnect timeout (or the call's ctx), or the
// connection was lost after the call's request was sent (Sent) and the
// call is not safe to send again. It is retryable, and errors.Is(err,
// CodeUnavailable) holds. It is not an *Error: no server answered it.
type UnavailableError struct {
	Socket string // the server's socket; "" for a client made by NewClient
	Op     string // the op of the call; "" for Dial
	// Sent is set when the request was sent before the connection was
	// lost: the write may or may not have landed.
	Sent bool
	Err  error // the dial error, or the connection's
}

func (e *UnavailableError) Error() string {
	var b bytes.Buffer
	if e.Op != "" {
		b.WriteString(e.Op + ": ")
	}
	fmt.Fprintf(&b, "liminald at %s unavailable: ", e.Socket)
	if e.Sent {
		b.WriteString("the connection was lost after the request was sent, so it may or may not have taken effect: ")
	}
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the dial error, or the connection's.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is reports whether target is CodeUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == CodeUnavailable }

// Retryable reports true: the server may be back for the next try.
func (e *UnavailableError) Retryable() bool { return true }

// ProtocolError is a call refused before it was sent because it needs a
// newer protocol than the server at Socket speaks (SPEC §7).
type ProtocolError struct {
	Socket  string // "" for a client made by NewClient
	Feature string // what the call uses, such as "start with worker, lease_ms"
	Need    int    // the protocol it needs
	Have    int    // the protocol hello answered
}

func (e *ProtocolError) Error() string {
	at := ""
	if e.Socket != "" {
		at = " at " + e.Socket
	}
	return fmt.Sprintf("%s needs protocol %d, but the server%s speaks protocol %d; not sent", e.Feature, e.Need, at, e.Have)
}

// lostError is why a connection of a client that dials again ended: the
// error of reading or writing it.
type lostError struct{ err error }

func (e *lostError) Error() string { return "connection lost: " + e.err.Error() }
func (e *lostError) Unwrap() error { return e.err }

// errDraining refuses a request on a connection whose server is shutting
// down: it goes to the next one.
var errDraining = &lostError{errors.New("the server is shutting down")}

// Dial connects to the server listening on the unix socket at socketPath,
// or at DefaultSocket() when socketPath is "", and keeps the path to dial
// again when the connection is lost (see Client). It dials once: returns
// an *UnavailableError wrapping the dial error when the server cannot be
// reached now.
func Dial(ctx context.Context, socketPath string, opts ...ClientOption) (*Client, error) {
	if socketPath == "" {
		socketPath = DefaultSocket()
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, &UnavailableError{Socket: socketPath, Err: err}
	}
	c := newClient(socketPath, opts)
	c.redial = c.reconnectTimeout > 0
	c.mu.Lock()
	c.install(nc)
	c.mu.Unlock()
	return c, nil
}

// NewClient returns a client speaking on the connection nc, which it owns.
// It cannot dial again: once nc ends, its calls fail with an error
// wrapping ErrClientClosed. ReconnectTimeout does not apply to it.
func NewClient(nc net.Conn, opts ...ClientOption) *Client {
	c := newClient("", opts)
	c.mu.Lock()
	c.install(nc)
	c.mu.Unlock()
	return c
}

func newClient(path string, opts []ClientOption) *Client {
	c := &Client{
		path: path, streamBuffer: DefaultStreamBuffer, closing: make(chan struct{}), conns: make(map[*clientConn]struct{}),
		reconnectTimeout: DefaultReconnectTimeout, callTimeout: DefaultCallTimeout,
	}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// install makes nc the client's connection and starts its reader; c.mu is
// held.
func (c *Client) install(nc net.Conn) {
	cc := &clientConn{c: c, nc: nc, subs: make(map[int64]*Stream)}
	c.cur = cc
	c.conns[cc] = struct{}{}
	c.dials++
	c.wg.Add(1)
	go cc.readLoop()
}

// Close closes the connection. Calls in flight and later return an error
// wrapping ErrClientClosed; subscriptions end with it.
func (c *Client) Close() error {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		close(c.closing)
	}
	conns := make([]*clientConn, 0, len(c.conns))
	for cc := range c.conns {
		conns = append(conns, cc)
	}
	c.mu.Unlock()
	for _, cc := range conns {
		cc.fail(ErrClientClosed)
	}
	c.wg.Wait()
	return nil
}

// callContext returns ctx bounded by the call timeout when it has no
// deadline of its own.
func (c *Client) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok || c.callTimeout <= 0 {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.callTimeout)
}

// rpc is one call of the client: its op, the request line it builds for an
// id, and what the client checks before it sends it.
type rpc struct {
	op    op
	name  string // the op's name in a request of Do, which may not be one
	build func(dst []byte, id int64) []byte
	// safe is set when the request may be sent again after its connection
	// was lost before the reply: see retrySafe.
	safe bool
	// feature names the protocol-2 feature the request uses, for a
	// ProtocolError; "" for none.
	feature string
	// output is the size of a step's output, checked against the server's
	// max_output_bytes before it is sent.
	output int
	// onOK, when set, runs in the reader goroutine on a success reply,
	// before the next line is read.
	onOK func(cc *clientConn, reply []byte)
	// raw is set when the request carries its own id (Do), which the reply
	// is not checked against.
	raw bool
}

// opName returns the name of r's op.
func (r *rpc) opName() string {
	if r.op == 0 {
		return r.name
	}
	return r.op.String()
}

// retrySafe reports whether a request of op o may be sent again when its
// connection was lost before its reply: a read, or a write the server
// answers as a duplicate when it already landed (SPEC §2): one with
// expected_seq, or a step, finish or fail with a token. A renew with a
// token is not: sent again, it renews again. An unsubscribe never is: its
// subscription ended with its connection.
func retrySafe(o op, expectedSeq, token bool) bool {
	switch {
	case o == 0 || o == opUnsubscribe:
		return false
	case !o.isWrite(), expectedSeq:
		return true
	}
	return token && (o == opStep || o == opFinish || o == opFail)
}

// roundTrip sends r and returns its reply, on a connection dialled again
// when the last one was lost and r may go on a new one (see Client).
func (c *Client) roundTrip(ctx context.Context, r *rpc) ([]byte, error) {
	ctx, cancel := c.callContext(ctx)
	defer cancel()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var b backoff
	for {
		cc, err := c.conn(ctx, &b, r.opName())
		if err != nil {
			return nil, err
		}
		sent := false
		err = c.prepare(ctx, cc, r)
		var reply []byte
		if err == nil {
			reply, sent, err = cc.roundTrip(ctx, r)
		}
		var lost *lostError
		switch {
		case err == nil:
			return reply, nil
		case errors.As(err, &lost):
			if sent && !r.safe {
				return nil, &UnavailableError{Socket: c.path, Op: r.opName(), Sent: true, Err: lost.err}
			}
			b.err = lost
		case c.redial && errors.Is(err, CodeShuttingDown):
			// The daemon is stopping: send nothing more on this
			// connection, and send r to the next daemon if it may go.
			cc.drain()
			if sent && !r.safe {
				return reply, err
			}
			b.err = fmt.Errorf("the server answered %v", err) // not an *Error: no server answers the call
		default:
			return reply, err
		}
	}
}

// prepare checks, on cc, what r needs of the server before it is sent: the
// protocol of its features, and the size of a step's output. Returns a
// *ProtocolError, a bad_request *Error for an output over the limit, or
// the error of asking hello.
func (c *Client) prepare(ctx context.Context, cc *clientConn, r *rpc) error {
	const smallOutput = 64 << 10 // outputs up to this size are sent unchecked
	if r.feature == "" && r.output <= smallOutput {
		return nil
	}
	info, err := cc.serverInfo(ctx)
	if err != nil {
		return err
	}
	if r.feature != "" && info.Protocol < 2 {
		return &ProtocolError{Socket: c.path, Feature: r.feature, Need: 2, Have: info.Protocol}
	}
	if limit := info.Limits.MaxOutputBytes; r.output > smallOutput && limit > 0 && r.output > limit {
		// A request line over the limit is refused whole, with a message
		// about the line, not the output.
		return &Error{Code: CodeBadRequest, Details: map[string]any{"field": "output"},
			Message: fmt.Sprintf("output is %d bytes, over the server's max_output_bytes of %d (its max_line_bytes, less the rest of the request, in base64); not sent", r.output, limit)}
	}
	return nil
}

// backoff is how one call waits for the server to come back: it dials at
// once, then after 10 ms, doubling to 1 s, until its deadline.
type backoff struct {
	deadline time.Time // set when the call first found no connection
	delay    time.Duration
	err      error // why the last try failed: a dial's error, or a connection's
}

// conn returns the connection to send on: the client's, or a new one when
// it was lost, dialled with backoff until the reconnect timeout passes or
// ctx ends. Returns ErrClientClosed after Close, the error the connection
// ended with for a client that does not dial again, and an
// *UnavailableError naming the socket and wrapping the last dial error
// when the server did not come back in time.
func (c *Client) conn(ctx context.Context, b *backoff, op string) (*clientConn, error) {
	for {
		c.mu.Lock()
		cc, closed := c.cur, c.closed
		c.mu.Unlock()
		switch {
		case closed:
			return nil, ErrClientClosed
		case cc.usable():
			return cc, nil
		case !c.redial:
			return nil, cc.ended()
		}
		if err := b.wait(ctx, c.closing, c.reconnectTimeout); err != nil {
			if errors.Is(err, ErrClientClosed) {
				return nil, err
			}
			cause := err
			if b.err != nil {
				cause = fmt.Errorf("%w; gave up: %w", b.err, err)
			}
			return nil, &UnavailableError{Socket: c.path, Op: op, Err: cause}
		}
		b.err = c.dial(ctx)
	}
}

// errReconnectTimeout ends a call's wait for the server.
var errReconnectTimeout = errors.New("reconnect timeout passed")

// wait waits before the next dial: not at all the first time, when it
// sets the deadline timeout from now, then for the next delay. Returns
// errReconnectTimeout once the deadline passed, ctx's error, or
// ErrClientClosed when closing is closed.
func (b *backoff) wait(ctx context.Context, closing chan struct{}, timeout time.Duration) error {
	if b.deadline.IsZero() {
		b.deadline = time.Now().Add(timeout)
		return nil
	}
	left := time.Until(b.deadline)
	if left <= 0 {
		return fmt.Errorf("%w (%v)", errReconnectTimeout, timeout)
	}
	b.delay = min(max(2*b.delay, minBackoff), maxBackoff)
	t := time.NewTimer(min(b.delay, left))
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-closing:
		return ErrClientClosed
	}
}

// dial dials the socket again and makes the new connection the client's;
// when another call is dialling already, it waits for that dial instead.
// A dial takes the reconnect timeout at most (a unix socket's takes no
// time unless the server's backlog is full). Returns the dial's error.
func (c *Client) dial(ctx context.Context) error {
	c.mu.Lock()
	if wait := c.dialing; wait != nil {
		c.mu.Unlock()
		select {
		case <-wait:
		case <-ctx.Done():
			return ctx.Err()
		case <-c.closing:
			return ErrClientClosed
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.dialErr
	}
	if cc := c.cur; c.closed || cc.usable() {
		c.mu.Unlock()
		return nil
	}
	wait := make(chan struct{})
	c.dialing = wait
	c.mu.Unlock()

	dctx, cancel := context.WithTimeout(ctx, c.reconnectTimeout)
	var d net.Dialer
	nc, err := d.DialContext(dctx, "unix", c.path)
	cancel()

	c.mu.Lock()
	switch {
	case err != nil:
	case c.closed:
		nc.Close()
		err = ErrClientClosed
	default:
		c.install(nc)
	}
	c.dialing, c.dialErr = nil, err
	c.mu.Unlock()
	close(wait)
	return err
}

// Do sends request, one JSON object, as it is (with the id it has, if any)
// and returns the raw reply line without its "\n". A failure reply is
// returned too, with its *Error. It is meant for tools that print replies
// (the command line's --json mode); pushes of a subscription opened with Do
// are dropped.
//
// Do reads the request's op and arguments to treat it as the typed method
// would: it is sent again after a lost connection only when that is safe,
// and a protocol-2 argument makes it check the server's protocol first.
func (c *Client) Do(ctx context.Context, request []byte) ([]byte, error) {
	var line bytes.Buffer
	if err := json.Compact(&line, request); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	var fields map[string]json.RawMessage
	if line.Len() == 0 || line.Bytes()[0] != '{' || json.Unmarshal(line.Bytes(), &fields) != nil {
		return nil, errors.New("request: must be a JSON object")
	}
	line.WriteByte('\n')
	r := rawRPC(line.Bytes(), fields)
	if r.op == opUnsubscribe {
		// Its subscription belongs to the connection the client has now.
		c.mu.Lock()
		cc := c.cur
		c.mu.Unlock()
		ctx, cancel := c.callContext(ctx)
		defer cancel()
		reply, _, err := cc.roundTrip(ctx, r)
		var lost *lostError
		if errors.As(err, &lost) {
			return nil, &UnavailableError{Socket: c.path, Op: r.opName(), Err: lost.err}
		}
		return reply, err
	}
	return c.roundTrip(ctx, r)
}

// rawRPC is the call of a request line for Do, with fields its top-level
// fields.
func rawRPC(line []byte, fields map[string]json.RawMessage) *rpc {
	given := func(name string) bool {
		v, ok := fields[name]
		return ok && string(v) != "null" && string(v) != "false"
	}
	var name string
	json.Unmarshal(fields["op"], &name)
	o := lookupOp([]byte(name))
	r := &rpc{op: o, name: name, raw: true, build: func(dst []byte, _ int64) []byte { return append(dst, line...) },
		safe: retrySafe(o, given("expected_seq"), given("token"))}
	switch o {
	case opRenew, opRelease, opMessages, opExplain:
		r.feature = o.String()
	default:
		var uses []string
		for _, f := range protocol2Fields {
			if given(f) {
				uses = append(uses, f)
			}
		}
		r.feature = featureOf(o, uses)
	}
	return r
}
