package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"liminald/ipc"
)

// liminaldSystem runs the real liminald binary, with its default sync=full.
type liminaldSystem struct {
	bin    string
	socket string
	log    string // the daemon's stderr, for the error of a failed start

	cmd    *exec.Cmd
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
	watch  *procWatch
}

// newLiminald returns the System of the liminald binary at bin.
func newLiminald(bin string) System { return &liminaldSystem{bin: bin} }

func (s *liminaldSystem) Name() string { return "liminald" }

// Start runs bin serve with its socket and database in dir and waits until
// the socket answers ping. Returns an error with the daemon's log if it
// exits first or does not answer within 30 s.
func (s *liminaldSystem) Start(ctx context.Context, dir string) error {
	s.socket = filepath.Join(dir, "liminald.sock")
	s.log = filepath.Join(dir, "liminald.log")
	logf, err := os.Create(s.log)
	if err != nil {
		return err
	}
	defer logf.Close()
	s.cmd = exec.Command(s.bin, "serve", "--socket", s.socket, "--db", filepath.Join(dir, "liminald.db"))
	// HOME in dir, and no LIMINAL_* or XDG_* variables: no configuration
	// file or setting of the user's reaches the daemon.
	s.cmd.Env = append(cleanEnv(), "HOME="+dir)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	s.exited = make(chan struct{})
	go func() { s.err = s.cmd.Wait(); close(s.exited) }()
	if err := s.waitReady(ctx, 30*time.Second); err != nil {
		s.kill()
		return fmt.Errorf("start liminald: %w\n%s", err, s.logTail())
	}
	s.watch = watchProcess(s.cmd.Process.Pid)
	return nil
}

// waitReady polls ping until it answers, the daemon exits, or timeout.
func (s *liminaldSystem) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if err := s.ping(ctx); err == nil {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("daemon exited: %v", s.err)
		case <-ctx.Done():
			return fmt.Errorf("no answer to ping: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func (s *liminaldSystem) ping(ctx context.Context) error {
	c, err := ipc.Dial(ctx, s.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Ping(ctx)
}

func (s *liminaldSystem) logTail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return strings.TrimSpace(string(b))
}

func (s *liminaldSystem) kill() {
	s.cmd.Process.Kill()
	<-s.exited
}

// Dial opens one connection to the daemon.
func (s *liminaldSystem) Dial(ctx context.Context) (Client, error) {
	return dialLine(ctx, s.socket)
}

// Usage reports the daemon's CPU time and peak RSS so far.
func (s *liminaldSystem) Usage() (Usage, error) {
	if s.watch == nil {
		return Usage{}, errors.New("liminald is not running")
	}
	return s.watch.Usage(), nil
}

// Stop sends SIGTERM and waits for the daemon to exit; it kills it after
// 30 s. Returns an error if it did not exit cleanly.
func (s *liminaldSystem) Stop() error {
	if s.cmd == nil {
		return nil
	}
	if s.watch != nil {
		s.watch.Close()
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(30 * time.Second):
		s.kill()
		return fmt.Errorf("liminald did not stop within 30s of SIGTERM")
	}
	s.cmd, s.watch = nil, nil
	if s.err != nil {
		return fmt.Errorf("liminald: %w\n%s", s.err, s.logTail())
	}
	return nil
}

// Version is the daemon's version, as liminald --version prints it.
func (s *liminaldSystem) Version() string {
	out, err := exec.Command(s.bin, "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// Settings describes how the daemon runs.
func (s *liminaldSystem) Settings() string {
	return "`liminald serve` with its defaults: sync=full (an acknowledged write is fsynced), " +
		"group commit, SQLite WAL; one unix-socket connection per client"
}

// cleanEnv is the environment without the LIMINAL_*, systemd and XDG
// variables.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LIMINAL_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") ||
			strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "XDG_") || strings.HasPrefix(kv, "HOME=") {
			continue
		}
		env = append(env, kv)
	}
	return env
}
