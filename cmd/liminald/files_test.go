package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// setUmask sets the umask of the test process, which the processes it
// starts inherit, and puts the old one back at cleanup. Tests that call it
// must not run in parallel.
func setUmask(t *testing.T, mask int) {
	t.Helper()
	old := syscall.Umask(mask)
	t.Cleanup(func() { syscall.Umask(old) })
}

// wantPrivate fails t unless each file is there with mode 0600.
func wantPrivate(t *testing.T, paths ...string) {
	t.Helper()
	for _, path := range paths {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("stat: %v", err)
			continue
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s has mode %#o, want 0600: it holds payloads", filepath.Base(path), got)
		}
	}
}

// TestFiles_Private: every file that holds events is created 0600, under a
// umask that lets everyone read what is created: the daemon's database with
// its -wal and -shm, a backup, an export and an imported database.
func TestFiles_Private(t *testing.T) {
	setUmask(t, 0o022)
	d := startDaemon(t)
	for _, args := range [][]string{{"receive", "c", "m"}, {"start", "c", "m"}, {"step", "--output", "secret", "c", "m", "0"}} {
		if _, stderr, code := runCLI(t, d, args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	wantPrivate(t, d.db, d.db+"-wal", d.db+"-shm")

	backup := filepath.Join(d.dir, "backup.db")
	dump := filepath.Join(d.dir, "dump.jsonl")
	imported := &daemonProc{t: t, dir: d.dir, db: filepath.Join(d.dir, "imported.db")}
	for _, run := range []struct {
		d    *daemonProc
		args []string
	}{
		{d, []string{"backup", backup}},
		{d, []string{"export", dump}},
		{imported, []string{"import", dump}},
	} {
		if _, stderr, code := runCLI(t, run.d, run.args...); code != 0 {
			t.Fatalf("%v: %s", run.args, stderr)
		}
	}
	wantPrivate(t, backup, dump, imported.db)
}
