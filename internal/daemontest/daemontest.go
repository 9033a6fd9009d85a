// Package daemontest is what the end-to-end test suites share to run the
// real liminald binary: building it once, a clean environment for it, its
// NOTIFY_SOCKET, and collecting its stderr.
package daemontest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Build builds the liminald binary into a new temporary directory and
// returns its path, and a function that removes it. Returns the error of
// go build, with its output on stderr.
func Build() (binary string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "liminald-test")
	if err != nil {
		return "", nil, err
	}
	binary = filepath.Join(dir, "liminald")
	build := exec.Command("go", "build", "-o", binary, "liminald/cmd/liminald")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		os.RemoveAll(dir)
		return "", nil, fmt.Errorf("build liminald: %w", err)
	}
	return binary, func() { os.RemoveAll(dir) }, nil
}

// Buffer is a bytes.Buffer that a daemon's stderr copier and the test can
// share.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Main builds the binary into *binary, runs the tests of m, removes the
// binary and exits with their code: the TestMain of an end-to-end suite.
func Main(m interface{ Run() int }, binary *string) {
	bin, cleanup, err := Build()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*binary = bin
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// Env is the test process's environment without the LIMINAL_*, systemd
// and XDG variables, so that only what a test sets reaches the daemon.
func Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LIMINAL_") || strings.HasPrefix(kv, "NOTIFY_SOCKET=") ||
			strings.HasPrefix(kv, "LISTEN_") || strings.HasPrefix(kv, "XDG_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// Notifier is a NOTIFY_SOCKET a test gives a daemon, to learn when it is
// ready, reloading or stopping.
type Notifier struct {
	Path string
	conn *net.UnixConn
}

// ListenNotify makes a NOTIFY_SOCKET in dir. Close it when done.
func ListenNotify(dir string) (*Notifier, error) {
	path := filepath.Join(dir, fmt.Sprintf("notify-%d.sock", time.Now().UnixNano()))
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}
	return &Notifier{Path: path, conn: conn}, nil
}

// Next returns the next state the daemon sends, waiting up to timeout.
func (n *Notifier) Next(timeout time.Duration) (string, error) {
	buf := make([]byte, 4096)
	n.conn.SetReadDeadline(time.Now().Add(timeout))
	k, err := n.conn.Read(buf)
	return string(buf[:k]), err
}

// Close closes the socket and removes its file.
func (n *Notifier) Close() error {
	err := n.conn.Close()
	os.Remove(n.Path)
	return err
}
