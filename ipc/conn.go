package ipc

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"liminald/conversation"
)

// conn is one client connection. Its reader goroutine (serve) reads and
// dispatches requests; its writer goroutine (writeLoop) writes replies in
// request order and pushes as they come; each subscription, and each
// request in flight that must wait for an earlier one or reads the store
// while others are in flight, has its own goroutine. A write needs none:
// the store answers it through a callback. serve owns them all and
// returns once they ended.
//
// A request read while no other is in flight, and answered without a
// write to the store (a ping, a read, a receive the store settles at once:
// see settler), is answered by the reader itself, straight into the
// socket's buffer: every earlier reply is in that buffer already, so the
// order holds, and the reply costs no hand-off to another goroutine.
type conn struct {
	srv *Server
	nc  net.Conn
	log *slog.Logger

	// draining is set when Shutdown began: requests read from then on get
	// shutting_down.
	draining atomic.Bool

	// free holds the slots not in use: taking one is how the reader waits
	// when MaxInflight requests are unanswered. pending holds the slots in
	// use, in request order, for the writer.
	free    chan *slot
	pending chan *slot
	// pushes are the subscriptions' lines, for the writer.
	pushes chan push
	// catchUpTurn is held by the subscription whose catch-up reads a page
	// and hands it to the writer: one page in hand per connection.
	catchUpTurn chan struct{}

	// ctx ends the connection's subscriptions, and its store calls when
	// Shutdown stops waiting or the connection broke.
	ctx    context.Context
	cancel context.CancelFunc

	reqs       sync.WaitGroup // request goroutines
	subs       sync.WaitGroup // subscription goroutines
	writerDone chan struct{}

	// The reader's own:
	lr        *lineReader
	unflushed bool                     // it wrote replies itself since it last flushed
	chains    map[string]chan struct{} // per conversation, the latest request on it
	lastSub   int64
	requests  int64

	mu     sync.Mutex
	active map[int64]*subscription // guarded by mu

	// The writer's, and the reader's when it answers a request itself
	// (direct), guarded by wmu:
	wmu  sync.Mutex
	bw   *bufio.Writer
	werr error
}

// slot is a request in flight and the buffer of its reply.
type slot struct {
	req request
	buf []byte
	// A write's outcome, which the writer goroutine encodes into buf
	// when encode is set: the store's callback only hands it over.
	out    conversation.Outcome
	steps  []conversation.StepRecord // a receive's resume, with_steps
	err    error
	began  time.Time
	encode bool
	// ready gets a token when buf holds the whole reply.
	ready chan struct{}
	// written, when set, is closed once the reply was handed to the socket's
	// buffer (or dropped because the connection broke).
	written chan struct{}
}

// push is one or more lines of a subscription.
type push struct {
	sub *subscription
	buf []byte
	// written, when set, is closed once buf was handed to the socket's
	// buffer (or dropped).
	written chan struct{}
}

func newConn(s *Server, nc net.Conn, id uint64) *conn {
	c := &conn{
		srv:         s,
		nc:          nc,
		log:         s.log.With("conn", id, "remote", remoteName(nc)),
		free:        make(chan *slot, MaxInflight),
		pending:     make(chan *slot, MaxInflight),
		pushes:      make(chan push, s.subBuffer),
		catchUpTurn: make(chan struct{}, 1),
		writerDone:  make(chan struct{}),
		lr:          newLineReader(nc, 16<<10),
		chains:      make(map[string]chan struct{}),
		active:      make(map[int64]*subscription),
	}
	c.ctx, c.cancel = context.WithCancel(s.ctx)
	for range MaxInflight {
		c.free <- &slot{ready: make(chan struct{}, 1)}
	}
	c.bw = bufio.NewWriterSize(deadlineWriter{nc, s.writeTimeout}, 32<<10)
	return c
}

func remoteName(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil && a.String() != "" {
		return a.String()
	}
	return "@"
}

// deadlineWriter gives every write to a connection a deadline.
type deadlineWriter struct {
	nc      net.Conn
	timeout time.Duration
}

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.nc.SetWriteDeadline(time.Now().Add(w.timeout))
	return w.nc.Write(p)
}

// drain starts the end of the connection for Shutdown: requests read from
// now on get shutting_down, and reading stops after grace.
func (c *conn) drain(grace time.Duration) {
	if c.draining.CompareAndSwap(false, true) {
		c.nc.SetReadDeadline(time.Now().Add(grace))
	}
}

// serve serves the connection until the client stops sending, the
// connection breaks or Shutdown ends it; then it answers every request
// read, ends the subscriptions, flushes and closes.
func (c *conn) serve() {
	defer c.nc.Close()
	defer c.cancel()
	if c.srv.admit != nil {
		if err := c.srv.admit(c.nc); err != nil {
			c.log.Debug("connection refused", "err", err)
			c.srv.refuse(c.nc, wireError(err))
			return
		}
	}
	c.log.Debug("connection opened")
	go c.writeLoop()
	err := c.readLoop()
	c.reqs.Wait()
	c.cancel()
	c.subs.Wait()
	close(c.pending)
	close(c.pushes)
	<-c.writerDone
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed),
		c.draining.Load() && errors.Is(err, os.ErrDeadlineExceeded):
		err = nil
	}
	if err == nil {
		err = c.werr
	}
	c.log.Debug("connection closed", "requests", c.requests, "err", err)
}

// readLoop reads and dispatches requests until reading fails.
func (c *conn) readLoop() error {
	lr := c.lr
	for {
		if c.unflushed && !lr.hasLine() {
			// The replies written here go out before the reader waits.
			c.wmu.Lock()
			c.flush()
			c.wmu.Unlock()
			c.unflushed = false
		}
		line, tooLong, err := lr.next(c.srv.maxLineBytes)
		if err != nil {
			return err
		}
		if !tooLong && blank(line) {
			continue
		}
		sl := <-c.free // with MaxInflight unanswered, wait for a reply to go out
		c.requests++
		// With no other request in flight, every earlier reply is in the
		// socket's buffer.
		direct := len(c.free) == MaxInflight-1
		if tooLong {
			c.answer(sl, direct, appendFailure(sl.buf, nil, &Error{Code: CodeLineTooLong,
				Message: fmt.Sprintf("line is over the limit of %d bytes", lr.limit)}))
			continue
		}
		c.dispatch(sl, line, direct)
	}
}

// reply hands the finished reply buf of sl, queued for the writer, to it.
func (c *conn) reply(sl *slot, buf []byte) {
	sl.buf = buf
	sl.ready <- struct{}{}
}

// answer answers the request of sl, not yet queued for the writer, with
// its reply buf: when direct (no other request in flight), the reader
// writes it itself, to be flushed before it next waits to read (readLoop);
// otherwise it queues sl for the writer with its reply.
func (c *conn) answer(sl *slot, direct bool, buf []byte) {
	if !direct {
		c.pending <- sl
		c.reply(sl, buf)
		return
	}
	c.wmu.Lock()
	c.write(buf)
	c.wmu.Unlock()
	c.unflushed = true
	sl.buf = buf
	c.release(sl)
}

// settler is a Store that can answer a write its durable state already
// settles, without queueing it: see sqlitestore.Store.Settle.
type settler interface {
	Settle(cmd *conversation.Command) (conversation.Outcome, bool)
}

// dispatch decodes the request on line into sl and answers it: inline when
// that is immediate, or when direct (no other request in flight) and it
// needs no write to the store; through the store's callback for a write;
// in a goroutine of its own for a read that must wait, or runs beside
// others.
func (c *conn) dispatch(sl *slot, line []byte, direct bool) {
	r := &sl.req
	if err := r.parse(line); err != nil {
		c.answer(sl, direct, c.srv.appendError(sl.buf, r, err))
		return
	}
	if c.draining.Load() {
		c.answer(sl, direct, appendFailure(sl.buf, r.id, &Error{Code: CodeShuttingDown, Message: "the daemon is shutting down"}))
		return
	}
	switch r.op {
	case opHello, opPing:
		if r.op == opHello {
			c.log.Debug("hello", "client", r.client)
		}
		c.answer(sl, direct, c.srv.exec(c.ctx, r, sl.buf))
		return
	case opUnsubscribe:
		c.answer(sl, direct, c.unsubscribe(sl.buf, r))
		return
	}
	if direct && c.lr.r.Buffered() == 0 {
		// A client waiting for each reply: a read runs here, as does a
		// receive the store settles without its writer.
		if !r.op.isWrite() && r.op != opSubscribe {
			c.answer(sl, true, c.srv.exec(c.ctx, r, sl.buf))
			return
		}
		if st, ok := c.srv.store.(settler); ok && r.op == opReceive {
			began := time.Now()
			if o, ok := st.Settle(&r.cmd); ok {
				steps, err := c.srv.stepsAsked(c.ctx, r, r.cmd.Conversation, r.cmd.MessageID, o.Decision)
				c.answer(sl, true, c.srv.appendWrite(sl.buf, r, o, steps, err, began))
				return
			}
		}
	}
	c.pending <- sl
	after, done := c.order(r)
	if r.op == opSubscribe {
		c.subscribe(sl, after, done)
		return
	}
	if r.op.isWrite() {
		c.submit(sl, after, done)
		return
	}
	c.reqs.Add(1)
	go func() {
		defer c.reqs.Done()
		if done != nil {
			defer close(done)
		}
		if !c.wait(c.ctx, after) {
			c.reply(sl, appendFailure(sl.buf, r.id, &Error{Code: CodeShuttingDown, Message: "the daemon is shutting down"}))
			return
		}
		c.reply(sl, c.srv.exec(c.ctx, r, sl.buf))
	}()
}

// submit hands the write request of sl to the store, once the requests of
// after are done, and closes done when it is answered. The store's
// callback hands the outcome to the writer goroutine, which encodes the
// reply: nothing the connection does runs on the store's goroutine.
func (c *conn) submit(sl *slot, after []chan struct{}, done chan struct{}) {
	c.reqs.Add(1)
	began := time.Now()
	answered := func() {
		if done != nil {
			close(done)
		}
		c.reqs.Done()
	}
	send := func() {
		c.srv.store.WriteAsync(c.ctx, sl.req.cmd, func(o conversation.Outcome, err error) {
			sl.out, sl.err, sl.began, sl.encode = o, err, began, true
			if err != nil || !sl.req.withSteps || o.Decision.Action != conversation.Resume {
				sl.ready <- struct{}{}
				answered()
				return
			}
			// A resume asked with_steps: its steps are read off the
			// store's goroutine, and before the request counts as
			// answered, so that the next request on its conversation
			// waits for the read. The read ends even if the connection
			// does: its reply is still owed.
			go func() {
				cmd := &sl.req.cmd
				sl.steps, sl.err = c.srv.resumeSteps(context.WithoutCancel(c.ctx), cmd.Conversation, cmd.MessageID, o.Decision)
				sl.ready <- struct{}{}
				answered()
			}()
		})
	}
	if len(after) == 0 {
		send()
		return
	}
	go func() {
		if !c.wait(c.ctx, after) {
			c.reply(sl, appendFailure(sl.buf, sl.req.id, &Error{Code: CodeShuttingDown, Message: "the daemon is shutting down"}))
			answered()
			return
		}
		send()
	}()
}

// order returns the requests r must wait for, and for a request on one
// conversation the channel to close once it is done, which the next
// request on that conversation waits for. A conversations request waits
// for every request before it; stats waits for none. See the package
// documentation for why.
func (c *conn) order(r *request) (after []chan struct{}, done chan struct{}) {
	conv := r.conv
	if r.op.isWrite() {
		conv = r.cmd.Conversation
	}
	switch {
	case r.op == opStats:
		return nil, nil
	case r.op == opConversations || (r.op == opSubscribe && conv == ""):
		c.prune()
		for _, ch := range c.chains {
			after = append(after, ch)
		}
		return after, nil
	}
	if prev := c.chains[conv]; prev != nil && !closed(prev) {
		after = []chan struct{}{prev}
	}
	done = make(chan struct{})
	c.chains[conv] = done
	if len(c.chains) > 2*MaxInflight {
		c.prune()
	}
	return after, done
}

// prune forgets the conversations whose latest request is done.
func (c *conn) prune() {
	for conv, ch := range c.chains {
		if closed(ch) {
			delete(c.chains, conv)
		}
	}
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// wait waits for every channel of after to close. Returns false if ctx
// ended first.
func (c *conn) wait(ctx context.Context, after []chan struct{}) bool {
	for _, ch := range after {
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// writeLoop writes the replies in request order, and the pushes as they
// come, until both queues are closed. It flushes whenever nothing more is
// ready. After a failed write it keeps taking replies and pushes, to free
// the slots and the goroutines that wait on it, but writes nothing.
func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var head *slot
	pending, pushes := c.pending, c.pushes
	for head != nil || pending != nil || pushes != nil {
		var ready chan struct{}
		var next chan *slot
		if head != nil {
			ready = head.ready
		} else {
			next = pending
		}
		select {
		case <-ready:
			c.writeReply(head)
			head = nil
			continue
		case sl, ok := <-next:
			head, pending = sl, keepIf(ok, pending)
			continue
		case p, ok := <-pushes:
			if ok {
				c.writePush(p)
			} else {
				pushes = nil
			}
			continue
		default:
		}
		c.wmu.Lock()
		c.flush()
		c.wmu.Unlock()
		select {
		case <-ready:
			c.writeReply(head)
			head = nil
		case sl, ok := <-next:
			head, pending = sl, keepIf(ok, pending)
		case p, ok := <-pushes:
			if ok {
				c.writePush(p)
			} else {
				pushes = nil
			}
		}
	}
	c.wmu.Lock()
	c.flush()
	c.wmu.Unlock()
}

func keepIf[T any](ok bool, ch chan T) chan T {
	if ok {
		return ch
	}
	return nil
}

func (c *conn) writeReply(sl *slot) {
	if sl.encode {
		sl.buf = c.srv.appendWrite(sl.buf, &sl.req, sl.out, sl.steps, sl.err, sl.began)
		sl.out, sl.steps, sl.err, sl.encode = conversation.Outcome{}, nil, nil, false
	}
	c.wmu.Lock()
	c.write(sl.buf)
	c.wmu.Unlock()
	if sl.written != nil {
		close(sl.written)
		sl.written = nil
	}
	c.release(sl)
}

// release gives back the slot of a request answered.
func (c *conn) release(sl *slot) {
	if cap(sl.buf) > 16<<10 { // do not keep a big reply's buffer
		sl.buf = nil
	} else {
		sl.buf = sl.buf[:0]
	}
	c.free <- sl
}

// writePush writes p, unless its subscription was unsubscribed, and tells
// whoever waits that it is written.
func (c *conn) writePush(p push) {
	if !p.sub.unsubscribed.Load() {
		c.wmu.Lock()
		c.write(p.buf)
		c.wmu.Unlock()
	}
	if p.written != nil {
		close(p.written)
	}
}

// write and flush write to the socket's buffer; wmu must be held.
func (c *conn) write(b []byte) {
	if c.werr != nil {
		return
	}
	if _, err := c.bw.Write(b); err != nil {
		c.broke(err)
	}
}

func (c *conn) flush() {
	if c.werr != nil || c.bw.Buffered() == 0 {
		return
	}
	if err := c.bw.Flush(); err != nil {
		c.broke(err)
	}
}

// broke ends a connection that cannot be written: the reader stops, and
// the subscriptions and store calls end.
func (c *conn) broke(err error) {
	c.werr = fmt.Errorf("write: %w", err)
	c.nc.Close()
	c.cancel()
}
