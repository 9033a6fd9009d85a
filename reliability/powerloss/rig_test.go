//go:build linux

package powerloss

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
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"liminald/internal/daemontest"
	"liminald/internal/lazyfs"
	"liminald/internal/testenv"
	"liminald/ipc"
)

// binary is the liminald binary TestMain builds.
var binary string

func TestMain(m *testing.M) { daemontest.Main(m, &binary) }

// long reports whether the long variant runs (LIMINALD_LONG=1).
func long() bool { return os.Getenv("LIMINALD_LONG") == "1" }

// dbName is the database's path on the lazy filesystem, in directories
// that do not exist until the daemon makes them (as it does for its
// default path, ~/.local/state/liminald/liminald.db, on a new machine),
// unless the test puts a database there first.
const dbName = "state/liminald/liminald.db"

// rig is a liminald whose database lives on a lazy filesystem, whose power
// the test cuts: the daemon is killed, the filesystem keeps what was
// synced, and the daemon restarts on it. Clients learn of cuts through
// generations: gen grows by one when a cut begins, and ready is closed once
// the next run is up and verified.
type rig struct {
	t              *testing.T
	backing, mnt   string
	socket, home   string
	sync           string // serve --sync
	ignoreDatasync bool   // the filesystem drops fdatasync
	trigger        atomic.Pointer[func(lazyfs.Op) bool]
	cuts           int

	datasyncMu sync.Mutex
	datasyncs  map[string]int // fdatasyncs, by file

	mu      sync.Mutex
	fs      *lazyfs.FS
	p       *proc
	gen     int
	ready   chan struct{} // closed when generation gen's daemon is ready
	opened  bool          // ready is closed
	changed chan struct{} // closed when gen next grows
}

// proc is one run of liminald serve.
type proc struct {
	cmd    *exec.Cmd
	stderr *daemontest.Buffer
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// newRig mounts a lazy filesystem of a new backing directory, after seed
// (if not nil) put files in it, for a liminald with serve --sync sync. It
// starts no daemon. Everything is stopped and unmounted at the end of the
// test.
func newRig(t *testing.T, sync string, ignoreDatasync bool, seed func(backing string)) *rig {
	t.Helper()
	testenv.NeedRoot(t, "mounting a FUSE filesystem")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "/dev/fuse: %v", err)
	}
	r := &rig{t: t, backing: t.TempDir(), mnt: t.TempDir(), home: t.TempDir(), sync: sync, ignoreDatasync: ignoreDatasync,
		ready: make(chan struct{}), changed: make(chan struct{}), datasyncs: make(map[string]int)}
	r.socket = filepath.Join(r.home, "s.sock")
	if seed != nil {
		seed(r.backing)
	}
	r.mount()
	t.Cleanup(func() {
		r.mu.Lock()
		p, fs := r.p, r.fs
		r.mu.Unlock()
		if p != nil {
			p.cmd.Process.Kill()
			<-p.exited
		}
		if fs != nil {
			if err := fs.Unmount(); err != nil {
				t.Errorf("unmount: %v", err)
			}
		}
	})
	return r
}

// mount mounts the lazy filesystem anew on the backing directory; what it
// holds counts as synced, as a disk's does when the machine starts.
func (r *rig) mount() {
	fs, err := lazyfs.Mount(r.mnt, r.backing, lazyfs.Options{
		IgnoreDatasync: r.ignoreDatasync,
		OnOp: func(op lazyfs.Op) bool {
			if op.Kind == lazyfs.Fdatasync {
				r.datasyncMu.Lock()
				r.datasyncs[op.Path]++
				r.datasyncMu.Unlock()
			}
			if f := r.trigger.Load(); f != nil {
				return (*f)(op)
			}
			return false
		},
	})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	r.fs = fs
	r.mu.Unlock()
}

// onlySyncerDatasyncs fails the test unless every fdatasync on the
// filesystem so far was of the WAL: the syncer's (SQLite syncs with fsync).
func (r *rig) onlySyncerDatasyncs() {
	r.t.Helper()
	r.datasyncMu.Lock()
	defer r.datasyncMu.Unlock()
	for p, n := range r.datasyncs {
		if p != dbName+"-wal" {
			r.t.Fatalf("%d fdatasyncs of %s: only the syncer's, of the WAL, were expected (%v)", n, p, r.datasyncs)
		}
	}
	if r.sync == "full" && r.datasyncs[dbName+"-wal"] == 0 {
		r.t.Fatalf("no fdatasync of the WAL with --sync full")
	}
}

// arm makes f decide, from the next operation on, whether the power goes
// out before it; nil disarms.
func (r *rig) arm(f func(lazyfs.Op) bool) {
	if f == nil {
		r.trigger.Store(nil)
		return
	}
	r.trigger.Store(&f)
}

// db is the path of the database on the lazy filesystem.
func (r *rig) db() string { return filepath.Join(r.mnt, dbName) }

// start starts liminald serve with args besides its socket, database and
// sync, and waits for READY=1. It reports false if the daemon exited
// first, as it does when the power goes out while it opens the database.
func (r *rig) start(args ...string) bool {
	t := r.t
	t.Helper()
	nl, err := daemontest.ListenNotify(r.home)
	if err != nil {
		t.Fatal(err)
	}
	defer nl.Close()
	p := &proc{stderr: &daemontest.Buffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(binary, append([]string{"serve", "--socket", r.socket, "--db", r.db(), "--sync", r.sync}, args...)...)
	p.cmd.Env = append(daemontest.Env(), "NOTIFY_SOCKET="+nl.Path, "HOME="+r.home)
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.exited) }()
	r.mu.Lock()
	r.p = p
	r.mu.Unlock()
	states := make(chan string)
	go func() {
		defer close(states)
		for {
			state, err := nl.Next(time.Minute)
			if err != nil {
				return
			}
			states <- state
		}
	}()
	for {
		select {
		case state, ok := <-states:
			if !ok {
				t.Fatalf("no READY=1 from liminald within a minute\nstderr:\n%s", p.stderr.String())
			}
			if strings.HasPrefix(state, "READY=1") {
				go func() {
					for range states {
					}
				}()
				return true
			}
		case <-p.exited:
			go func() {
				for range states {
				}
			}()
			return false
		}
	}
}

// cut cuts the power, if OnOp did not already: the filesystem drops what
// was not synced, the daemon dies, and the filesystem is unmounted. The
// clients see a new generation begin. It returns what the cut took away.
func (r *rig) cut() lazyfs.Loss {
	t := r.t
	t.Helper()
	r.arm(nil)
	r.nextGen()
	r.mu.Lock()
	fs, p := r.fs, r.p
	r.mu.Unlock()
	loss, err := fs.Cut()
	if err != nil {
		t.Fatal(err)
	}
	r.cuts++
	p.cmd.Process.Kill()
	<-p.exited
	if err := fs.Unmount(); err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	r.fs, r.p = nil, nil
	r.mu.Unlock()
	return loss
}

// nextGen begins the next generation: the clients whose calls fail from
// now on wait for the next daemon to be ready.
func (r *rig) nextGen() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.gen++
	close(r.changed)
	r.changed = make(chan struct{})
	if !r.opened {
		close(r.ready) // the clients waiting for it look again
	}
	r.ready, r.opened = make(chan struct{}), false
}

// cleanRestart stops the daemon with SIGTERM, which closes the database
// cleanly (its WAL checkpointed and removed), arms trigger and starts the
// daemon again with args. It reports whether the daemon got ready: the cut
// may come first.
func (r *rig) cleanRestart(trigger func(lazyfs.Op) bool, args ...string) bool {
	r.t.Helper()
	r.nextGen()
	r.stop()
	r.arm(trigger)
	if !r.start(args...) {
		return false
	}
	r.release()
	return true
}

// restart mounts the filesystem again after a cut and starts the daemon on
// what it kept, with args. The clients wait until release.
func (r *rig) restart(args ...string) {
	r.t.Helper()
	r.mount()
	if !r.start(args...) {
		r.mu.Lock()
		p := r.p
		r.mu.Unlock()
		r.t.Fatalf("liminald did not start after a power cut: %v\nstderr:\n%s", p.err, p.stderr.String())
	}
}

// release lets the clients connect to the daemon restart started.
func (r *rig) release() {
	r.mu.Lock()
	close(r.ready)
	r.opened = true
	r.mu.Unlock()
}

// stop stops the daemon with SIGTERM, which must exit 0.
func (r *rig) stop() {
	t := r.t
	t.Helper()
	r.mu.Lock()
	p := r.p
	r.p = nil
	r.mu.Unlock()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		t.Fatalf("liminald did not stop on SIGTERM\nstderr:\n%s", p.stderr.String())
	}
	if p.err != nil {
		t.Fatalf("liminald on SIGTERM: %v\nstderr:\n%s", p.err, p.stderr.String())
	}
}

// session is a client's connection to one generation's daemon: the
// generation, and what tells that its power was cut.
type session struct {
	c    *ipc.Client
	gen  int
	dead <-chan struct{}
}

// connect dials the current daemon, waiting while a cut and restart are
// under way.
func (r *rig) connect(ctx context.Context) (session, error) {
	for {
		r.mu.Lock()
		gen, ready := r.gen, r.ready
		r.mu.Unlock()
		select {
		case <-ready:
		case <-ctx.Done():
			return session{}, ctx.Err()
		}
		r.mu.Lock()
		fs := r.fs
		same := gen == r.gen
		r.mu.Unlock()
		if !same {
			continue
		}
		c, err := ipc.Dial(ctx, r.socket)
		if err == nil {
			return session{c, gen, fs.Dead()}, nil
		}
		if err := r.awaitAfter(ctx, session{gen: gen, dead: fs.Dead()}); err != nil {
			return session{}, fmt.Errorf("dial %s: %w", r.socket, err)
		}
	}
}

// errNoCut is a call's failure while the power was on.
var errNoCut = errors.New("the call failed, but the power was not cut and the daemon not restarted")

// awaitAfter waits, after a call of s failed, until the next generation has
// begun. The failure must come from a cut or a restart: if the power of
// s's generation is still on and no restart began, it returns errNoCut.
func (r *rig) awaitAfter(ctx context.Context, s session) error {
	r.mu.Lock()
	restarted := r.gen > s.gen
	r.mu.Unlock()
	select {
	case <-s.dead:
	default:
		if !restarted {
			return errNoCut
		}
	}
	for {
		r.mu.Lock()
		gen, changed := r.gen, r.changed
		r.mu.Unlock()
		if gen > s.gen {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// dialCheck connects to the current daemon for a check that must end
// within a few minutes. done closes the client.
func (r *rig) dialCheck() (ctx context.Context, c *ipc.Client, done func()) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	c, err := ipc.Dial(ctx, r.socket)
	if err != nil {
		cancel()
		r.t.Fatal(err)
	}
	return ctx, c, func() { c.Close(); cancel() }
}

// check runs liminald check --db --json beside the daemon and fails the
// test unless it passes.
func (r *rig) check() {
	t := r.t
	t.Helper()
	cmd := exec.Command(binary, "check", "--db", r.db(), "--json")
	cmd.Env = append(daemontest.Env(), "HOME="+r.home)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), `"ok":true`) {
		t.Fatalf("liminald check after %d cuts: %v\nstdout:\n%s\nstderr:\n%s", r.cuts, err, stdout.String(), stderr.String())
	}
}
