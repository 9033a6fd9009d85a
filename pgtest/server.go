package pgtest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"liminald/internal/testenv"
)

// Server is a throwaway PostgreSQL cluster that a test runs: its data, its
// socket and its log live in one temporary directory, removed with it at
// the test's cleanup.
type Server struct {
	tb       testing.TB
	dir      string
	bin      string
	owner    *syscall.Credential
	settings []string
	proc     *exec.Cmd
	exited   chan struct{} // closed once proc exited
}

// Start makes a cluster and runs PostgreSQL on it, with fsync on and
// settings ("name=value") on top, until the test's cleanup stops it.
// Without PostgreSQL's binaries (Debian's postgresql-15) it ends the test
// through testenv.Missing: skipped on a developer's machine, failed in CI.
func Start(tb testing.TB, settings ...string) *Server {
	tb.Helper()
	bin, err := BinDir()
	if err != nil {
		testenv.Missing(tb, "%v", err)
	}
	owner, err := Owner()
	if err != nil {
		testenv.Missing(tb, "%v", err)
	}
	// Not tb.TempDir(): its parents are the test user's alone, and the
	// owner must reach the socket directory. /tmp keeps the socket's path
	// short, too.
	base, err := os.MkdirTemp("", "pgtest-")
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.Chmod(base, 0o711); err != nil {
		tb.Fatal(err)
	}
	s := &Server{tb: tb, dir: filepath.Join(base, "pg"), bin: bin, owner: owner, settings: settings}
	tb.Cleanup(func() {
		s.stop(syscall.SIGQUIT)
		if tb.Failed() {
			s.logTail()
		}
		os.RemoveAll(base)
	})
	if err := MakeDir(s.dir, owner); err != nil {
		tb.Fatal(err)
	}
	if err := Initdb(bin, filepath.Join(s.dir, "data"), owner); err != nil {
		tb.Fatal(err)
	}
	s.Start()
	return s
}

// Dir returns the directory of the server's socket.
func (s *Server) Dir() string { return s.dir }

// URL returns the URL of database db (postgres, the one initdb makes, or
// one CreateDatabase made) as the superuser postgres, on the socket.
func (s *Server) URL(db string) string {
	return "postgres:///" + db + "?host=" + s.dir + "&user=postgres"
}

// CreateDatabase creates database name and returns its URL.
func (s *Server) CreateDatabase(name string) string {
	s.tb.Helper()
	cmd := exec.Command(filepath.Join(s.bin, "createdb"), "-h", s.dir, "-U", "postgres", name)
	if out, err := cmd.CombinedOutput(); err != nil {
		s.tb.Fatalf("createdb %s: %v\n%s", name, err, out)
	}
	return s.URL(name)
}

// Start runs PostgreSQL on the cluster and waits until it accepts
// connections. The server must not be running.
func (s *Server) Start() {
	s.tb.Helper()
	if s.proc != nil {
		s.tb.Fatal("pgtest: Start of a running server")
	}
	log, err := os.OpenFile(s.logPath(), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		s.tb.Fatal(err)
	}
	defer log.Close()
	cmd := Command(s.bin, filepath.Join(s.dir, "data"), s.dir, s.owner, s.settings...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		s.tb.Fatalf("start postgres: %v", err)
	}
	s.proc, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) { cmd.Wait(); close(exited) }(s.exited)
	if err := s.waitReady(30 * time.Second); err != nil {
		s.stop(syscall.SIGQUIT)
		s.logTail()
		s.tb.Fatalf("start postgres: %v", err)
	}
}

// waitReady waits until the postmaster says it is ready in its pid file.
func (s *Server) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		select {
		case <-s.exited:
			return errors.New("postgres exited")
		default:
		}
		if b, err := os.ReadFile(filepath.Join(s.dir, "data", "postmaster.pid")); err == nil {
			// The 8th line is the postmaster's status (PostgreSQL 10 on).
			if lines := strings.Split(string(b), "\n"); len(lines) > 7 && strings.TrimSpace(lines[7]) == "ready" {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop shuts the server down as pg_ctl stop -m fast does: it rolls back
// open transactions, checkpoints and exits.
func (s *Server) Stop() { s.stop(syscall.SIGINT) }

// Crash stops the server as pg_ctl stop -m immediate does: it exits at
// once, and the next start recovers from the WAL as after a crash.
func (s *Server) Crash() { s.stop(syscall.SIGQUIT) }

// Restart crashes the server (Crash) and starts it again.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Crash()
	s.Start()
}

func (s *Server) stop(sig syscall.Signal) {
	if s.proc == nil {
		return
	}
	s.proc.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.proc.Process.Kill()
		<-s.exited
	}
	s.proc = nil
}

func (s *Server) logPath() string { return filepath.Join(s.dir, "postgres.log") }

// logTail logs the end of the server's log, for a test that failed.
func (s *Server) logTail() {
	b, err := os.ReadFile(s.logPath())
	if err != nil {
		return
	}
	if len(b) > 4096 {
		b = b[len(b)-4096:]
		b = b[bytes.IndexByte(b, '\n')+1:]
	}
	s.tb.Logf("postgres log, the end:\n%s", b)
}
