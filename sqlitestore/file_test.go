package sqlitestore

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// setUmask sets the process's umask for the test, and puts the old one back
// at cleanup. Tests that call it must not run in parallel.
func setUmask(tb testing.TB, mask int) {
	tb.Helper()
	old := syscall.Umask(mask)
	tb.Cleanup(func() { syscall.Umask(old) })
}

// wantMode fails tb unless the file at path has the permission bits want.
func wantMode(tb testing.TB, path string, want os.FileMode) {
	tb.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		tb.Errorf("stat: %v", err)
		return
	}
	if got := fi.Mode().Perm(); got != want {
		tb.Errorf("%s has mode %#o, want %#o", filepath.Base(path), got, want)
	}
}

// TestCreate: a database made by Create, then Open, is 0600 with its -wal
// and -shm under a umask that lets everyone read what SQLite creates.
func TestCreate(t *testing.T) {
	setUmask(t, 0o022)
	path := filepath.Join(t.TempDir(), "new.db")
	created, err := Create(path)
	if err != nil || !created {
		t.Fatalf("Create = %v, %v; want true, nil", created, err)
	}
	s := mustOpenPath(t, path, Options{})
	writeLifecycles(t, s, 1, 2)
	for _, name := range []string{path, path + "-wal", path + "-shm"} {
		wantMode(t, name, 0o600)
	}
	if created, err := Create(path); err != nil || created {
		t.Errorf("Create of an existing database = %v, %v; want false, nil", created, err)
	}
	if _, err := Create(filepath.Join(t.TempDir(), "missing", "x.db")); err == nil {
		t.Error("Create in a missing directory succeeded")
	}
}

// TestRemove: Remove takes the database and its -wal and -shm, and a
// database that is not there is no error.
func TestRemove(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gone.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	writeLifecycles(t, s, 1, 1)
	if _, err := Check(context.Background(), path, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"-wal", "-shm"} {
		os.WriteFile(path+suffix, nil, 0o600) // as a crash would leave them
	}
	if err := Remove(path); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		t.Errorf("left after Remove: %s", e.Name())
	}
	if err := Remove(path); err != nil {
		t.Errorf("Remove of a database that is not there: %v", err)
	}
}
