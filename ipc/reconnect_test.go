package ipc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/sqlitestore"
)

// restartable is a server over one store that a test stops and starts
// again on one socket path, as a daemon restarts.
type restartable struct {
	tb     testing.TB
	store  testStore
	path   string
	srv    *Server
	served chan error
}

// startRestartable starts a server on a new store; it is stopped at
// cleanup if it runs.
func startRestartable(tb testing.TB) *restartable {
	tb.Helper()
	r := &restartable{tb: tb, store: mustOpenStore(tb, sqlitestore.Options{}), path: socketPath(tb)}
	r.start()
	tb.Cleanup(func() {
		if r.srv != nil {
			r.stop()
		}
	})
	return r
}

// start serves on the socket path; the server is ready when it returns.
func (r *restartable) start() {
	r.tb.Helper()
	l, err := net.Listen("unix", r.path)
	if err != nil {
		r.tb.Fatalf("listen: %v", err)
	}
	r.srv = NewServer(Config{Store: r.store, Version: "test"})
	r.served = make(chan error, 1)
	go func() { r.served <- r.srv.Serve(l) }()
}

// stop shuts the server down: it answers what it read, closes its
// connections, and removes the socket file.
func (r *restartable) stop() {
	r.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.srv.Shutdown(ctx); err != nil {
		r.tb.Errorf("Shutdown: %v", err)
	}
	if err := <-r.served; !errors.Is(err, ErrServerClosed) {
		r.tb.Errorf("Serve = %v, want ErrServerClosed", err)
	}
	r.srv = nil
}

// dialPath returns a client of the server at path, closed at cleanup.
func dialPath(tb testing.TB, path string, opts ...ClientOption) *Client {
	tb.Helper()
	c, err := Dial(context.Background(), path, opts...)
	if err != nil {
		tb.Fatalf("Dial: %v", err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

// failWorker records messages m0 to m<n-1> of conversation conv, each
// received, started with a lease and failed, three events, with writes
// that are all safe to send again (ExpectedSeq, a token), while readers
// goroutines pipeline reads on the same client. It tells progress the
// number of each message it recorded, and returns the first error of any
// of them.
func failWorker(c *Client, conv string, n, readers int, progress chan<- int) error {
	ctx := context.Background()
	stop := make(chan struct{})
	errs := make(chan error, readers+1)
	var wg sync.WaitGroup
	for range readers {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := c.State(ctx, conv); err != nil {
					errs <- fmt.Errorf("state: %w", err)
					return
				}
			}
		})
	}
	write := func(i int) error {
		msg, seq := fmt.Sprintf("m%d", i), int64(3*i)
		if d, err := c.Receive(ctx, conv, msg, ExpectedSeq(seq)); err != nil || d.Seq != seq {
			return fmt.Errorf("receive %s = %+v, %v; want seq %d", msg, d, err, seq)
		}
		a, err := c.Start(ctx, conv, msg, ExpectedSeq(seq+1), Worker("w"), Lease(time.Minute))
		if err != nil || a.Token != seq+1 {
			return fmt.Errorf("start %s = %+v, %v; want token %d", msg, a, err, seq+1)
		}
		if _, err := c.Fail(ctx, conv, msg, "boom", Token(a.Token)); err != nil {
			return fmt.Errorf("fail %s: %w", msg, err)
		}
		return nil
	}
	for i := range n {
		if err := write(i); err != nil {
			errs <- err
			break
		}
		progress <- i
	}
	close(stop)
	wg.Wait()
	close(errs)
	return <-errs
}

// TestClient_ReconnectUnderWorker restarts the server three times under a
// worker and readers whose calls are all safe to send again: none of them
// sees an error, and no write landed twice.
func TestClient_ReconnectUnderWorker(t *testing.T) {
	srv := startRestartable(t)
	c := dialPath(t, srv.path)
	const n = 40
	progress, done := make(chan int, n), make(chan error, 1)
	go func() { done <- failWorker(c, "c", n, 4, progress) }()
	for i := range n {
		select {
		case <-progress:
		case err := <-done:
			t.Fatalf("worker ended after %d messages: %v", i, err)
		}
		if i%10 == 9 && i < n-1 {
			srv.stop()
			srv.start()
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	events, next, err := c.Read(context.Background(), "c", 0, 10000)
	if err != nil || len(events) != 3*n || next != 3*n {
		t.Fatalf("Read = %d events, next seq %d, %v; want %d: one for each write", len(events), next, err, 3*n)
	}
	types := []conversation.Type{conversation.MessageReceived, conversation.ProcessingStarted, conversation.ErrorOccurred}
	for i, e := range events {
		if msg := fmt.Sprintf("m%d", i/3); e.Seq != int64(i) || e.Type != types[i%3] || e.MessageID != msg {
			t.Errorf("event %d = %+v, want %v of %s", i, e, types[i%3], msg)
		}
	}
}

// TestClient_DownPastDeadline: while the server is away, a call waits for
// the reconnect timeout and fails with an *UnavailableError naming the
// socket and wrapping the dial error; once the server is back, the same
// client works again, and a write never sent goes to it.
func TestClient_DownPastDeadline(t *testing.T) {
	srv := startRestartable(t)
	c := dialPath(t, srv.path, ReconnectTimeout(100*time.Millisecond))
	ctx := context.Background()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	srv.stop()

	for name, call := range map[string]func() error{
		"Ping":  func() error { return c.Ping(ctx) },
		"Start": func() error { _, err := c.Start(ctx, "c", "m"); return err },
	} {
		err := call()
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.Socket != srv.path || ue.Sent || !errors.Is(err, CodeUnavailable) ||
			!errors.Is(err, syscall.ENOENT) || !strings.Contains(err.Error(), srv.path) {
			t.Errorf("%s while the server is down: %v, want an *UnavailableError naming %s and wrapping ENOENT", name, err, srv.path)
		}
		if e := (*Error)(nil); errors.As(err, &e) {
			t.Errorf("%s while the server is down: %v is an *Error, as if a server answered", name, err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := c.Ping(short); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, CodeUnavailable) || !strings.Contains(err.Error(), srv.path) {
		t.Errorf("Ping with a short ctx while the server is down: %v, want the ctx's deadline, naming %s", err, srv.path)
	}

	srv.start()
	if d, err := c.Receive(ctx, "c", "m"); err != nil || d.Action != conversation.Start {
		t.Fatalf("Receive once the server is back = %+v, %v", d, err)
	}
}

// TestClient_WriteNotSentGoesOn: a write that is not safe to send twice,
// called after the connection was lost but before it was sent, goes to
// the next server.
func TestClient_WriteNotSentGoesOn(t *testing.T) {
	srv := startRestartable(t)
	c := dialPath(t, srv.path)
	ctx := context.Background()
	if _, err := c.Receive(ctx, "c", "m"); err != nil {
		t.Fatal(err)
	}
	srv.stop()
	srv.start()
	if a, err := c.Start(ctx, "c", "m"); err != nil || a.Seq != 1 || a.Duplicate {
		t.Fatalf("Start after a restart = %+v, %v; want seq 1", a, err)
	}
}

// fakeServer is a stand-in for a server on a unix socket: each connection
// it accepts is served by its serve function, which gets the connection's
// number from 0.
type fakeServer struct {
	path string
	wg   sync.WaitGroup
}

// startFake starts a fake server; at cleanup it stops accepting and waits
// for serve to return, once the clients closed their connections (their
// cleanup runs first).
func startFake(t *testing.T, serve func(n int, fc *fakeConn)) *fakeServer {
	t.Helper()
	f := &fakeServer{path: socketPath(t)}
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	f.wg.Go(func() {
		for n := 0; ; n++ {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() {
				defer nc.Close()
				serve(n, &fakeConn{nc: nc, br: bufio.NewReader(nc)})
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		f.wg.Wait()
	})
	return f
}

// fakeConn is a connection of a fake server.
type fakeConn struct {
	nc net.Conn
	br *bufio.Reader
}

// fakeRequest is what a fake server reads of a request.
type fakeRequest struct {
	ID json.RawMessage `json:"id"`
	Op string          `json:"op"`
}

// next reads the next request; false when the connection ended.
func (fc *fakeConn) next() (fakeRequest, bool) {
	line, err := fc.br.ReadBytes('\n')
	if err != nil {
		return fakeRequest{}, false
	}
	var r fakeRequest
	return r, json.Unmarshal(line, &r) == nil
}

// reply answers r with the JSON object members rest (after "ok":true, or
// the error object for a failure: rest then begins with "error").
func (fc *fakeConn) reply(r fakeRequest, ok bool, rest string) {
	line := fmt.Sprintf(`{"id":%s,"ok":%t`, r.ID, ok)
	if rest != "" {
		line += "," + rest
	}
	fc.nc.Write([]byte(line + "}\n"))
}

// TestClient_LostAfterSent: a write not safe to send twice whose
// connection is lost after it was sent fails with an *UnavailableError
// that says it may or may not have landed; a safe call is sent again on a
// new connection and answered.
func TestClient_LostAfterSent(t *testing.T) {
	var pings atomic.Int64
	f := startFake(t, func(_ int, fc *fakeConn) {
		for {
			r, ok := fc.next()
			if !ok {
				return
			}
			switch {
			case r.Op == "hello":
				fc.reply(r, true, `"protocol":2,"server":{"name":"liminald","version":"fake"},"ops":[],"limits":{}`)
			case r.Op == "ping" && pings.Add(1) > 1:
				fc.reply(r, true, "")
			default:
				return // the connection is lost with the request unanswered
			}
		}
	})
	c := dialPath(t, f.path)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"Start":        func() error { _, err := c.Start(ctx, "c", "m"); return err },
		"ReceiveNoSeq": func() error { _, err := c.Receive(ctx, "c", "m"); return err },
		"RenewNoSeq":   func() error { _, err := c.Renew(ctx, "c", "m", 1, time.Second); return err },
		"DoFinishNoSeq": func() error {
			_, err := c.Do(ctx, []byte(`{"op":"finish","conversation":"c","message_id":"m"}`))
			return err
		},
	} {
		err := call()
		var ue *UnavailableError
		if !errors.As(err, &ue) || !ue.Sent || ue.Socket != f.path || !ue.Retryable() || !errors.Is(err, CodeUnavailable) ||
			!strings.Contains(err.Error(), "may or may not have taken effect") || !strings.Contains(err.Error(), f.path) {
			t.Errorf("%s on a connection lost after it was sent: %v, want an *UnavailableError that was sent, naming %s", name, err, f.path)
		}
		if e := (*Error)(nil); errors.As(err, &e) {
			t.Errorf("%s: %v is an *Error, as if a server answered", name, err)
		}
	}
	if err := c.Ping(ctx); err != nil || pings.Load() != 2 {
		t.Errorf("Ping, whose first connection is lost under it: %v after %d pings, want it sent again and answered", err, pings.Load())
	}
}

// TestClient_ShuttingDown: a safe call answered shutting_down is sent to
// the next server; a write that is not safe gets the *Error, and the next
// call goes to a new connection.
func TestClient_ShuttingDown(t *testing.T) {
	f := startFake(t, func(n int, fc *fakeConn) {
		for {
			r, ok := fc.next()
			if !ok {
				return
			}
			if n%2 == 0 {
				// A stopping server answers shutting_down, and then ends the
				// connection (here once the client sent something more, or
				// closed it).
				fc.reply(r, false, `"error":{"code":"shutting_down","message":"the daemon is shutting down","retryable":true}`)
				continue
			}
			fc.reply(r, true, `"seq":7`)
		}
	})
	c := dialPath(t, f.path)
	ctx := context.Background()
	if err := c.Ping(ctx); err != nil {
		t.Errorf("Ping answered shutting_down, then ok by the next server: %v", err)
	}
	if a, err := c.Finish(ctx, "c", "m", ExpectedSeq(7)); err != nil || a.Seq != 7 {
		t.Errorf("Finish with ExpectedSeq = %+v, %v; want it answered by the second server", a, err)
	}
	// The second connection is still the client's: the fake's third is the
	// next to answer shutting_down.
	c2 := dialPath(t, f.path)
	if _, err := c2.Start(ctx, "c", "m"); !errors.Is(err, CodeShuttingDown) {
		t.Errorf("Start answered shutting_down: %v, want the *Error", err)
	}
	if a, err := c2.Start(ctx, "c", "m"); err != nil || a.Seq != 7 {
		t.Errorf("Start after shutting_down = %+v, %v; want it sent on a new connection", a, err)
	}
}

// TestClient_Protocol1: against a server of protocol 1, a call using a
// protocol-2 feature fails with a *ProtocolError and is never sent; hello
// is asked once per connection; calls of protocol 1 go on.
func TestClient_Protocol1(t *testing.T) {
	ops := make(chan string, 64)
	f := startFake(t, func(n int, fc *fakeConn) {
		for {
			r, ok := fc.next()
			if !ok {
				return
			}
			ops <- r.Op
			switch {
			case r.Op == "hello":
				fc.reply(r, true, `"protocol":1,"server":{"name":"liminald","version":"0.9"},"ops":["hello","ping","start"],"limits":{"max_line_bytes":1048576}`)
			case r.Op == "ping" && n == 0:
				return // lose the first connection under its ping
			default:
				fc.reply(r, true, `"seq":1`)
			}
		}
	})
	c := dialPath(t, f.path)
	ctx := context.Background()
	for name, call := range map[string]func() error{
		"StartWithLease":     func() error { _, err := c.Start(ctx, "c", "m", Worker("w"), Lease(time.Minute)); return err },
		"StepWithToken":      func() error { _, err := c.Step(ctx, "c", "m", 0, nil, Token(1)); return err },
		"ReceiveFingerprint": func() error { _, err := c.Receive(ctx, "c", "m", Fingerprint("sha:1")); return err },
		"DecideSentAt":       func() error { _, err := c.Decide(ctx, "c", "m", SentAt(5)); return err },
		"Renew":              func() error { _, err := c.Renew(ctx, "c", "m", 1, time.Second); return err },
		"Messages":           func() error { _, _, err := c.Messages(ctx, "c", "", "", 0); return err },
		"Explain":            func() error { _, err := c.Explain(ctx, "c", "m"); return err },
		"DoLease": func() error {
			_, err := c.Do(ctx, []byte(`{"op":"start","conversation":"c","message_id":"m","lease_ms":1000}`))
			return err
		},
	} {
		err := call()
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Have != 1 || pe.Need != 2 || pe.Socket != f.path || !strings.Contains(err.Error(), "protocol 1") {
			t.Errorf("%s against protocol 1: %v, want a *ProtocolError", name, err)
		}
	}
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("Ping, sent again on a second connection: %v", err)
	}
	if _, err := c.Start(ctx, "c", "m", Lease(time.Minute)); !errors.As(err, new(*ProtocolError)) {
		t.Errorf("Start with a lease on the second connection: %v, want a *ProtocolError", err)
	}
	if a, err := c.Start(ctx, "c", "m"); err != nil || a.Seq != 1 {
		t.Errorf("Start without protocol 2 = %+v, %v; want it sent", a, err)
	}
	var got []string
	for len(ops) > 0 {
		got = append(got, <-ops)
	}
	if want := "hello ping ping hello start"; strings.Join(got, " ") != want {
		t.Errorf("the fake read %q, want %q: one hello per connection, and nothing of protocol 2", strings.Join(got, " "), want)
	}
}

// TestClient_StreamEndsWithConnection: a subscription ends with its
// connection with an *UnavailableError; subscribing again from the
// position after the last event goes on without a gap.
func TestClient_StreamEndsWithConnection(t *testing.T) {
	srv := startRestartable(t)
	c := dialPath(t, srv.path)
	ctx := context.Background()
	s, err := c.Subscribe(ctx, "c", FromSeq(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Receive(ctx, "c", "a"); err != nil {
		t.Fatal(err)
	}
	first, err := s.Next(ctx)
	if err != nil || first.MessageID != "a" {
		t.Fatalf("Next = %+v, %v", first, err)
	}
	srv.stop()
	var ue *UnavailableError
	if _, err := s.Next(ctx); !errors.As(err, &ue) || ue.Socket != srv.path {
		t.Errorf("Next after the connection was lost: %v, want an *UnavailableError naming %s", err, srv.path)
	}
	if err := s.Close(); err != nil {
		t.Errorf("Close of a stream whose connection was lost: %v", err)
	}
	srv.start()
	if _, err := c.Receive(ctx, "c", "b"); err != nil {
		t.Fatal(err)
	}
	s, err = c.Subscribe(ctx, "c", FromSeq(first.Seq+1))
	if err != nil {
		t.Fatal(err)
	}
	if e, err := s.Next(ctx); err != nil || e.MessageID != "b" || e.Seq != first.Seq+1 {
		t.Errorf("Next after subscribing again = %+v, %v; want b at seq %d", e, err, first.Seq+1)
	}
	if err := c.Unsubscribe(ctx, s.ID()); err != nil {
		t.Errorf("Unsubscribe: %v", err)
	}
	if _, err := s.Next(ctx); !errors.Is(err, ErrUnsubscribed) {
		t.Errorf("Next after Unsubscribe: %v, want ErrUnsubscribed", err)
	}
}

// TestClient_NoReconnect: a client made by NewClient, or by Dial with
// ReconnectTimeout(0), ends with its connection, as before.
func TestClient_NoReconnect(t *testing.T) {
	srv := startRestartable(t)
	nc, err := net.Dial("unix", srv.path)
	if err != nil {
		t.Fatal(err)
	}
	clients := map[string]*Client{"NewClient": NewClient(nc), "ReconnectTimeout(0)": dialPath(t, srv.path, ReconnectTimeout(0))}
	defer clients["NewClient"].Close()
	ctx := context.Background()
	for _, c := range clients {
		if err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
	}
	srv.stop()
	srv.start()
	for name, c := range clients {
		if err := c.Ping(ctx); !errors.Is(err, ErrClientClosed) {
			t.Errorf("%s: Ping after a restart: %v, want ErrClientClosed", name, err)
		}
	}
}

// TestClient_CallTimeout: a call whose ctx has no deadline ends after the
// client's CallTimeout when no reply comes.
func TestClient_CallTimeout(t *testing.T) {
	f := startFake(t, func(_ int, fc *fakeConn) {
		for {
			if _, ok := fc.next(); !ok {
				return
			}
		}
	})
	c := dialPath(t, f.path, CallTimeout(50*time.Millisecond))
	if err := c.Ping(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ping of a server that never answers: %v, want context.DeadlineExceeded", err)
	}
}

// TestDefaultSocket: the client finds the socket as the daemon does:
// LIMINAL_SOCKET, then the default of the user; Dial of "" dials it.
func TestDefaultSocket(t *testing.T) {
	srv := startRestartable(t)
	t.Setenv("LIMINAL_SOCKET", srv.path)
	if got := DefaultSocket(); got != srv.path {
		t.Errorf("DefaultSocket() = %q with LIMINAL_SOCKET=%s", got, srv.path)
	}
	c := dialPath(t, "")
	if err := c.Ping(context.Background()); err != nil {
		t.Errorf("Ping of the client of Dial(\"\"): %v", err)
	}
	t.Setenv("LIMINAL_SOCKET", "")
	t.Setenv("XDG_RUNTIME_DIR", "/run/user/4242")
	if got, want := DefaultSocket(), filepath.Join("/run/user/4242", "liminald", "liminald.sock"); got != want {
		t.Errorf("DefaultSocket() = %q, want %q", got, want)
	}
}

// TestRetrySafe: the calls sent again after a lost connection are the
// reads and the writes the server answers as duplicates.
func TestRetrySafe(t *testing.T) {
	for _, tc := range []struct {
		op                 op
		expectedSeq, token bool
		want               bool
	}{
		{opPing, false, false, true}, {opDecide, false, false, true}, {opExplain, false, false, true},
		{opSubscribe, false, false, true}, {opUnsubscribe, false, false, false}, {0, false, false, false},
		{opReceive, false, false, false}, {opReceive, true, false, true},
		{opStart, false, false, false}, {opStart, true, false, true},
		{opStep, false, true, true}, {opFinish, false, true, true}, {opFail, false, true, true}, {opFail, false, false, false},
		{opRenew, false, true, false}, {opRenew, true, true, true}, {opRelease, false, false, false},
	} {
		if got := retrySafe(tc.op, tc.expectedSeq, tc.token); got != tc.want {
			t.Errorf("retrySafe(%v, expected_seq %t, token %t) = %t, want %t", tc.op, tc.expectedSeq, tc.token, got, tc.want)
		}
	}
}
