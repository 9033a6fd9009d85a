package daemon

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Lock is an exclusive flock on a file, held from AcquireLock to Release.
// liminald holds one on <db>.lock and one on <socket>.lock so that one daemon
// serves a database and a socket. The lock belongs to the open file, so it
// goes when the process ends however it ends; a lock file left behind is
// harmless. A Lock is not safe for concurrent use.
type Lock struct {
	path    string
	f       *os.File
	created bool // AcquireLock made the file
}

// lockTries bounds how many times AcquireLock opens the file again after
// it locked one that was removed meanwhile (see Discard).
const lockTries = 100

// AcquireLock takes an exclusive flock on path without waiting, creating the
// file with mode 0600 if it does not exist (its directory must exist; see
// PrepareDir), and writes this process's pid into it for the error another
// process gets. A file removed by Discard after AcquireLock opened it locks
// nothing: AcquireLock then opens the path again.
//
// When another process holds the lock, AcquireLock returns an error wrapping
// ErrLocked that names the file and, when it can tell, the holder's pid. It
// returns other errors naming the file when it cannot open or lock it; it
// refuses to follow a symbolic link at path.
func AcquireLock(path string) (*Lock, error) {
	for range lockTries {
		created := true
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if errors.Is(err, fs.ErrExist) {
			created = false
			f, err = os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile: create it
			}
		}
		if err != nil {
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if err := flock(f, unix.LOCK_EX|unix.LOCK_NB); err != nil {
			pid := holder(f)
			f.Close()
			switch {
			case !errors.Is(err, unix.EWOULDBLOCK):
				return nil, fmt.Errorf("lock %s: %w", path, err)
			case pid > 0:
				return nil, fmt.Errorf("lock %s, held by pid %d: %w", path, pid, ErrLocked)
			default:
				return nil, fmt.Errorf("lock %s: %w", path, ErrLocked)
			}
		}
		l := &Lock{path: path, f: f, created: created}
		if !l.Held() {
			f.Close() // its holder discarded it before we locked it
			continue
		}
		// The pid only makes the error of the next process clearer: failing to
		// write it leaves the lock held and correct.
		if err := f.Truncate(0); err == nil {
			_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
		}
		return l, nil
	}
	return nil, fmt.Errorf("lock %s: removed each time it was locked, %d times", path, lockTries)
}

// Path returns the locked file's path.
func (l *Lock) Path() string { return l.path }

// Release releases the lock. The file stays, for the next daemon (see
// Discard for a command that failed). Releasing a released lock does
// nothing. Release returns an error
// naming the file when it cannot be unlocked or closed; the lock is released
// all the same once the file is closed.
func (l *Lock) Release() error {
	if l.f == nil {
		return nil
	}
	f := l.f
	l.f = nil
	err := flock(f, unix.LOCK_UN)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("release lock %s: %w", l.path, err)
	}
	return nil
}

// Discard releases the lock of a command that failed, removing the file
// first if AcquireLock created it, so that the command leaves nothing
// behind. The file is removed while the lock is held, and only if it is
// still the one locked (see Held): never a file another process locked, and
// a process that opened it before the removal finds its lock is on no file
// and opens the path again. Discarding a released lock does nothing.
// Returns Release's errors, and an error naming the file when it cannot be
// removed (the lock is released all the same).
func (l *Lock) Discard() error {
	var err error
	if l.created && l.Held() {
		if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = fmt.Errorf("remove lock %s: %w", l.path, rerr)
		}
	}
	if rerr := l.Release(); err == nil {
		err = rerr
	}
	return err
}

func flock(f *os.File, how int) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) {
		for {
			ferr = unix.Flock(int(fd), how)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	return ferr
}

// holder returns the pid written in a lock file by the process that holds
// it, or 0 when there is none to read.
func holder(f *os.File) int {
	b, err := io.ReadAll(io.LimitReader(f, 32))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Held reports whether the file at the lock's path is still the file this
// lock holds: false once it was deleted or replaced (say, with its
// directory), when another process could take a lock there.
func (l *Lock) Held() bool {
	if l.f == nil {
		return false
	}
	mine, err := l.f.Stat()
	if err != nil {
		return false
	}
	there, err := os.Stat(l.path)
	return err == nil && os.SameFile(mine, there)
}
