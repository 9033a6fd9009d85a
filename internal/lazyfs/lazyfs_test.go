//go:build linux

package lazyfs

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"liminald/internal/testenv"
)

// mount mounts a lazy filesystem of a new backing directory, for the
// test; it is unmounted at its end.
func mount(t *testing.T, opts Options) (f *FS, mnt, backing string) {
	t.Helper()
	needFuse(t)
	backing, mnt = t.TempDir(), t.TempDir()
	f, err := Mount(mnt, backing, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := f.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return f, mnt, backing
}

// must fails the test on err.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// openRW opens the file p for reading and writing, until the end of the
// test.
func openRW(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	must(t, err)
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// needFuse ends the test through testenv unless it can mount a FUSE
// filesystem: as root, with /dev/fuse.
func needFuse(t *testing.T) {
	t.Helper()
	testenv.NeedRoot(t, "mounting a FUSE filesystem")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Missing(t, "/dev/fuse: %v", err)
	}
}

// put writes data to the file p (making it if need be) at offset off, and
// syncs it with sync ("", "fsync", "fdatasync").
func put(t *testing.T, p string, off int64, data, sync string) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer unix.Close(fd)
	if _, err := unix.Pwrite(fd, []byte(data), off); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
	syncFd(t, fd, p, sync)
}

func syncFd(t *testing.T, fd int, p, sync string) {
	t.Helper()
	var err error
	switch sync {
	case "fsync":
		err = unix.Fsync(fd)
	case "fdatasync":
		err = unix.Fdatasync(fd)
	case "":
	default:
		t.Fatalf("sync %q", sync)
	}
	if err != nil {
		t.Fatalf("%s %s: %v", sync, p, err)
	}
}

// syncDir fsyncs the directory p.
func syncDir(t *testing.T, p string) {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Fsync(fd); err != nil {
		t.Fatalf("fsync directory %s: %v", p, err)
	}
}

// cut cuts the power and returns what the backing directory holds then:
// each file's content, and "/" for each directory, by relative path.
func cut(t *testing.T, f *FS, backing string) map[string]string {
	t.Helper()
	if _, err := f.Cut(); err != nil {
		t.Fatal(err)
	}
	return tree(t, backing)
}

func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	got := make(map[string]string)
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			got[rel] = "/"
			return nil
		}
		b, err := os.ReadFile(p)
		got[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func wantTree(t *testing.T, got, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after the cut the backing directory holds\n%v\nwant\n%v", show(got), show(want))
	}
}

func show(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		if len(v) > 40 {
			v = fmt.Sprintf("%q... (%d bytes)", v[:40], len(v))
		} else {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, "  %s: %s\n", k, v)
	}
	return b.String()
}

func TestCut_DataSinceTheLastSyncIsGone(t *testing.T) {
	f, mnt, backing := mount(t, Options{})
	a := filepath.Join(mnt, "a")
	put(t, a, 0, "hello", "fsync")
	syncDir(t, mnt)
	put(t, a, 5, " world", "")                  // appended, not synced
	put(t, filepath.Join(mnt, "b"), 0, "b", "") // made, not synced
	loss, err := f.Cut()
	if err != nil {
		t.Fatal(err)
	}
	wantTree(t, tree(t, backing), map[string]string{"a": "hello"})
	if loss.Files != 1 || loss.Bytes != 6 || loss.Entries != 1 {
		t.Errorf("loss = %+v, want 1 file, 6 bytes, 1 entry", loss)
	}
}

func TestCut_SyncedDataSurvives(t *testing.T) {
	for _, sync := range []string{"fsync", "fdatasync"} {
		t.Run(sync, func(t *testing.T) {
			f, mnt, backing := mount(t, Options{})
			a := filepath.Join(mnt, "a")
			put(t, a, 0, strings.Repeat("x", 3*block+10), "fsync")
			syncDir(t, mnt)
			put(t, a, block-2, "SYNCED", sync)
			put(t, a, 2*block, "lost", "")
			want := []byte(strings.Repeat("x", 3*block+10))
			copy(want[block-2:], "SYNCED")
			wantTree(t, cut(t, f, backing), map[string]string{"a": string(want)})
		})
	}
}

func TestCut_OverwrittenAndTruncatedBlocksComeBack(t *testing.T) {
	f, mnt, backing := mount(t, Options{})
	a := filepath.Join(mnt, "a")
	synced := strings.Repeat("0123456789", 1000)
	put(t, a, 0, synced, "fsync")
	syncDir(t, mnt)
	put(t, a, 100, strings.Repeat("y", 5000), "")
	must(t, os.Truncate(a, 10))
	put(t, a, 20000, "far", "") // extended again, past a hole
	fd, err := unix.Open(a, unix.O_RDWR|unix.O_TRUNC|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(fd)
	wantTree(t, cut(t, f, backing), map[string]string{"a": synced})
}

func TestCut_FileWhoseDirectoryWasNotSynced(t *testing.T) {
	f, mnt, backing := mount(t, Options{})
	must(t, os.Mkdir(filepath.Join(mnt, "d"), 0o700))
	syncDir(t, mnt)
	syncDir(t, filepath.Join(mnt, "d"))
	put(t, filepath.Join(mnt, "d", "synced-data"), 0, "data", "fsync") // its entry never synced
	put(t, filepath.Join(mnt, "top"), 0, "top", "fdatasync")           // likewise
	wantTree(t, cut(t, f, backing), map[string]string{"d": "/"})
}

func TestCut_FileWhoseDataWasNotSynced(t *testing.T) {
	f, mnt, backing := mount(t, Options{})
	put(t, filepath.Join(mnt, "a"), 0, "data", "")
	syncDir(t, mnt)
	wantTree(t, cut(t, f, backing), map[string]string{"a": ""})
}

func TestCut_Rename(t *testing.T) {
	for _, synced := range []bool{false, true} {
		t.Run(fmt.Sprintf("directory synced %v", synced), func(t *testing.T) {
			f, mnt, backing := mount(t, Options{})
			put(t, filepath.Join(mnt, "a"), 0, "A", "fsync")
			put(t, filepath.Join(mnt, "b"), 0, "B", "fsync")
			syncDir(t, mnt)
			// a replaces b: b's inode must come back if the directory
			// is not synced.
			must(t, os.Rename(filepath.Join(mnt, "a"), filepath.Join(mnt, "b")))
			want := map[string]string{"a": "A", "b": "B"}
			if synced {
				syncDir(t, mnt)
				want = map[string]string{"b": "A"}
			}
			wantTree(t, cut(t, f, backing), want)
		})
	}
}

func TestCut_RenameAcrossDirectories(t *testing.T) {
	f, mnt, backing := mount(t, Options{})
	for _, d := range []string{"d1", "d2"} {
		must(t, os.Mkdir(filepath.Join(mnt, d), 0o700))
	}
	put(t, filepath.Join(mnt, "d1", "x"), 0, "X", "fsync")
	syncDir(t, filepath.Join(mnt, "d1"))
	syncDir(t, filepath.Join(mnt, "d2"))
	syncDir(t, mnt)
	must(t, os.Rename(filepath.Join(mnt, "d1", "x"), filepath.Join(mnt, "d2", "y")))
	put(t, filepath.Join(mnt, "d2", "y"), 1, "Y", "fsync") // the file is synced, not its move
	wantTree(t, cut(t, f, backing), map[string]string{"d1": "/", "d1/x": "XY", "d2": "/"})
}

func TestCut_Unlink(t *testing.T) {
	for _, synced := range []bool{false, true} {
		t.Run(fmt.Sprintf("directory synced %v", synced), func(t *testing.T) {
			f, mnt, backing := mount(t, Options{})
			a := filepath.Join(mnt, "a")
			put(t, a, 0, "A", "fsync")
			syncDir(t, mnt)
			fd := openRW(t, a)
			must(t, os.Remove(a))
			// Written and synced through a descriptor while unlinked.
			if _, err := unix.Pwrite(fd, []byte("Z"), 1); err != nil {
				t.Fatal(err)
			}
			syncFd(t, fd, a, "fsync")
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil || st.Size != 2 {
				t.Errorf("fstat of the unlinked file: size %d, %v; want 2", st.Size, err)
			}
			want := map[string]string{"a": "AZ"}
			if synced {
				syncDir(t, mnt)
				want = map[string]string{}
			}
			wantTree(t, cut(t, f, backing), want)
		})
	}
}

func TestCut_Directories(t *testing.T) {
	f, mnt, backing := mount(t, Options{})
	for _, d := range []string{"kept", "gone", "removed"} {
		must(t, os.Mkdir(filepath.Join(mnt, d), 0o700))
	}
	put(t, filepath.Join(mnt, "kept", "x"), 0, "x", "fsync")
	syncDir(t, filepath.Join(mnt, "kept"))
	syncDir(t, mnt)
	must(t, os.Remove(filepath.Join(mnt, "removed")))
	must(t, os.Remove(filepath.Join(mnt, "gone")))
	syncDir(t, mnt) // gone and removed are gone for good
	must(t, os.Mkdir(filepath.Join(mnt, "new"), 0o700))
	put(t, filepath.Join(mnt, "new", "y"), 0, "y", "fsync")
	syncDir(t, filepath.Join(mnt, "new")) // its own entry is not synced
	must(t, os.Rename(filepath.Join(mnt, "kept"), filepath.Join(mnt, "moved")))
	wantTree(t, cut(t, f, backing), map[string]string{"kept": "/", "kept/x": "x"})
}

func TestCut_RmdirComesBack(t *testing.T) {
	f, mnt, backing := mount(t, Options{})
	d := filepath.Join(mnt, "d")
	must(t, os.Mkdir(d, 0o700))
	put(t, filepath.Join(d, "x"), 0, "x", "fsync")
	syncDir(t, d)
	syncDir(t, mnt)
	must(t, os.Remove(filepath.Join(d, "x")))
	syncDir(t, d)
	must(t, os.Remove(d))
	wantTree(t, cut(t, f, backing), map[string]string{"d": "/"})
}

func TestCut_EveryOperationFailsAfter(t *testing.T) {
	f, mnt, _ := mount(t, Options{})
	a := filepath.Join(mnt, "a")
	put(t, a, 0, "a", "fsync")
	fd := openRW(t, a)
	if _, err := f.Cut(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Dead():
	default:
		t.Error("Dead is not closed after Cut")
	}
	if _, err := unix.Pwrite(fd, []byte("x"), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("write after the cut: %v, want EIO", err)
	}
	if err := unix.Fsync(fd); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync after the cut: %v, want EIO", err)
	}
	if _, err := os.Create(filepath.Join(mnt, "b")); !errors.Is(err, syscall.EIO) {
		t.Errorf("create after the cut: %v, want EIO", err)
	}
}

func TestOnOp_CutsBeforeTheOperation(t *testing.T) {
	var ops []Op
	f, mnt, backing := mount(t, Options{OnOp: func(op Op) bool {
		ops = append(ops, op)
		return op.Kind == Write && op.Off == 2
	}})
	a := filepath.Join(mnt, "a")
	put(t, a, 0, "ab", "fsync")
	syncDir(t, mnt)
	fd := openRW(t, a)
	if _, err := unix.Pwrite(fd, []byte("c"), 2); !errors.Is(err, syscall.EIO) {
		t.Errorf("the write OnOp cut at: %v, want EIO", err)
	}
	<-f.Dead()
	wantTree(t, tree(t, backing), map[string]string{"a": "ab"})
	want := []Op{{Kind: Create, Path: "a"}, {Kind: Write, Path: "a", Len: 2}, {Kind: Fsync, Path: "a"}, {Kind: FsyncDir}, {Kind: Write, Path: "a", Off: 2, Len: 1}}
	if !slices.Equal(ops, want) {
		t.Errorf("OnOp was told of %v, want %v", ops, want)
	}
}

func TestIgnoreDatasync(t *testing.T) {
	f, mnt, backing := mount(t, Options{IgnoreDatasync: true})
	a := filepath.Join(mnt, "a")
	put(t, a, 0, "fsynced", "fsync")
	syncDir(t, mnt)
	put(t, a, 7, ", fdatasynced", "fdatasync")
	if f.Ignored() != 1 {
		t.Errorf("Ignored() = %d, want 1", f.Ignored())
	}
	wantTree(t, cut(t, f, backing), map[string]string{"a": "fsynced"})
}

func TestUnmount_WithoutACutKeepsEverything(t *testing.T) {
	f, mnt, backing := mount(t, Options{})
	put(t, filepath.Join(mnt, "a"), 0, "never synced", "")
	entries, err := os.ReadDir(mnt)
	if err != nil || len(entries) != 1 || entries[0].Name() != "a" {
		t.Errorf("the mount lists %v, %v; want only a (its own directory is hidden)", entries, err)
	}
	must(t, f.Unmount()) // and again at the end of the test: a no-op
	wantTree(t, tree(t, backing), map[string]string{"a": "never synced"})
}

// TestCut_RandomOperations runs random writes, truncates, syncs, creates,
// renames and unlinks over two directories, against a model of what each
// file and directory held at its last sync, and compares the backing
// directory after the cut with the model.
func TestCut_RandomOperations(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			randomRun(t, rand.New(rand.NewPCG(seed, 1)))
		})
	}
}

// inode is a file of the model.
type inode struct{ live, synced []byte }

// dir is a directory of the model: the files its names name, now and at
// its last sync.
type dir struct{ live, synced map[string]*inode }

func randomRun(t *testing.T, r *rand.Rand) {
	f, mnt, backing := mount(t, Options{})
	dirs := map[string]*dir{"": {map[string]*inode{}, map[string]*inode{}}, "d": {map[string]*inode{}, map[string]*inode{}}}
	must(t, os.Mkdir(filepath.Join(mnt, "d"), 0o700))
	syncDir(t, mnt)
	names := []string{"a", "b", "c"}
	pick := func() (string, string) { // a directory and a name in it
		return []string{"", "d"}[r.IntN(2)], names[r.IntN(len(names))]
	}
	for range 200 {
		dn, name := pick()
		d := dirs[dn]
		p := filepath.Join(mnt, dn, name)
		switch in := d.live[name]; r.IntN(8) {
		case 0, 1: // write, making the file if need be
			off := r.Int64N(3 * block)
			data := bytes.Repeat([]byte{byte('a' + r.IntN(26))}, 1+r.IntN(block+100))
			put(t, p, off, string(data), "")
			if in == nil {
				in = &inode{}
				d.live[name] = in
			}
			if need := off + int64(len(data)); int64(len(in.live)) < need {
				in.live = append(in.live, make([]byte, need-int64(len(in.live)))...)
			}
			copy(in.live[off:], data)
		case 2: // truncate
			if in == nil {
				continue
			}
			size := r.Int64N(3 * block)
			must(t, os.Truncate(p, size))
			if int64(len(in.live)) < size {
				in.live = append(in.live, make([]byte, size-int64(len(in.live)))...)
			}
			in.live = in.live[:size]
		case 3: // sync the file
			if in == nil {
				continue
			}
			put(t, p, 0, "", []string{"fsync", "fdatasync"}[r.IntN(2)])
			in.synced = slices.Clone(in.live)
		case 4: // sync the directory
			syncDir(t, filepath.Join(mnt, dn))
			d.synced = maps.Clone(d.live)
		case 5: // unlink
			if in == nil {
				continue
			}
			must(t, os.Remove(p))
			delete(d.live, name)
		case 6, 7: // rename, maybe over another file
			if in == nil {
				continue
			}
			tn, tname := pick()
			if tn == dn && tname == name {
				continue
			}
			must(t, os.Rename(p, filepath.Join(mnt, tn, tname)))
			delete(d.live, name)
			dirs[tn].live[tname] = in
		}
	}
	want := map[string]string{"d": "/"}
	for dn, d := range dirs {
		for name, in := range d.synced {
			want[filepath.Join(dn, name)] = string(in.synced)
		}
	}
	wantTree(t, cut(t, f, backing), want)
}
