// Package daemontest is what the end-to-end test suites share to run the
// real liminald binary: building it once, and collecting its stderr.
package daemontest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
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
