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

// clientConn is one connection of a client, and what the client knows
// of it: its calls waiting for replies, its subscriptions, the server's
// hello.
type clientConn struct {
	c  *Client
	nc net.Conn

	wmu    sync.Mutex // orders requests onto the connection and into pending
	wbuf   []byte
	lastID int64

	mu       sync.Mutex // guards the fields below
	pending  []*call    // sent, not yet answered, in order
	subs     map[int64]*Stream
	err      error // why it ended; nil while it works
	draining bool  // the server answered shutting_down: send nothing more
	info     *ServerInfo
}

// call is a request waiting for its reply.
type call struct {
	id    int64 // 0 when the caller wrote its own id (Do)
	reply []byte
	err   error
	done  chan struct{}
	onOK  func(cc *clientConn, reply []byte)
}

// usable reports whether calls may be sent on cc; a nil cc is not.
func (cc *clientConn) usable() bool {
	if cc == nil {
		return false
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	return cc.err == nil && !cc.draining
}

// ended returns why cc ended (ErrClientClosed for a nil cc).
func (cc *clientConn) ended() error {
	if cc == nil {
		return ErrClientClosed
	}
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.err == nil {
		return ErrClientClosed
	}
	return cc.err
}

// drain stops cc from taking requests: its server is shutting down, and
// answers those it has.
func (cc *clientConn) drain() {
	cc.mu.Lock()
	cc.draining = true
	cc.mu.Unlock()
}

// fail ends cc with err, unless it already ended.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err == nil {
		cc.err = err
	}
	cc.mu.Unlock()
	cc.nc.Close()
}

// send writes the request r builds, and returns its call. Returns, when
// nothing was sent, the error cc ended with, or errDraining. A write that
// fails before its first byte (the server closed the connection) sends
// nothing; one that fails later may have sent a line the server reads.
func (cc *clientConn) send(r *rpc) (*call, error) {
	cc.wmu.Lock()
	defer cc.wmu.Unlock()
	cc.lastID++
	cl := &call{id: cc.lastID, done: make(chan struct{}), onOK: r.onOK}
	if r.raw {
		cl.id = 0
	}
	cc.wbuf = r.build(cc.wbuf[:0], cl.id)
	if err := cc.enqueue(cl); err != nil {
		return nil, err
	}
	if n, err := cc.nc.Write(cc.wbuf); err != nil {
		cc.fail(cc.endError(fmt.Errorf("write: %w", err)))
		if n == 0 {
			return nil, cc.ended()
		}
	}
	return cl, nil
}

func (cc *clientConn) enqueue(cl *call) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	switch {
	case cc.err != nil:
		return cc.err
	case cc.draining:
		return errDraining
	}
	cc.pending = append(cc.pending, cl)
	return nil
}

// endError is the error cc ends with when reading or writing it failed
// with err: a *lostError for a client that dials again, else an error
// wrapping ErrClientClosed.
func (cc *clientConn) endError(err error) error {
	if cc.c.redial {
		return &lostError{err}
	}
	return fmt.Errorf("%w: %w", ErrClientClosed, err)
}

// roundTrip sends r on cc and waits for its reply. It reports whether the
// request was sent (written, or being written, when cc ended). Returns
// ctx's error if it ends first.
func (cc *clientConn) roundTrip(ctx context.Context, r *rpc) (reply []byte, sent bool, err error) {
	cl, err := cc.send(r)
	if err != nil {
		return nil, false, err
	}
	select {
	case <-cl.done:
		return cl.reply, true, cl.err
	case <-ctx.Done():
		return nil, true, ctx.Err()
	}
}

// serverInfo returns the server's answer to hello on cc, asking it the
// first time.
func (cc *clientConn) serverInfo(ctx context.Context) (ServerInfo, error) {
	cc.mu.Lock()
	info := cc.info
	cc.mu.Unlock()
	if info != nil {
		return *info, nil
	}
	reply, _, err := cc.roundTrip(ctx, helloRPC(""))
	if err != nil {
		return ServerInfo{}, err
	}
	return parseHello(reply)
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
func (cc *clientConn) readLoop() {
	defer cc.c.wg.Done()
	br := bufio.NewReaderSize(cc.nc, 64<<10)
	var buf []byte
	for {
		line, err := readLine(br, &buf)
		if err == nil {
			err = cc.handle(line)
		}
		if err != nil {
			cc.fail(cc.endError(err))
			break
		}
	}
	cc.mu.Lock()
	pending, subs, err := cc.pending, cc.subs, cc.err
	cc.pending, cc.subs = nil, nil
	cc.mu.Unlock()
	for _, cl := range pending {
		cl.err = err
		close(cl.done)
	}
	var lost *lostError
	for _, s := range subs {
		if errors.As(err, &lost) {
			s.end(&UnavailableError{Socket: cc.c.path, Op: "subscribe",
				Err: fmt.Errorf("subscription %d ended with its connection (subscribe again after the last event received): %w", s.id, lost.err)})
			continue
		}
		s.end(err)
	}
	cc.c.mu.Lock()
	delete(cc.c.conns, cc)
	cc.c.mu.Unlock()
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
// reply to the oldest call waiting. A failure with "id": null answers the
// oldest call too: the server could not read its line, or refused the
// connection (forbidden, too many connections) before reading it.
func (cc *clientConn) handle(line []byte) error {
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil {
		return fmt.Errorf("bad line from server: %w", err)
	}
	if env.OK == nil {
		if env.Sub == nil {
			return fmt.Errorf("bad line from server: neither a reply nor a push")
		}
		return cc.push(&env)
	}
	cc.mu.Lock()
	if len(cc.pending) == 0 {
		cc.mu.Unlock()
		if !*env.OK {
			return fmt.Errorf("server sent an error unasked: %v", decodeError(env.Error))
		}
		return errors.New("reply from server to no request")
	}
	cl := cc.pending[0]
	cc.pending[0] = nil
	cc.pending = cc.pending[1:]
	cc.mu.Unlock()
	nullID := len(env.ID) == 0 || string(env.ID) == "null"
	if cl.id != 0 && string(env.ID) != strconv.FormatInt(cl.id, 10) && (*env.OK || !nullID) {
		return fmt.Errorf("reply with id %s to request %d", env.ID, cl.id)
	}
	cl.reply = bytes.Clone(line)
	if *env.OK {
		if cl.onOK != nil {
			cl.onOK(cc, cl.reply)
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
func (cc *clientConn) push(env *envelope) error {
	cc.mu.Lock()
	s := cc.subs[*env.Sub]
	cc.mu.Unlock()
	if s == nil {
		return nil
	}
	if env.Lagged {
		next := &LaggedError{Sub: s.id, NextPos: env.NextPos, NextSeq: -1}
		if env.NextSeq != nil {
			next.NextSeq = *env.NextSeq
		}
		cc.endSub(s.id, next)
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
		cc.endSub(s.id, lag)
		cc.c.wg.Add(1)
		go func() {
			defer cc.c.wg.Done()
			cc.unsubscribe(context.Background(), s.id)
		}()
	}
	return nil
}

// endSub ends subscription id with err; it runs in the reader goroutine.
func (cc *clientConn) endSub(id int64, err error) {
	cc.mu.Lock()
	s := cc.subs[id]
	delete(cc.subs, id)
	cc.mu.Unlock()
	if s != nil {
		s.end(err)
	}
}

// unsubscribe ends subscription sub of cc. A subscription whose connection
// was lost ended with it: nil.
func (cc *clientConn) unsubscribe(ctx context.Context, sub int64) error {
	ctx, cancel := cc.c.callContext(ctx)
	defer cancel()
	_, _, err := cc.roundTrip(ctx, &rpc{op: opUnsubscribe, build: func(dst []byte, id int64) []byte {
		return appendEnd(appendInt(appendRequest(dst, id, "unsubscribe"), "sub", sub))
	}, onOK: func(cc *clientConn, _ []byte) { cc.endSub(sub, ErrUnsubscribed) }})
	var lost *lostError
	if errors.As(err, &lost) {
		return nil
	}
	return err
}
