package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"liminald/ipc"
)

// liminaldSystem runs the real liminald binary, with its default sync=full.
type liminaldSystem struct {
	bin    string
	args   []string // more flags of serve
	dir    string   // of the socket and the database
	socket string
	db     string // a PostgreSQL URL; "": a SQLite file in dir
	running
}

// newLiminald returns the System of the liminald binary at bin, which
// serve runs with the flags args besides its socket and database.
func newLiminald(bin string, args ...string) System {
	return &liminaldSystem{bin: bin, args: args, running: running{name: "liminald", quit: syscall.SIGTERM}}
}

func (s *liminaldSystem) Name() string { return "liminald" }

// Start runs bin serve with its socket and database in dir and waits until
// the socket answers ping. Returns an error with the daemon's log if it
// exits first or does not answer within 30 s.
func (s *liminaldSystem) Start(ctx context.Context, dir string) error {
	s.dir, s.socket = dir, filepath.Join(dir, "liminald.sock")
	if err := checkSocketPath(s.socket); err != nil {
		return err
	}
	db := s.db
	if db == "" {
		db = s.dbPath()
	}
	cmd := exec.Command(s.bin, append([]string{"serve", "--socket", s.socket, "--db", db}, s.args...)...)
	// HOME in dir, and no LIMINAL_* or XDG_* variables: no configuration
	// file or setting of the user's reaches the daemon.
	cmd.Env = append(cleanEnv(), "HOME="+dir)
	srv, err := startPeerServer(cmd, filepath.Join(dir, "liminald.log"))
	if err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	if err := srv.waitReady(ctx, s.ping); err != nil {
		return fmt.Errorf("start liminald: %w", err)
	}
	s.srv = srv
	return nil
}

func (s *liminaldSystem) ping(ctx context.Context) error {
	c, err := ipc.Dial(ctx, s.socket)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Ping(ctx)
}

// dbPath is the database's file; its WAL is beside it, with "-wal" added.
func (s *liminaldSystem) dbPath() string { return filepath.Join(s.dir, "liminald.db") }

// fileSizes are the sizes of the database file and of its WAL (0 for a
// file that does not exist).
func (s *liminaldSystem) fileSizes() (db, wal int64) {
	size := func(path string) int64 {
		if fi, err := os.Stat(path); err == nil {
			return fi.Size()
		}
		return 0
	}
	return size(s.dbPath()), size(s.dbPath() + "-wal")
}

// status is the line name of the running daemon's /proc/<pid>/status
// ("VmRSS", "VmHWM"), in bytes.
func (s *liminaldSystem) status(name string) int64 {
	return statusKB(fmt.Sprintf("/proc/%d/status", s.srv.cmd.Process.Pid), name)
}

// Dial opens one connection to the daemon.
func (s *liminaldSystem) Dial(ctx context.Context) (Client, error) {
	return dialLine(ctx, s.socket)
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
