package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// running is the server a System started, embedded in the System: its
// Usage and Stop are the System's.
type running struct {
	name string    // the server's, for errors
	quit os.Signal // what asks it to stop cleanly
	srv  *peerServer
}

// Usage reports the server's CPU time and peak memory so far.
func (r *running) Usage() (Usage, error) {
	if r.srv == nil {
		return Usage{}, fmt.Errorf("%s is not running", r.name)
	}
	return r.srv.watch.Usage(), nil
}

// Stop sends the server its quit signal and waits for it to exit, killing
// it after peerStopTimeout. Returns an error if it did not exit cleanly.
func (r *running) Stop() error {
	if r.srv == nil {
		return nil
	}
	srv := r.srv
	r.srv = nil
	if err := srv.stop(r.quit); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// peerServer is the server process of a system (liminald, redis-server,
// postgres): its exit, its log and the sampling of its usage.
type peerServer struct {
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
	watch  *procWatch
}

// peerStopTimeout is how long stop waits for a server to exit before it
// kills it.
const peerStopTimeout = 60 * time.Second

// startPeerServer starts cmd with its stdout and stderr appended to the
// file log.
func startPeerServer(cmd *exec.Cmd, log string) (*peerServer, error) {
	f, err := os.OpenFile(log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &peerServer{cmd: cmd, log: log, exited: make(chan struct{})}
	go func() { s.err = cmd.Wait(); close(s.exited) }()
	s.watch = watchProcess(cmd.Process.Pid)
	return s, nil
}

// waitReady polls ping until it succeeds, the server exits, or 30 s pass;
// on failure it kills the server and returns an error with its log.
func (s *peerServer) waitReady(ctx context.Context, ping func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ping(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-s.exited:
			s.watch.Close()
			return fmt.Errorf("exited: %v\n%s", s.err, s.logTail())
		case <-ctx.Done():
			s.kill()
			return fmt.Errorf("not ready: %v\n%s", err, s.logTail())
		case <-tick.C:
		}
	}
}

// stop sends sig and waits for the server to exit, killing it after
// peerStopTimeout. Returns an error if it did not exit cleanly.
func (s *peerServer) stop(sig os.Signal) error {
	s.watch.Close()
	s.cmd.Process.Signal(sig)
	select {
	case <-s.exited:
	case <-time.After(peerStopTimeout):
		s.cmd.Process.Kill()
		<-s.exited
		return fmt.Errorf("did not stop within %s of %v", peerStopTimeout, sig)
	}
	if s.err != nil {
		return fmt.Errorf("%w\n%s", s.err, s.logTail())
	}
	return nil
}

// kill kills the server and waits for it to exit.
func (s *peerServer) kill() {
	s.watch.Close()
	s.cmd.Process.Kill()
	<-s.exited
}

// logTail is the end of the server's log.
func (s *peerServer) logTail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return strings.TrimSpace(string(b))
}

// checkSocketPath returns an error if path is too long for a unix socket.
func checkSocketPath(path string) error {
	const limit = len(syscall.RawSockaddrUnix{}.Path) - 1
	if len(path) > limit {
		return fmt.Errorf("socket path %s is longer than %d bytes: use a shorter directory", path, limit)
	}
	return nil
}
