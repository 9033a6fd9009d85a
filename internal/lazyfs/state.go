//go:build linux

package lazyfs

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// block is the unit in which the old bytes of a file are kept.
const block = 4096

// fileState is what a file held at its last sync, as far as it changed
// since. A file with no fileState has not changed since its last sync.
type fileState struct {
	size int64            // its size at the last sync
	old  map[int64][]byte // by block index: the block's bytes below size at the last sync
}

// keep saves, before the bytes [off, end) of the file open as fd change,
// those of them below the synced size whose block is not saved yet.
func (s *fileState) keep(fd int, off, end int64) error {
	end = min(end, s.size)
	if off >= end {
		return nil // all of it past the synced size
	}
	for b := off / block; b*block < end; b++ {
		if _, ok := s.old[b]; ok {
			continue
		}
		lo, hi := b*block, min((b+1)*block, s.size)
		buf := make([]byte, hi-lo)
		for n := 0; n < len(buf); {
			k, err := unix.Pread(fd, buf[n:], lo+int64(n))
			if err != nil {
				return err
			}
			if k == 0 {
				// Every block cut off since the sync was saved first.
				return fmt.Errorf("lazyfs: block %d is short of its synced size %d", b, s.size)
			}
			n += k
		}
		s.old[b] = buf
	}
	return nil
}

// entry is what a directory entry names: an inode, or nothing (ino 0).
type entry struct {
	ino uint64
	dir bool
}

// dirState is what a directory held at its last sync, as far as it
// changed since. A directory with no dirState has not changed since its
// last sync.
type dirState struct {
	// fresh is set for a directory made since: none of its entries is
	// synced.
	fresh bool
	// was holds, for each name changed since the last sync, what it named
	// then.
	was map[string]entry
}

// begin starts an operation that changes the filesystem; f.mu is held.
// It fails with EIO once the power is cut, and cuts it when OnOp says so.
func (f *FS) begin(op Op) syscall.Errno {
	if f.dead {
		return syscall.EIO
	}
	if f.opts.OnOp != nil && f.opts.OnOp(op) {
		f.cutLocked()
		return syscall.EIO
	}
	return 0
}

// fileOf returns the fileState of inode ino, open as fd, making one that
// says it is synced as it is now if it has none.
func (f *FS) fileOf(ino uint64, fd int) (*fileState, error) {
	if s := f.files[ino]; s != nil {
		return s, nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, err
	}
	s := &fileState{size: st.Size, old: make(map[int64][]byte)}
	f.files[ino] = s
	return s, nil
}

// note records, before the entry name of the directory dirIno (at path
// dir in the backing directory) changes, what it names now, if that is
// still what it named at the directory's last sync.
func (f *FS) note(dirIno uint64, dir, name string) error {
	s := f.dirs[dirIno]
	if s == nil {
		s = &dirState{was: make(map[string]entry)}
		f.dirs[dirIno] = s
	}
	if s.fresh {
		return nil
	}
	if _, ok := s.was[name]; ok {
		return nil
	}
	e, err := lookup(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	s.was[name] = e
	return nil
}

// lookup returns what the path p of the backing directory names.
func lookup(p string) (entry, error) {
	var st unix.Stat_t
	err := unix.Lstat(p, &st)
	if errors.Is(err, unix.ENOENT) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, err
	}
	return entry{ino: st.Ino, dir: st.Mode&unix.S_IFMT == unix.S_IFDIR}, nil
}

// synced reports whether a synced directory entry names inode ino: one
// that changed since its directory's last sync (an entry that did not
// change is in the live view, which ino is leaving).
func (f *FS) synced(ino uint64) bool {
	for _, s := range f.dirs {
		for _, e := range s.was {
			if e.ino == ino {
				return true
			}
		}
	}
	return false
}

// keepInode keeps the inode e, at path p of the backing directory, in the
// stash before it leaves the live view, if a synced entry names it; a
// directory (empty by then) moves there, a file gets a hard link there.
// It reports whether p is gone (moved).
func (f *FS) keepInode(e entry, p string) (moved bool, err error) {
	if e.ino == 0 || !f.synced(e.ino) {
		return false, nil
	}
	dst := filepath.Join(f.stash, strconv.FormatUint(e.ino, 10))
	if e.dir {
		return true, os.Rename(p, dst)
	}
	if _, err := os.Lstat(dst); err == nil {
		return false, nil
	}
	return false, os.Link(p, dst)
}

// forget drops what is kept of inode ino, which left the live view, unless
// a synced entry still names it.
func (f *FS) forget(ino uint64) {
	if !f.synced(ino) {
		delete(f.files, ino)
		delete(f.dirs, ino)
	}
}

// collect drops from the stash the inodes no synced entry names any more.
func (f *FS) collect() error {
	des, err := os.ReadDir(f.stash)
	if err != nil {
		return err
	}
	for _, de := range des {
		ino, err := strconv.ParseUint(de.Name(), 10, 64)
		if err != nil || f.synced(ino) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(f.stash, de.Name())); err != nil {
			return err
		}
		delete(f.files, ino)
		delete(f.dirs, ino)
	}
	return nil
}

// cutLocked cuts the power; f.mu is held.
func (f *FS) cutLocked() {
	f.dead = true
	close(f.deadCh)
	f.loss, f.cutErr = f.restore()
	if f.cutErr != nil {
		f.cutErr = fmt.Errorf("lazyfs: cut: %w", f.cutErr)
	}
}

// restore rewrites the backing directory to what was synced: the tree of
// synced entries from the root, each file with its synced data and size.
func (f *FS) restore() (Loss, error) {
	var loss Loss
	// Where each inode is now: in the live view, or in the stash.
	where := make(map[uint64]string)
	cut := filepath.Join(f.meta, "cut")
	err := filepath.WalkDir(f.backing, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == cut {
			return filepath.SkipDir
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		if _, ok := where[st.Ino]; !ok {
			where[st.Ino] = p
		}
		return nil
	})
	if err != nil {
		return loss, err
	}

	// The synced tree, parents before children.
	type item struct {
		rel string
		e   entry
	}
	var tree []item
	placed := map[uint64]bool{f.rootIno: true}
	var visit func(ino uint64, rel string) error
	visit = func(ino uint64, rel string) error {
		entries, changed, err := f.syncedEntries(ino, where[ino])
		if err != nil {
			return err
		}
		loss.Entries += changed
		for _, name := range slices.Sorted(maps.Keys(entries)) {
			e := entries[name]
			// A directory synced after a rename into it, and the one it
			// left not synced, both name the inode: a file gets both
			// names (hard links), a directory the first.
			if e.dir && placed[e.ino] {
				loss.Entries++
				continue
			}
			if _, ok := where[e.ino]; !ok {
				return fmt.Errorf("inode %d of synced entry %s is gone", e.ino, filepath.Join(rel, name))
			}
			placed[e.ino] = true
			tree = append(tree, item{filepath.Join(rel, name), e})
			if e.dir {
				if err := visit(e.ino, filepath.Join(rel, name)); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := visit(f.rootIno, ""); err != nil {
		return loss, err
	}

	// Each synced file back to its synced data and size.
	for _, it := range tree {
		s := f.files[it.e.ino]
		if it.e.dir || s == nil {
			continue
		}
		n, err := s.restore(where[it.e.ino])
		if err != nil {
			return loss, err
		}
		if n > 0 {
			loss.Files++
			loss.Bytes += n
		}
	}

	// The tree, built beside the live view out of hard links, replaces it.
	if err := os.RemoveAll(cut); err != nil {
		return loss, err
	}
	if err := os.Mkdir(cut, 0o700); err != nil {
		return loss, err
	}
	for _, it := range tree {
		p := filepath.Join(cut, it.rel)
		if !it.e.dir {
			if err := os.Link(where[it.e.ino], p); err != nil {
				return loss, err
			}
			continue
		}
		fi, err := os.Lstat(where[it.e.ino])
		if err != nil {
			return loss, err
		}
		if err := os.Mkdir(p, fi.Mode().Perm()); err != nil {
			return loss, err
		}
		if err := os.Chmod(p, fi.Mode().Perm()); err != nil { // not less the umask
			return loss, err
		}
	}
	live, err := os.ReadDir(f.backing)
	if err != nil {
		return loss, err
	}
	for _, de := range live {
		if de.Name() != metaDir {
			if err := os.RemoveAll(filepath.Join(f.backing, de.Name())); err != nil {
				return loss, err
			}
		}
	}
	back, err := os.ReadDir(cut)
	if err != nil {
		return loss, err
	}
	for _, de := range back {
		if err := os.Rename(filepath.Join(cut, de.Name()), filepath.Join(f.backing, de.Name())); err != nil {
			return loss, err
		}
	}
	return loss, os.RemoveAll(f.meta)
}

// syncedEntries returns the synced entries of the directory ino, now at
// path p of the backing directory, and how many of them differ from its
// live ones.
func (f *FS) syncedEntries(ino uint64, p string) (map[string]entry, int, error) {
	des, err := os.ReadDir(p)
	if err != nil {
		return nil, 0, err
	}
	live := make(map[string]entry, len(des))
	for _, de := range des {
		if ino == f.rootIno && de.Name() == metaDir {
			continue
		}
		e, err := lookup(filepath.Join(p, de.Name()))
		if err != nil {
			return nil, 0, err
		}
		live[de.Name()] = e
	}
	s := f.dirs[ino]
	switch {
	case s == nil:
		return live, 0, nil
	case s.fresh:
		return nil, len(live), nil
	}
	changed := 0
	for name, was := range s.was {
		if live[name] == was {
			continue
		}
		changed++
		if was.ino == 0 {
			delete(live, name)
		} else {
			live[name] = was
		}
	}
	return live, changed, nil
}

// restore puts the file at p back to its synced data and size, and returns
// how many bytes that dropped.
func (s *fileState) restore(p string) (int64, error) {
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, err
	}
	dropped := max(st.Size-s.size, 0)
	for b, old := range s.old {
		dropped += int64(len(old))
		if _, err := unix.Pwrite(fd, old, b*block); err != nil {
			return 0, err
		}
	}
	return dropped, unix.Ftruncate(fd, s.size)
}
