package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/fsnotify/fsnotify"
	"golang.org/x/sys/unix"
)

// Listen creates the unix socket at path and listens on it. The caller holds
// the lock on <path>.lock (see AcquireLock), which makes any socket already
// at path a stale one left by a daemon that is gone: Listen removes it. Any
// other file at path is refused with an error wrapping ErrNotSocket, and
// left alone.
//
// The socket is never reachable with a wider mode than mode. A socket file
// is created by bind(2) with the process's umask, and narrowing the umask
// around it would narrow it for every goroutine of the daemon at once. So
// Listen binds first, then sets the file's mode to mode (exactly: the umask
// plays no part) and its group to group (a name or a numeric gid; empty
// leaves it), and only then listens: until listen(2), connecting to the
// socket fails with ECONNREFUSED whatever its mode.
//
// The listener does not remove the socket file when it is closed: a listener
// replaced after its file was deleted (see WatchSocket) must not remove its
// successor's file on its way out. Remove the file on a clean shutdown, while
// the lock is still held.
//
// Listen returns a *SocketPathError when path is too long, an error naming
// the group when it does not exist or cannot be given, and an error naming
// path when the socket cannot be made.
func Listen(path string, mode os.FileMode, group string) (*net.UnixListener, error) {
	if err := CheckSocketPath(path); err != nil {
		return nil, err
	}
	gid := -1
	if group != "" {
		g, err := lookupGroup(group)
		if err != nil {
			return nil, fmt.Errorf("listen %s: %w", path, err)
		}
		gid = g
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}

	// Under ForkLock, as the net package does where SOCK_CLOEXEC is missing,
	// so that no child started meanwhile inherits the descriptor.
	syscall.ForkLock.RLock()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err == nil {
		unix.CloseOnExec(fd)
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, os.NewSyscallError("socket", err))
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close() // net.FileListener works on a duplicate
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		return nil, fmt.Errorf("listen %s: %w", path, os.NewSyscallError("bind", err))
	}
	ln, err := func() (net.Listener, error) {
		if err := os.Chmod(path, mode.Perm()); err != nil {
			return nil, err
		}
		if gid >= 0 {
			if err := os.Lchown(path, -1, gid); err != nil {
				return nil, fmt.Errorf("socket group %s: %w", group, err)
			}
		}
		if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
			return nil, os.NewSyscallError("listen", err)
		}
		return net.FileListener(f)
	}()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return ln.(*net.UnixListener), nil
}

// removeStale removes the socket at path, if there is one. It returns an
// error wrapping ErrNotSocket when another kind of file is there.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("listen %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("listen %s: %s: %w", path, fileKind(fi.Mode()), ErrNotSocket)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen %s: remove stale socket: %w", path, err)
	}
	return nil
}

func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "regular file"
	case fs.ModeDir:
		return "directory"
	case fs.ModeSymlink:
		return "symbolic link"
	case fs.ModeNamedPipe:
		return "named pipe"
	default:
		return "special file"
	}
}

// lookupGroup returns the gid of a group given by name or numeric gid. It
// returns an error naming the group when there is no such name.
func lookupGroup(group string) (int, error) {
	if gid, err := strconv.ParseUint(group, 10, 32); err == nil {
		return int(gid), nil
	}
	g, err := user.LookupGroup(group)
	if err != nil {
		return 0, fmt.Errorf("socket group %s: %w", group, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return 0, fmt.Errorf("socket group %s: gid %q: %w", group, g.Gid, err)
	}
	return gid, nil
}

// Activated returns the sockets systemd passed to this process by socket
// activation (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES), as listeners in the
// order they were passed, or nil when none were passed to this process:
// LISTEN_PID unset or naming another process. It unsets the three variables,
// so that a child process does not take the sockets for its own.
//
// systemd creates the socket file and owns it (mode and group come from the
// .socket unit): a daemon using these listeners should not Listen, nor
// re-create the socket with WatchSocket. Only listening sockets are
// accepted (Accept=no, the default): Activated returns an error naming the
// descriptor, and closes all of them, when one cannot be used as a listener.
func Activated() ([]net.Listener, error) {
	files := activation.Files(true)
	if len(files) == 0 {
		return nil, nil
	}
	lns := make([]net.Listener, 0, len(files))
	for i, f := range files {
		ln, err := net.FileListener(f)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			for _, f := range files[i:] {
				f.Close()
			}
			// Descriptors are passed from 3 on (SD_LISTEN_FDS_START).
			return nil, fmt.Errorf("socket activation: descriptor %d (%s): %w", 3+i, f.Name(), err)
		}
		f.Close()
		lns = append(lns, ln)
	}
	return lns, nil
}

// WatchSocket watches the socket file at path, made by Listen, and calls
// onGone, from the watcher's goroutine, each time the file has been removed
// or renamed away while the daemon runs, so that the daemon can Listen again
// and hand the new listener to its server. It looks before it calls: a path
// that is there again (already re-created) calls nothing. It also looks once
// when it starts, for a socket gone before the watch was in place. When the
// socket's directory itself is removed or renamed, onGone is called (it may
// make the directory with PrepareDir) and the directory is watched again,
// then looked at once more; if it cannot be watched the watcher stops and
// Wait returns the error.
//
// db is the database file, or "" for none (PostgreSQL). When it shares
// the socket's directory, the socket file itself is watched instead of the
// directory, which would be told of every write to the database and its
// WAL: then removing the socket and renaming it away are seen as above,
// but not renaming the directory away.
//
// Stop the watcher (end ctx and Wait) before removing the socket on
// shutdown. WatchSocket returns an error naming the directory (or the
// socket file) when it cannot be watched.
func WatchSocket(ctx context.Context, path, db string, onGone func()) (*Watcher, error) {
	return watch(ctx, socketSpec(path, sameDir(path, db), onGone))
}

// sameDir reports whether the files at a and b are in one directory; false
// when either is "" or its directory cannot be read.
func sameDir(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	da, err := os.Stat(filepath.Dir(a))
	if err != nil {
		return false
	}
	db, err := os.Stat(filepath.Dir(b))
	return err == nil && os.SameFile(da, db)
}

func socketSpec(path string, self bool, onGone func()) watchSpec {
	return watchSpec{
		path:        path,
		ops:         fsnotify.Remove | fsnotify.Rename,
		self:        self,
		fireAtStart: true,
		callback: func() {
			if _, err := os.Lstat(path); errors.Is(err, fs.ErrNotExist) {
				onGone()
			}
		},
	}
}
