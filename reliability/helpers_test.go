package reliability

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"liminald/internal/daemontest"
	"liminald/ipc"
)

// binary is the liminald binary TestMain builds.
var binary string

func TestMain(m *testing.M) { daemontest.Main(m, &binary) }

// long reports whether the long variants run (LIMINALD_LONG=1).
func long() bool { return os.Getenv("LIMINALD_LONG") == "1" }

// proc is one run of liminald serve.
type proc struct {
	cmd    *exec.Cmd
	stderr *daemontest.Buffer
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// exitCode waits for p to exit and returns its exit code (-1 when killed
// by a signal).
func (p *proc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("daemon did not exit\nstderr:\n%s", p.stderr.String())
	}
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode()
	}
	if p.err != nil {
		t.Fatal(p.err)
	}
	return 0
}

// daemon is a liminald that the test kills and restarts on one database
// and socket. Clients learn of restarts through generations: gen grows by
// one when a stop begins, and ready is closed once the next run is ready.
type daemon struct {
	t      *testing.T
	dir    string
	socket string
	db     string
	start  time.Time // the base of now()
	args   []string  // more arguments of serve
	// unavailable is set for a daemon on PostgreSQL: while the server
	// restarts its writes answer unavailable, and one so answered may have
	// committed (its COMMIT got no answer). The clients treat it as an
	// unknown outcome on a connection that stays up.
	unavailable bool
	// drain, when set, is called once a stopped daemon exited and before
	// the stop is dated: to wait until what the daemon left in flight
	// elsewhere (its PostgreSQL backends' transactions) has ended.
	drain func()

	mu      sync.Mutex
	p       *proc
	gen     int
	ready   chan struct{} // closed when generation gen's daemon is ready
	changed chan struct{} // closed when gen next grows
	stopped []int64       // now() when each generation's daemon had exited
}

// newDaemon starts liminald serve with args besides its socket and
// database, and stops it at cleanup.
func newDaemon(t *testing.T, args ...string) *daemon { return newDaemonOn(t, "", time.Now(), args...) }

// newDaemonOn is newDaemon on database db ("": a SQLite file of its own),
// with start as the base of now(): daemons that share one database share
// one clock.
func newDaemonOn(t *testing.T, db string, start time.Time, args ...string) *daemon {
	t.Helper()
	dir := t.TempDir()
	if db == "" {
		db = filepath.Join(dir, "db.sqlite")
	}
	d := &daemon{t: t, dir: dir, socket: filepath.Join(dir, "s.sock"), db: db,
		start: start, args: args, ready: make(chan struct{}), changed: make(chan struct{})}
	d.p = d.run()
	close(d.ready)
	t.Cleanup(func() {
		d.mu.Lock()
		p := d.p
		d.mu.Unlock()
		select {
		case <-p.exited:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
	return d
}

// now is the monotonic time since the daemon was created, in nanoseconds.
func (d *daemon) now() int64 { return int64(time.Since(d.start)) }

// run starts liminald serve and waits for READY=1 on NOTIFY_SOCKET.
func (d *daemon) run() *proc {
	t := d.t
	t.Helper()
	nl, err := daemontest.ListenNotify(d.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	p := &proc{stderr: &daemontest.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{"serve", "--socket", d.socket, "--db", d.db}, d.args...)...)
	p.cmd.Env = append(daemontest.Env(), "NOTIFY_SOCKET="+nl.Path, "HOME="+d.dir)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	for {
		state, err := nl.Next(30 * time.Second)
		if err != nil {
			p.cmd.Process.Kill()
			<-p.exited
			t.Fatalf("waiting for READY=1: %v\nstderr:\n%s", err, p.stderr.String())
		}
		if strings.HasPrefix(state, "READY=1") {
			return p
		}
	}
}

// restart stops the running daemon with sig, checks its exit (SIGTERM: code
// 0), and starts it again on the same database. It returns now() at the
// moment the old daemon was seen to have exited: no call can take effect
// in the stopped run after it.
func (d *daemon) restart(sig syscall.Signal) int64 { return d.restartWith(sig, nil) }

// restartWith is restart, calling stopped (when not nil) once the old
// daemon exited and before the next one starts: to look at the database
// as the stop left it.
func (d *daemon) restartWith(sig syscall.Signal, stopped func()) int64 {
	t := d.t
	t.Helper()
	d.mu.Lock()
	p := d.p
	d.gen++
	close(d.changed)
	d.changed = make(chan struct{})
	d.ready = make(chan struct{})
	ready := d.ready
	d.mu.Unlock()

	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	code := p.exitCode(t)
	if d.drain != nil {
		d.drain()
	}
	stoppedAt := d.now()
	if sig == syscall.SIGTERM && code != 0 {
		t.Fatalf("SIGTERM: exit code %d, want 0\nstderr:\n%s", code, p.stderr.String())
	}
	if stopped != nil {
		stopped()
	}
	np := d.run()
	d.mu.Lock()
	d.p = np
	d.stopped = append(d.stopped, stoppedAt)
	d.mu.Unlock()
	close(ready)
	return stoppedAt
}

// connect dials the current daemon, waiting for a restart to finish when
// one is under way. It returns the client and the generation it belongs
// to.
func (d *daemon) connect(ctx context.Context) (*ipc.Client, int, error) {
	for {
		d.mu.Lock()
		gen, ready := d.gen, d.ready
		d.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
		// The client does not dial again, nor send again, by itself: the
		// tests model a call whose connection broke as one of unknown
		// outcome, and go on through receive and resume_from.
		c, err := ipc.Dial(ctx, d.socket, ipc.ReconnectTimeout(0))
		if err == nil {
			return c, gen, nil
		}
		if ctx.Err() != nil {
			return nil, 0, ctx.Err()
		}
		// The daemon of gen may have just been stopped: wait for the next.
		if err := d.awaitAfter(ctx, gen); err != nil {
			return nil, 0, fmt.Errorf("dial %s in generation %d: %v", d.socket, gen, err)
		}
	}
}

// dialCheck connects to the current daemon for a check that must end
// within a minute (5 in the long variants, whose checks go over tens of
// thousands of messages), and fails the test if it cannot. done closes
// the client.
func (d *daemon) dialCheck() (ctx context.Context, c *ipc.Client, done func()) {
	d.t.Helper()
	within := time.Minute
	if long() {
		within = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(context.Background(), within)
	c, _, err := d.connect(ctx)
	if err != nil {
		cancel()
		d.t.Fatal(err)
	}
	return ctx, c, func() { c.Close(); cancel() }
}

// awaitAfter waits until a generation after gen has begun. It gives up
// after 30 s: a connection that breaks while no restart is under way is a
// failure.
func (d *daemon) awaitAfter(ctx context.Context, gen int) error {
	d.mu.Lock()
	cur, changed := d.gen, d.changed
	d.mu.Unlock()
	if cur > gen {
		return nil
	}
	select {
	case <-changed:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(30 * time.Second):
		return errors.New("connection broke with no restart under way")
	}
}

// runCheck runs liminald check --db --json and fails the test unless it
// passes.
func (d *daemon) runCheck() string {
	t := d.t
	t.Helper()
	cmd := exec.Command(binary, "check", "--db", d.db, "--json")
	cmd.Env = append(daemontest.Env(), "HOME="+d.dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("liminald check: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), `"ok":true`) {
		t.Fatalf("liminald check --json: %s", stdout.String())
	}
	return strings.TrimSpace(stdout.String())
}

// isReply reports whether err is a reply of the daemon (an *ipc.Error)
// rather than a broken connection.
func isReply(err error) (*ipc.Error, bool) {
	var e *ipc.Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// unavailableReply reports whether err is the daemon's unavailable.
func unavailableReply(err error) bool {
	e, ok := isReply(err)
	return ok && e.Code == ipc.CodeUnavailable
}

// outcomeUnknown reports whether a call that returned err may or may not
// have taken effect: a broken connection, or shutting_down (which the
// daemon answers without writing, but a client treats like the others).
func outcomeUnknown(err error) bool {
	if err == nil {
		return false
	}
	e, ok := isReply(err)
	return !ok || e.Code == ipc.CodeShuttingDown
}
