package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"liminald/internal/paths"
)

// DefaultSocketPath returns the socket path used when none is configured:
// $XDG_RUNTIME_DIR/liminald/liminald.sock, else /run/liminald/liminald.sock
// for root (uid 0), else /tmp/liminald-<uid>/liminald.sock. env reads the
// environment, like os.Getenv; a relative XDG_RUNTIME_DIR is ignored, as the
// XDG base directory specification asks. TMPDIR is not consulted: clients
// started with another TMPDIR must find the same socket. The Go client
// (ipc.DefaultSocket) looks there too: both use package paths.
func DefaultSocketPath(env func(string) string, uid int) string { return paths.Socket(env, uid) }

// DefaultDBPath returns the database path used when none is configured:
// $XDG_STATE_HOME/liminald/liminald.db, else
// <home>/.local/state/liminald/liminald.db, or "" when XDG_STATE_HOME is
// unset and home is empty.
func DefaultDBPath(env func(string) string, home string) string { return paths.DB(env, home) }

// DefaultConfigPath returns the configuration file read when none is named:
// $XDG_CONFIG_HOME/liminald/liminald.toml, else
// <home>/.config/liminald/liminald.toml, or "" when XDG_CONFIG_HOME is unset
// and home is empty.
func DefaultConfigPath(env func(string) string, home string) string { return paths.Config(env, home) }

// MaxSocketPathLen is the longest path a unix socket can be bound to on this
// platform: the size of sun_path less its terminating NUL (107 bytes on
// Linux).
const MaxSocketPathLen = len(unix.RawSockaddrUnix{}.Path) - 1

// SocketPathError is a socket path longer than MaxSocketPathLen.
type SocketPathError struct {
	Path string
}

func (e *SocketPathError) Error() string {
	return fmt.Sprintf("socket path %s is %d bytes long, over the limit of %d bytes for a unix socket path on this platform",
		e.Path, len(e.Path), MaxSocketPathLen)
}

// CheckSocketPath returns a *SocketPathError when path is too long to bind a
// unix socket to, and nil otherwise.
func CheckSocketPath(path string) error {
	if len(path) > MaxSocketPathLen {
		return &SocketPathError{Path: path}
	}
	return nil
}

// PrepareDir makes the directory dir, and its missing parents, with mode
// 0700: the directory of the socket or of the database.
//
// When the directory holding dir can be written by others (like /tmp), dir
// could have been made by another user before the daemon, to read or replace
// what it puts there. There, dir must be a directory (not a symbolic link)
// owned by the daemon's user and not writable by its group or by others;
// PrepareDir refuses any other with an error saying why. Elsewhere an
// existing dir is used as it is.
//
// It returns an error naming dir when dir cannot be made or is refused.
func PrepareDir(dir string) error {
	dir = filepath.Clean(dir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("make directory %s: %w", dir, err)
	}
	parent, err := os.Stat(filepath.Dir(dir))
	if err != nil {
		return fmt.Errorf("make directory %s: %w", dir, err)
	}
	if parent.Mode().Perm()&0o022 == 0 {
		return nil
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("make directory %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("directory %s: in shared %s and not a directory (%s), refusing to use it",
			dir, filepath.Dir(dir), fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("directory %s: in shared %s and owned by uid %d, not by this user (uid %d), refusing to use it",
			dir, filepath.Dir(dir), st.Uid, os.Geteuid())
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("directory %s: in shared %s and writable by others (mode %#o), refusing to use it",
			dir, filepath.Dir(dir), uint32(fi.Mode().Perm()))
	}
	return nil
}
