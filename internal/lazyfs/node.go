//go:build linux

package lazyfs

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// node is a file or directory of the mount, found in the backing
// directory by its path.
type node struct {
	fs.Inode
	lfs *FS

	mu   sync.Mutex
	open map[*handle]bool // the node's open files: fstat finds it unlinked through them
}

var (
	_ fs.NodeLookuper  = (*node)(nil)
	_ fs.NodeGetattrer = (*node)(nil)
	_ fs.NodeSetattrer = (*node)(nil)
	_ fs.NodeOpener    = (*node)(nil)
	_ fs.NodeCreater   = (*node)(nil)
	_ fs.NodeMkdirer   = (*node)(nil)
	_ fs.NodeUnlinker  = (*node)(nil)
	_ fs.NodeRmdirer   = (*node)(nil)
	_ fs.NodeRenamer   = (*node)(nil)
	_ fs.NodeReaddirer = (*node)(nil)
	_ fs.NodeFsyncer   = (*node)(nil)
	_ fs.NodeStatfser  = (*node)(nil)
	_ fs.FileReader    = (*handle)(nil)
	_ fs.FileWriter    = (*handle)(nil)
	_ fs.FileReleaser  = (*handle)(nil)
	_ fs.FileGetattrer = (*handle)(nil)
)

// rel is the node's path relative to the root of the mount.
func (n *node) rel() string { return n.Path(n.Root()) }

// path is the node's path in the backing directory.
func (n *node) path() string { return filepath.Join(n.lfs.backing, n.rel()) }

func (n *node) ino() uint64 { return n.StableAttr().Ino }

func (n *node) isRoot() bool { return n.EmbeddedInode() == n.Root() }

// hidden reports whether name, in n, is the filesystem's own directory.
func (n *node) hidden(name string) bool { return name == metaDir && n.isRoot() }

// child makes the inode of n's child name, with attributes st.
func (n *node) child(ctx context.Context, name string, st *syscall.Stat_t, out *fuse.EntryOut) *fs.Inode {
	out.Attr.FromStat(st)
	// The generation tells apart two inodes that had the same number one
	// after the other.
	var stx unix.Statx_t
	gen := uint64(1)
	if unix.Statx(unix.AT_FDCWD, filepath.Join(n.path(), name), unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BTIME, &stx) == nil && stx.Mask&unix.STATX_BTIME != 0 {
		gen = uint64(stx.Btime.Sec)*1e9 + uint64(stx.Btime.Nsec)
	}
	return n.NewInode(ctx, &node{lfs: n.lfs}, fs.StableAttr{Mode: st.Mode & syscall.S_IFMT, Ino: st.Ino, Gen: gen})
}

func (n *node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	n.lfs.mu.RLock()
	defer n.lfs.mu.RUnlock()
	if n.lfs.dead {
		return nil, syscall.EIO
	}
	if n.hidden(name) {
		return nil, syscall.ENOENT
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(filepath.Join(n.path(), name), &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	return n.child(ctx, name, &st, out), 0
}

func (n *node) Getattr(ctx context.Context, fh fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if h, ok := fh.(*handle); ok {
		return h.Getattr(ctx, out)
	}
	n.lfs.mu.RLock()
	defer n.lfs.mu.RUnlock()
	if n.lfs.dead {
		return syscall.EIO
	}
	var st syscall.Stat_t
	err := syscall.Lstat(n.path(), &st)
	if err == syscall.ENOENT {
		// Unlinked, and maybe still open.
		n.mu.Lock()
		for h := range n.open {
			err = syscall.Fstat(h.fd, &st)
			break
		}
		n.mu.Unlock()
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

func (n *node) Setattr(ctx context.Context, fh fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	l := n.lfs
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return syscall.EIO
	}
	p := n.path()
	if size, ok := in.GetSize(); ok {
		fd := -1
		if h, ok := fh.(*handle); ok {
			fd = h.fd
		} else {
			var err error
			if fd, err = unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0); err != nil {
				return fs.ToErrno(err)
			}
			defer unix.Close(fd)
		}
		if errno := l.truncate(n, fd, int64(size)); errno != 0 {
			return errno
		}
	}
	if mode, ok := in.GetMode(); ok {
		if err := unix.Chmod(p, mode); err != nil {
			return fs.ToErrno(err)
		}
	}
	uid, uok := in.GetUID()
	gid, gok := in.GetGID()
	if uok || gok {
		u, g := -1, -1
		if uok {
			u = int(uid)
		}
		if gok {
			g = int(gid)
		}
		if err := unix.Lchown(p, u, g); err != nil {
			return fs.ToErrno(err)
		}
	}
	mtime, mok := in.GetMTime()
	atime, aok := in.GetATime()
	if mok || aok {
		ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
		if aok {
			ts[0] = unix.NsecToTimespec(atime.UnixNano())
		}
		if mok {
			ts[1] = unix.NsecToTimespec(mtime.UnixNano())
		}
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fs.ToErrno(err)
		}
	}
	var st syscall.Stat_t
	var err error
	if h, ok := fh.(*handle); ok {
		err = syscall.Fstat(h.fd, &st)
	} else {
		err = syscall.Lstat(p, &st)
	}
	if err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

// truncate sets the size of n, open as fd; l.mu is held.
func (l *FS) truncate(n *node, fd int, size int64) syscall.Errno {
	if errno := l.begin(Op{Kind: Truncate, Path: n.rel(), Off: size}); errno != 0 {
		return errno
	}
	s, err := l.fileOf(n.ino(), fd)
	if err == nil {
		err = s.keep(fd, size, s.size)
	}
	if err == nil {
		err = unix.Ftruncate(fd, size)
	}
	return fs.ToErrno(err)
}

// openFlags are the flags the backing file of a handle is opened with:
// always for reading and writing, as a write saves the old bytes it
// overwrites first. O_APPEND is left to the kernel, which sends the offset.
func openFlags(flags uint32) int {
	return int(flags)&^(unix.O_ACCMODE|unix.O_APPEND|unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC) | unix.O_RDWR | unix.O_CLOEXEC
}

func (n *node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	l := n.lfs
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.dead {
		return nil, 0, syscall.EIO
	}
	fd, err := unix.Open(n.path(), openFlags(flags), 0)
	if err != nil {
		return nil, 0, fs.ToErrno(err)
	}
	if flags&unix.O_TRUNC != 0 {
		if errno := l.truncate(n, fd, 0); errno != 0 {
			unix.Close(fd)
			return nil, 0, errno
		}
	}
	return n.newHandle(fd), 0, 0
}

func (n *node) newHandle(fd int) *handle {
	h := &handle{n: n, fd: fd}
	n.mu.Lock()
	if n.open == nil {
		n.open = make(map[*handle]bool)
	}
	n.open[h] = true
	n.mu.Unlock()
	return h
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	l := n.lfs
	l.mu.Lock()
	defer l.mu.Unlock()
	if n.hidden(name) {
		return nil, nil, 0, syscall.EPERM
	}
	rel := filepath.Join(n.rel(), name)
	if errno := l.begin(Op{Kind: Create, Path: rel}); errno != 0 {
		return nil, nil, 0, errno
	}
	p := filepath.Join(n.path(), name)
	if err := l.note(n.ino(), n.path(), name); err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	created := true
	fd, err := unix.Open(p, openFlags(flags)|unix.O_CREAT|unix.O_EXCL, mode)
	if err == unix.EEXIST && flags&unix.O_EXCL == 0 {
		created = false
		fd, err = unix.Open(p, openFlags(flags), 0)
	}
	if err != nil {
		return nil, nil, 0, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, nil, 0, fs.ToErrno(err)
	}
	if created {
		// Nothing of it is synced: a cut leaves it empty, if its entry
		// stays at all.
		l.files[st.Ino] = &fileState{old: make(map[int64][]byte)}
		delete(l.dirs, st.Ino)
	}
	ch := n.child(ctx, name, &st, out)
	h := ch.Operations().(*node).newHandle(fd)
	if !created && flags&unix.O_TRUNC != 0 {
		if errno := l.truncate(ch.Operations().(*node), fd, 0); errno != 0 {
			h.Release(ctx)
			return nil, nil, 0, errno
		}
	}
	return ch, h, 0, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	l := n.lfs
	l.mu.Lock()
	defer l.mu.Unlock()
	if n.hidden(name) {
		return nil, syscall.EPERM
	}
	if errno := l.begin(Op{Kind: Mkdir, Path: filepath.Join(n.rel(), name)}); errno != 0 {
		return nil, errno
	}
	p := filepath.Join(n.path(), name)
	if err := l.note(n.ino(), n.path(), name); err != nil {
		return nil, fs.ToErrno(err)
	}
	if err := unix.Mkdir(p, mode); err != nil {
		return nil, fs.ToErrno(err)
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		return nil, fs.ToErrno(err)
	}
	l.dirs[st.Ino] = &dirState{fresh: true}
	delete(l.files, st.Ino)
	return n.child(ctx, name, &st, out), 0
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, false)
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	return n.remove(name, true)
}

// remove unlinks name, or removes it as a directory.
func (n *node) remove(name string, dir bool) syscall.Errno {
	l := n.lfs
	l.mu.Lock()
	defer l.mu.Unlock()
	if n.hidden(name) {
		return syscall.EPERM
	}
	kind := Unlink
	if dir {
		kind = Rmdir
	}
	if errno := l.begin(Op{Kind: kind, Path: filepath.Join(n.rel(), name)}); errno != 0 {
		return errno
	}
	p := filepath.Join(n.path(), name)
	e, err := lookup(p)
	switch {
	case err != nil:
		return fs.ToErrno(err)
	case e.ino == 0:
		return syscall.ENOENT
	case e.dir != dir && dir:
		return syscall.ENOTDIR
	case e.dir != dir:
		return syscall.EISDIR
	}
	if dir {
		if errno := emptyDir(p); errno != 0 {
			return errno
		}
	}
	if err := l.note(n.ino(), n.path(), name); err != nil {
		return fs.ToErrno(err)
	}
	moved, err := l.keepInode(e, p)
	switch {
	case err != nil || moved:
	case dir:
		err = unix.Rmdir(p)
	default:
		err = unix.Unlink(p)
	}
	if err == nil {
		l.forget(e.ino)
	}
	return fs.ToErrno(err)
}

// emptyDir returns ENOTEMPTY unless the directory p is empty.
func emptyDir(p string) syscall.Errno {
	des, err := os.ReadDir(p)
	switch {
	case err != nil:
		return fs.ToErrno(err)
	case len(des) > 0:
		return syscall.ENOTEMPTY
	}
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	l := n.lfs
	to, ok := newParent.(*node)
	if !ok {
		return syscall.EXDEV
	}
	if flags&^unix.RENAME_NOREPLACE != 0 {
		return syscall.EINVAL // RENAME_EXCHANGE, RENAME_WHITEOUT
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if n.hidden(name) || to.hidden(newName) {
		return syscall.EPERM
	}
	if errno := l.begin(Op{Kind: Rename, Path: filepath.Join(n.rel(), name), To: filepath.Join(to.rel(), newName)}); errno != 0 {
		return errno
	}
	src, dst := filepath.Join(n.path(), name), filepath.Join(to.path(), newName)
	from, err := lookup(src)
	if err != nil {
		return fs.ToErrno(err)
	}
	over, err := lookup(dst)
	if err != nil {
		return fs.ToErrno(err)
	}
	switch {
	case from.ino == 0:
		return syscall.ENOENT
	case from.ino == over.ino:
		return 0 // the same file: rename(2) does nothing
	case over.ino != 0 && flags&unix.RENAME_NOREPLACE != 0:
		return syscall.EEXIST
	case over.ino != 0 && from.dir && !over.dir:
		return syscall.ENOTDIR
	case over.ino != 0 && !from.dir && over.dir:
		return syscall.EISDIR
	case over.dir:
		if errno := emptyDir(dst); errno != 0 {
			return errno
		}
	}
	if err := l.note(n.ino(), n.path(), name); err != nil {
		return fs.ToErrno(err)
	}
	if err := l.note(to.ino(), to.path(), newName); err != nil {
		return fs.ToErrno(err)
	}
	if _, err := l.keepInode(over, dst); err != nil {
		return fs.ToErrno(err)
	}
	if err := unix.Rename(src, dst); err != nil {
		return fs.ToErrno(err)
	}
	if over.ino != 0 {
		l.forget(over.ino)
	}
	return 0
}

func (n *node) Readdir(ctx context.Context) (fs.DirStream, syscall.Errno) {
	n.lfs.mu.RLock()
	defer n.lfs.mu.RUnlock()
	if n.lfs.dead {
		return nil, syscall.EIO
	}
	p := n.path()
	des, err := os.ReadDir(p)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	list := make([]fuse.DirEntry, 0, len(des))
	for _, de := range des {
		if n.hidden(de.Name()) {
			continue
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(filepath.Join(p, de.Name()), &st); err != nil {
			continue // gone meanwhile
		}
		list = append(list, fuse.DirEntry{Name: de.Name(), Mode: st.Mode, Ino: st.Ino})
	}
	return fs.NewListDirStream(list), 0
}

// fsyncDatasync is the bit of FUSE_FSYNC's flags that makes it an
// fdatasync (FUSE_FSYNC_FDATASYNC in linux/fuse.h).
const fsyncDatasync = 1

// Fsync syncs a file (fsync or fdatasync) or a directory (fsync of a
// directory).
func (n *node) Fsync(ctx context.Context, fh fs.FileHandle, flags uint32) syscall.Errno {
	l := n.lfs
	l.mu.Lock()
	defer l.mu.Unlock()
	kind := Fsync
	switch {
	case n.StableAttr().Mode == unix.S_IFDIR:
		kind = FsyncDir
	case flags&fsyncDatasync != 0:
		kind = Fdatasync
	}
	if errno := l.begin(Op{Kind: kind, Path: n.rel()}); errno != 0 {
		return errno
	}
	switch {
	case kind == FsyncDir:
		delete(l.dirs, n.ino())
		return fs.ToErrno(l.collect())
	case kind == Fdatasync && l.opts.IgnoreDatasync:
		l.ignored++
	default:
		delete(l.files, n.ino())
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	var st syscall.Statfs_t
	if err := syscall.Statfs(n.lfs.backing, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStatfsT(&st)
	return 0
}

// handle is an open file of the mount: its backing file, open for reading
// and writing.
type handle struct {
	n  *node
	fd int
}

func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	h.n.lfs.mu.RLock()
	defer h.n.lfs.mu.RUnlock()
	if h.n.lfs.dead {
		return nil, syscall.EIO
	}
	k, err := unix.Pread(h.fd, dest, off)
	if err != nil {
		return nil, fs.ToErrno(err)
	}
	return fuse.ReadResultData(dest[:k]), 0
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	l := h.n.lfs
	l.mu.Lock()
	defer l.mu.Unlock()
	if errno := l.begin(Op{Kind: Write, Path: h.n.rel(), Off: off, Len: int64(len(data))}); errno != 0 {
		return 0, errno
	}
	s, err := l.fileOf(h.n.ino(), h.fd)
	if err == nil {
		err = s.keep(h.fd, off, off+int64(len(data)))
	}
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	k, err := unix.Pwrite(h.fd, data, off)
	if err != nil {
		return 0, fs.ToErrno(err)
	}
	return uint32(k), 0
}

func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	h.n.lfs.mu.RLock()
	defer h.n.lfs.mu.RUnlock()
	if h.n.lfs.dead {
		return syscall.EIO
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(h.fd, &st); err != nil {
		return fs.ToErrno(err)
	}
	out.FromStat(&st)
	return 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.n.mu.Lock()
	delete(h.n.open, h)
	h.n.mu.Unlock()
	return fs.ToErrno(unix.Close(h.fd))
}
