package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/ipc"
)

// The Go client across restarts of the real daemon: it dials again by
// itself, sends again what is safe to send again, and says clearly what
// it cannot (ipc.Client).

// leaseWorker processes messages job-0, job-1, ... of conversation conv,
// each held with a lease, using only calls the client may send again
// after a lost connection: writes with ExpectedSeq or a token, and reads.
// A message is six events: received, started, two steps, a renewal,
// finished. It tells finished the number of each message it finished,
// stops between two messages once stop is closed, and returns how many it
// finished, or the first error.
func leaseWorker(c *ipc.Client, conv string, finished chan<- int, stop <-chan struct{}) (int, error) {
	ctx := context.Background()
	for n, seq := 0, int64(0); ; n, seq = n+1, seq+6 {
		select {
		case <-stop:
			return n, nil
		default:
		}
		job := fmt.Sprintf("job-%d", n)
		if d, err := c.Receive(ctx, conv, job, ipc.ExpectedSeq(seq)); err != nil || d.Action != conversation.Start {
			return n, fmt.Errorf("receive %s = %+v, %v; want start", job, d, err)
		}
		a, err := c.Start(ctx, conv, job, ipc.Worker("w1"), ipc.Lease(time.Minute), ipc.ExpectedSeq(seq+1))
		if err != nil {
			return n, fmt.Errorf("start %s: %w", job, err)
		}
		for step := range uint32(2) {
			if _, err := c.Step(ctx, conv, job, step, []byte(job), ipc.Token(a.Token)); err != nil {
				return n, fmt.Errorf("step %d of %s: %w", step, job, err)
			}
		}
		if _, err := c.Renew(ctx, conv, job, a.Token, time.Minute, ipc.ExpectedSeq(seq+4)); err != nil {
			return n, fmt.Errorf("renew %s: %w", job, err)
		}
		if _, err := c.Finish(ctx, conv, job, ipc.Token(a.Token)); err != nil {
			return n, fmt.Errorf("finish %s: %w", job, err)
		}
		if ms, err := c.MessageState(ctx, conv, job); err != nil || ms.Status != conversation.StatusFinished || ms.Attempts != 1 {
			return n, fmt.Errorf("state of %s = %+v, %v; want finished after one attempt", job, ms, err)
		}
		select {
		case finished <- n:
		case <-stop:
			return n + 1, nil
		}
	}
}

// TestClient_RestartUnderWorker restarts the daemon under a running
// worker of the Go client, once by SIGKILL and once by SIGTERM: the
// worker goes on with no error, and the log holds each of its writes
// once.
func TestClient_RestartUnderWorker(t *testing.T) {
	d := startDaemon(t)
	c, err := ipc.Dial(context.Background(), d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	finished, stop, done := make(chan int), make(chan struct{}), make(chan struct{})
	var n int
	var werr error
	go func() {
		defer close(done)
		n, werr = leaseWorker(c, "c", finished, stop)
	}()
	await := func(k int) {
		t.Helper()
		for range k {
			select {
			case <-finished:
			case <-done:
				t.Fatalf("worker ended after %d messages: %v", n, werr)
			}
		}
	}

	await(5)
	d.signal(syscall.SIGKILL)
	d.wait()
	d = startDaemonIn(t, d.dir, d.socket, d.db)
	await(5)
	d.signal(syscall.SIGTERM)
	if code := d.wait(); code != 0 {
		t.Fatalf("SIGTERM: exit code %d\n%s", code, d.stderr.String())
	}
	d = startDaemonIn(t, d.dir, d.socket, d.db)
	await(5)
	close(stop)
	<-done
	if werr != nil {
		t.Fatalf("worker: %v", werr)
	}

	events, _, err := c.Read(context.Background(), "c", 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	types := []conversation.Type{conversation.MessageReceived, conversation.ProcessingStarted, conversation.StepCompleted,
		conversation.StepCompleted, conversation.LeaseRenewed, conversation.ProcessingFinished}
	if len(events) != 6*n {
		t.Fatalf("the log holds %d events after %d messages, want %d: a write landed twice, or not at all", len(events), n, 6*n)
	}
	for i, e := range events {
		if job := fmt.Sprintf("job-%d", i/6); e.Seq != int64(i) || e.Type != types[i%6] || e.MessageID != job {
			t.Errorf("event %d = %+v, want %v of %s", i, e, types[i%6], job)
		}
	}
	if out, stderr, code := runCLI(t, d, "check", "--json"); code != 0 {
		t.Errorf("check: %s %s", out, stderr)
	}
}

// TestClient_DaemonDown: a write that is not safe to send twice, sent
// when the daemon dies, fails saying it may or may not have landed;
// while the daemon is down, calls fail after the reconnect timeout naming
// the socket and the dial error; once it is back, the same clients work.
func TestClient_DaemonDown(t *testing.T) {
	d := startDaemon(t)
	p := startProxy(t, d.socket)
	ctx := context.Background()
	direct, err := ipc.Dial(ctx, d.socket, ipc.ReconnectTimeout(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	proxied, err := ipc.Dial(ctx, p.path)
	if err != nil {
		t.Fatal(err)
	}
	defer proxied.Close()
	if _, err := proxied.Receive(ctx, "c", "m"); err != nil {
		t.Fatal(err)
	}

	// The daemon stops before the start reaches it, and is killed once
	// the proxy passed the start on.
	d.signal(syscall.SIGSTOP)
	started := make(chan error, 1)
	go func() {
		_, err := proxied.Start(ctx, "c", "m")
		started <- err
	}()
	for line := range p.forwarded {
		if strings.Contains(line, `"op":"start"`) {
			break
		}
	}
	d.signal(syscall.SIGKILL)
	d.wait()
	err = <-started
	var ue *ipc.UnavailableError
	if !errors.As(err, &ue) || !ue.Sent || ue.Socket != p.path || !errors.Is(err, ipc.CodeUnavailable) ||
		!strings.Contains(err.Error(), "may or may not have taken effect") {
		t.Errorf("Start sent as the daemon died: %v, want an *UnavailableError saying it may or may not have landed", err)
	}

	err = direct.Ping(ctx)
	if !errors.As(err, &ue) || ue.Socket != d.socket || !strings.Contains(err.Error(), d.socket) ||
		!(errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ENOENT)) {
		t.Errorf("Ping while the daemon is down: %v, want an *UnavailableError naming %s and wrapping the dial error", err, d.socket)
	}

	startDaemonIn(t, d.dir, d.socket, d.db)
	if err := direct.Ping(ctx); err != nil {
		t.Errorf("Ping once the daemon is back: %v", err)
	}
	ms, err := proxied.MessageState(ctx, "c", "m")
	if err != nil {
		t.Fatalf("MessageState through the proxy once the daemon is back: %v", err)
	}
	t.Logf("the start whose reply was lost: the message is %v after %d attempts", ms.Status, ms.Attempts)
}

// proxy passes the connections it accepts at path on to a socket, and
// tells forwarded each request line it passed on (dropping them when
// nobody reads). A connection ends on both sides when either side ends.
type proxy struct {
	path      string
	forwarded chan string
}

// startProxy starts a proxy to target; it stops at cleanup.
func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{path: filepath.Join(t.TempDir(), "proxy.sock"), forwarded: make(chan string, 64)}
	l, err := net.Listen("unix", p.path)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Go(func() {
		for {
			client, err := l.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("unix", target)
			if err != nil {
				client.Close()
				continue
			}
			mu.Lock()
			open = append(open, client, server)
			mu.Unlock()
			end := func() { client.Close(); server.Close() }
			wg.Go(func() {
				defer end()
				buf := make([]byte, 64<<10)
				for {
					n, err := server.Read(buf)
					if n > 0 {
						if _, err := client.Write(buf[:n]); err != nil {
							return
						}
					}
					if err != nil {
						return
					}
				}
			})
			wg.Go(func() {
				defer end()
				br := bufio.NewReader(client)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := server.Write([]byte(line)); err != nil {
						return
					}
					select {
					case p.forwarded <- line:
					default:
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, nc := range open {
			nc.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return p
}
