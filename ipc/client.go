package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"liminald/conversation"
)

// Client is a connection to a liminald server. It is safe for concurrent
// use: requests from any number of goroutines are pipelined on the one
// connection, each with an id of its own, and one reader goroutine matches
// the replies to them in order and hands pushes to their subscriptions.
//
// Errors, for every method: a failure reply comes back as an *Error, so
// that errors.Is(err, ipc.CodeStepConflict) tests its code, and
// errors.Is(err, conversation.ErrStepConflict) or errors.As(err,
// &sequenceConflict) the domain error it stands for. A method returns ctx's
// error if ctx ends before the reply comes (the request may still take
// effect), and an error wrapping ErrClientClosed once the connection
// ended. Writing a request does not heed ctx: while the server holds back
// (64 requests unanswered), the write waits.
type Client struct {
	nc           net.Conn
	streamBuffer int            // events a Stream holds; DefaultStreamBuffer
	done         chan struct{}  // closed when the reader goroutine ends
	wg           sync.WaitGroup // background unsubscribes

	wmu    sync.Mutex // orders requests onto the connection and into pending
	wbuf   []byte
	lastID int64

	mu      sync.Mutex // guards the fields below
	pending []*call    // sent, not yet answered, in order
	subs    map[int64]*Stream
	err     error // why the client ended; nil while it works
	// maxOutput is the server's max_output_bytes, once a hello told it;
	// 0 before.
	maxOutput int
}

// call is a request waiting for its reply.
type call struct {
	id    int64 // 0 when the caller wrote its own id (Do)
	reply []byte
	err   error
	done  chan struct{}
	// onOK, when set, runs in the reader goroutine on a success reply,
	// before the next line is read.
	onOK func(reply []byte)
}

// Dial connects to the server listening on the unix socket at socketPath.
// Returns the dial error.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", socketPath, err)
	}
	return NewClient(nc), nil
}

// NewClient returns a client speaking on the connection nc, which it owns.
func NewClient(nc net.Conn) *Client {
	c := &Client{nc: nc, subs: make(map[int64]*Stream), done: make(chan struct{}), streamBuffer: DefaultStreamBuffer}
	go c.readLoop()
	return c
}

// Close closes the connection. Calls in flight and later return an error
// wrapping ErrClientClosed; subscriptions end with it.
func (c *Client) Close() error {
	c.fail(ErrClientClosed)
	<-c.done
	c.wg.Wait()
	return nil
}

// fail ends the client with err, unless it already ended.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	c.mu.Unlock()
	c.nc.Close()
}

// send writes the request that build appends for id, and returns its call.
// With raw set, the request carries its own id, which the reply is not
// checked against.
func (c *Client) send(build func(dst []byte, id int64) []byte, onOK func([]byte), raw bool) (*call, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.lastID++
	cl := &call{id: c.lastID, done: make(chan struct{}), onOK: onOK}
	if raw {
		cl.id = 0
	}
	c.wbuf = build(c.wbuf[:0], cl.id)
	if err := c.enqueue(cl); err != nil {
		return nil, err
	}
	if _, err := c.nc.Write(c.wbuf); err != nil {
		c.fail(fmt.Errorf("%w: write: %w", ErrClientClosed, err))
	}
	return cl, nil
}

func (c *Client) enqueue(cl *call) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return c.err
	}
	c.pending = append(c.pending, cl)
	return nil
}

// wait waits for the reply of cl. Returns ctx's error if it ends first.
func (c *Client) wait(ctx context.Context, cl *call) ([]byte, error) {
	select {
	case <-cl.done:
		return cl.reply, cl.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// roundTrip sends a request and waits for its reply.
func (c *Client) roundTrip(ctx context.Context, build func(dst []byte, id int64) []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cl, err := c.send(build, nil, false)
	if err != nil {
		return nil, err
	}
	return c.wait(ctx, cl)
}

// Do sends request, one JSON object, as it is (with the id it has, if any)
// and returns the raw reply line without its "\n". A failure reply is
// returned too, with its *Error. It is meant for tools that print replies
// (the command line's --json mode); pushes of a subscription opened with Do
// are dropped.
func (c *Client) Do(ctx context.Context, request []byte) ([]byte, error) {
	var line bytes.Buffer
	if err := json.Compact(&line, request); err != nil {
		return nil, fmt.Errorf("request: %w", err)
	}
	if line.Len() == 0 || line.Bytes()[0] != '{' {
		return nil, errors.New("request: must be a JSON object")
	}
	line.WriteByte('\n')
	cl, err := c.send(func(dst []byte, _ int64) []byte { return append(dst, line.Bytes()...) }, nil, true)
	if err != nil {
		return nil, err
	}
	return c.wait(ctx, cl)
}

// envelope is what the reader needs of a line to route it.
type envelope struct {
	ID      json.RawMessage `json:"id"`
	OK      *bool           `json:"ok"`
	Error   json.RawMessage `json:"error"`
	Sub     *int64          `json:"sub"`
	Event   json.RawMessage `json:"event"`
	Lagged  bool            `json:"lagged"`
	NextPos int64           `json:"next_pos"`
	NextSeq *int64          `json:"next_seq"`
}

// readLoop reads replies and pushes until the connection ends, then fails
// every call waiting and ends every subscription.
func (c *Client) readLoop() {
	defer close(c.done)
	br := bufio.NewReaderSize(c.nc, 64<<10)
	var buf []byte
	for {
		line, err := readLine(br, &buf)
		if err == nil {
			err = c.handle(line)
		}
		if err != nil {
			c.fail(fmt.Errorf("%w: %w", ErrClientClosed, err))
			break
		}
	}
	c.mu.Lock()
	pending, subs, err := c.pending, c.subs, c.err
	c.pending, c.subs = nil, nil
	c.mu.Unlock()
	for _, cl := range pending {
		cl.err = err
		close(cl.done)
	}
	for _, s := range subs {
		s.end(err)
	}
}

// readLine returns the next line, without its "\n", in *buf or r's buffer.
func readLine(r *bufio.Reader, buf *[]byte) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == nil {
		return line[:len(line)-1], nil
	}
	*buf = append((*buf)[:0], line...)
	for err == bufio.ErrBufferFull {
		line, err = r.ReadSlice('\n')
		*buf = append(*buf, line...)
	}
	if err != nil {
		return nil, err
	}
	return (*buf)[:len(*buf)-1], nil
}

// handle routes one line from the server: a push to its subscription, a
// reply to the oldest call waiting.
func (c *Client) handle(line []byte) error {
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return fmt.Errorf("bad line from server: %w", err)
	}
	if env.OK == nil {
		if env.Sub == nil {
			return fmt.Errorf("bad line from server: neither a reply nor a push")
		}
		return c.push(&env)
	}
	c.mu.Lock()
	if len(c.pending) == 0 {
		c.mu.Unlock()
		return errors.New("reply from server to no request")
	}
	cl := c.pending[0]
	c.pending[0] = nil
	c.pending = c.pending[1:]
	c.mu.Unlock()
	if cl.id != 0 && string(env.ID) != strconv.FormatInt(cl.id, 10) {
		return fmt.Errorf("reply with id %s to request %d", env.ID, cl.id)
	}
	cl.reply = bytes.Clone(line)
	if *env.OK {
		if cl.onOK != nil {
			cl.onOK(cl.reply)
		}
	} else {
		cl.err = decodeError(env.Error)
	}
	close(cl.done)
	return nil
}

// decodeError returns the *Error of a failure reply's error object.
func decodeError(raw json.RawMessage) *Error {
	e := &Error{Code: CodeInternal, Message: "failure reply without an error object"}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var obj map[string]any
	if d.Decode(&obj) != nil || obj == nil {
		return e
	}
	code, _ := obj["code"].(string)
	e.Code = Code(code)
	e.Message, _ = obj["message"].(string)
	e.Retryable, _ = obj["retryable"].(bool)
	delete(obj, "code")
	delete(obj, "message")
	delete(obj, "retryable")
	if len(obj) > 0 {
		e.Details = obj
	}
	return e
}

// push hands a pushed line to its subscription; the pushes of an unknown
// subscription (one ended here, one opened with Do) are dropped.
func (c *Client) push(env *envelope) error {
	c.mu.Lock()
	s := c.subs[*env.Sub]
	c.mu.Unlock()
	if s == nil {
		return nil
	}
	if env.Lagged {
		next := &LaggedError{Sub: s.id, NextPos: env.NextPos, NextSeq: -1}
		if env.NextSeq != nil {
			next.NextSeq = *env.NextSeq
		}
		c.endSub(s.id, next)
		return nil
	}
	var e conversation.Event
	if err := json.Unmarshal(env.Event, &e); err != nil {
		return fmt.Errorf("bad event from server: %w", err)
	}
	if !s.deliver(e) {
		// The subscriber is too slow: end it here as the server would, from
		// the first event it missed, and unsubscribe in the background.
		lag := &LaggedError{Sub: s.id, NextPos: e.Pos, NextSeq: -1}
		if s.conv != "" {
			lag.NextSeq = e.Seq
		}
		c.endSub(s.id, lag)
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.Unsubscribe(context.Background(), s.id)
		}()
	}
	return nil
}

// endSub ends subscription id with err; it runs in the reader goroutine.
func (c *Client) endSub(id int64, err error) {
	c.mu.Lock()
	s := c.subs[id]
	delete(c.subs, id)
	c.mu.Unlock()
	if s != nil {
		s.end(err)
	}
}
