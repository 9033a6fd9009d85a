//go:build linux

// Package lazyfs is a filesystem for power-loss tests, after Jepsen's
// LazyFS: a FUSE mount that passes every operation through to a backing
// directory, and forgets, when the power is cut, what was never synced.
//
// What a cut keeps, and what it takes away:
//
//   - A file's data and size are what they were at its last fsync or
//     fdatasync (both sync data and size alike). A file never synced since
//     it was made comes back empty, if its entry comes back at all.
//   - A directory's entries (creates, mkdirs, unlinks, rmdirs, renames in
//     and out of it) are what they were at its last fsync. A file whose
//     directory was not synced since it was created is gone; an unlinked
//     or renamed one is back under its old name, with its synced data.
//   - Nothing else is modeled: modes, owners and times stay as they are.
//
// The backing directory holds the live view while the filesystem is
// mounted, and memory holds what a cut needs to go back to the synced one:
// the old bytes of every block written or truncated away since its file's
// last sync, the synced size, and the synced value of every directory
// entry changed since its directory's last sync. (LazyFS keeps the
// unsynced writes in memory instead; a cut leaves the same disk either
// way, and reads and memory maps need no merging this way round.) An
// inode that is removed from the live view while a synced entry still
// names it is kept as a hard link in a hidden directory of the backing
// directory, .lazyfs, until that entry goes.
//
// Cut is the power cut: from then on every operation on the mount fails
// with EIO, and the backing directory is rewritten to what a disk would
// hold after it. Unmount without a cut is a clean shutdown: what was
// written stays. Mount is for root, with /dev/fuse.
//
// Hard links, symbolic links, device nodes, xattrs and fallocate are not
// supported: liminald and SQLite use none of them.
package lazyfs

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// metaDir is the name, in the backing directory, of the directory where
// the filesystem keeps what it needs: it is hidden from the mount.
const metaDir = ".lazyfs"

// Options configure a mount.
type Options struct {
	// OnOp, when set, is told of each operation that changes the
	// filesystem, before it happens and in the order they happen, with
	// the filesystem's lock held: it must not use the mount. Returning
	// true cuts the power right there, so the operation fails with EIO
	// as every later one does.
	OnOp func(Op) bool
	// IgnoreDatasync makes fdatasync answer success and keep nothing: a
	// disk that lies about fdatasync. fsync still works.
	IgnoreDatasync bool
}

// OpKind is what an operation does.
type OpKind int

// The operations OnOp is told of.
const (
	Write OpKind = iota + 1
	Truncate
	Fsync
	Fdatasync
	FsyncDir
	Create
	Mkdir
	Unlink
	Rmdir
	Rename
)

func (k OpKind) String() string {
	switch k {
	case Write:
		return "write"
	case Truncate:
		return "truncate"
	case Fsync:
		return "fsync"
	case Fdatasync:
		return "fdatasync"
	case FsyncDir:
		return "fsyncdir"
	case Create:
		return "create"
	case Mkdir:
		return "mkdir"
	case Unlink:
		return "unlink"
	case Rmdir:
		return "rmdir"
	case Rename:
		return "rename"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is an operation that changes the filesystem.
type Op struct {
	Kind OpKind
	// Path is the file or directory it changes, relative to the root of
	// the mount (for Rename, the old name).
	Path string
	// To is Rename's new name.
	To string
	// Off and Len are the range a Write writes; Off is the size a
	// Truncate leaves.
	Off, Len int64
}

// Loss is what a power cut took away.
type Loss struct {
	// Files is the number of files whose data or size went back to their
	// last sync, Bytes the number of bytes written since that the cut
	// dropped (whole blocks of 4 KiB, for data overwritten).
	Files int
	Bytes int64
	// Entries is the number of directory entries that went back to their
	// last sync: made since and gone, or removed or renamed since and
	// back.
	Entries int
}

// FS is a mounted lazy filesystem.
type FS struct {
	backing string // absolute
	meta    string // backing/.lazyfs
	stash   string // meta/stash: the inodes kept for a synced entry, by inode number
	mnt     string // the mount point, absolute
	rootIno uint64
	opts    Options
	server  *fuse.Server

	// mu guards everything below. Operations that change the filesystem
	// hold it exclusively, from their check of dead to their end, so a cut
	// falls between two of them.
	mu      sync.RWMutex
	dead    bool
	deadCh  chan struct{}
	loss    Loss
	cutErr  error
	files   map[uint64]*fileState // by inode: the files changed since their last sync
	dirs    map[uint64]*dirState  // by inode: the directories changed since their last sync
	ignored int                   // fdatasyncs answered and dropped (IgnoreDatasync)
}

// Mount mounts a lazy filesystem of the directory backing at mountpoint,
// an empty directory. What backing holds then counts as synced.
func Mount(mountpoint, backing string, opts Options) (*FS, error) {
	backing, err := filepath.Abs(backing)
	if err != nil {
		return nil, err
	}
	mnt, err := filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(backing, &st); err != nil {
		return nil, fmt.Errorf("lazyfs: backing directory: %w", err)
	}
	f := &FS{
		backing: backing,
		meta:    filepath.Join(backing, metaDir),
		mnt:     mnt,
		rootIno: st.Ino,
		opts:    opts,
		deadCh:  make(chan struct{}),
		files:   make(map[uint64]*fileState),
		dirs:    make(map[uint64]*dirState),
	}
	f.stash = filepath.Join(f.meta, "stash")
	if err := os.RemoveAll(f.meta); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(f.stash, 0o700); err != nil {
		return nil, err
	}
	var zero time.Duration
	f.server, err = fs.Mount(mnt, &node{lfs: f}, &fs.Options{
		MountOptions: fuse.MountOptions{
			FsName:             "lazyfs:" + backing,
			Name:               "lazyfs",
			DirectMountStrict:  true, // mount(2) as root: no fusermount
			DisableXAttrs:      true,
			DisableReadDirPlus: true,
		},
		// The kernel asks again every time: a cut changes the backing
		// directory under it.
		EntryTimeout:    &zero,
		AttrTimeout:     &zero,
		NegativeTimeout: &zero,
		RootStableAttr:  &fs.StableAttr{Ino: st.Ino, Gen: 1},
	})
	if err != nil {
		os.RemoveAll(f.meta)
		return nil, fmt.Errorf("lazyfs: mount %s: %w", mnt, err)
	}
	closeFuseOnExec()
	return f, nil
}

// closeFuseOnExec marks this process's descriptors of /dev/fuse close on
// exec: go-fuse opens the device without O_CLOEXEC, and a daemon the test
// starts must not hold the mount's connection.
func closeFuseOnExec() {
	des, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return
	}
	for _, de := range des {
		fd, err := strconv.Atoi(de.Name())
		if err != nil {
			continue
		}
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", de.Name())); err == nil && target == "/dev/fuse" {
			unix.CloseOnExec(fd)
		}
	}
}

// Cut cuts the power: every operation from now on fails with EIO, and the
// backing directory is rewritten to what was synced. It returns what the
// cut took away; called again, or after OnOp cut the power, it returns the
// same. The mount stays until Unmount.
func (f *FS) Cut() (Loss, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.dead {
		f.cutLocked()
	}
	return f.loss, f.cutErr
}

// Dead is closed once the power is cut.
func (f *FS) Dead() <-chan struct{} { return f.deadCh }

// Ignored returns the number of fdatasyncs IgnoreDatasync dropped.
func (f *FS) Ignored() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.ignored
}

// Unmount unmounts the filesystem; the processes that had files open on it
// must have closed them or ended. Without a cut before, it is a clean
// shutdown and the backing directory keeps everything written to it.
func (f *FS) Unmount() error {
	err := f.server.Unmount()
	if err != nil {
		// Detach it all the same, so that a failed test leaves no mount
		// behind: the kernel lets it go once its files are closed.
		if derr := syscall.Unmount(f.mnt, syscall.MNT_DETACH); derr == nil {
			f.server.Wait()
		}
	}
	f.mu.Lock()
	f.dead = true
	f.mu.Unlock()
	return errors.Join(err, os.RemoveAll(f.meta))
}
