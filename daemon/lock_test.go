package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func TestAcquireLock(t *testing.T) {
	t.Run("SecondFailsUntilReleased", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "liminald.db.lock")
		first, err := AcquireLock(path)
		if err != nil {
			t.Fatalf("AcquireLock: %v", err)
		}
		t.Cleanup(func() { first.Release() })
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("lock file = %v, %v; want mode 0600", fi, err)
		}

		// flock belongs to the open file description: a second open in this
		// process conflicts just as another process would.
		second, err := AcquireLock(path)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second AcquireLock = %v, %v; want ErrLocked", second, err)
		}
		for _, want := range []string{path, "another liminald", "pid " + strconv.Itoa(os.Getpid())} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("second AcquireLock error = %q, want it to hold %q", err, want)
			}
		}

		if err := first.Release(); err != nil {
			t.Fatalf("Release: %v", err)
		}
		if err := first.Release(); err != nil {
			t.Errorf("Release again = %v, want nil", err)
		}
		third, err := AcquireLock(path)
		if err != nil {
			t.Fatalf("AcquireLock after Release: %v", err)
		}
		if err := third.Release(); err != nil {
			t.Errorf("Release: %v", err)
		}
		if _, err := os.Stat(path); err != nil {
			t.Errorf("lock file after Release: %v, want it kept", err)
		}
	})
	t.Run("OtherPathsIndependent", func(t *testing.T) {
		dir := t.TempDir()
		a, err := AcquireLock(filepath.Join(dir, "a.lock"))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Release()
		b, err := AcquireLock(filepath.Join(dir, "b.lock"))
		if err != nil {
			t.Fatalf("AcquireLock of another file: %v", err)
		}
		b.Release()
	})
	t.Run("Symlink", func(t *testing.T) {
		dir := t.TempDir()
		target := filepath.Join(dir, "precious")
		if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "liminald.sock.lock")
		if err := os.Symlink(target, path); err != nil {
			t.Fatal(err)
		}
		if l, err := AcquireLock(path); err == nil {
			l.Release()
			t.Errorf("AcquireLock through a symbolic link succeeded, want an error")
		}
		if b, _ := os.ReadFile(target); string(b) != "keep me" {
			t.Errorf("symlink target = %q, want it untouched", b)
		}
	})
	t.Run("MissingDirectory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "no", "x.lock")
		if _, err := AcquireLock(path); err == nil || errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), path) {
			t.Errorf("AcquireLock = %v, want an error naming %s", err, path)
		}
	})
	t.Run("DiscardRemovesWhatItMade", func(t *testing.T) {
		dir := t.TempDir()
		made := filepath.Join(dir, "made.lock")
		l, err := AcquireLock(made)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Discard(); err != nil {
			t.Fatalf("Discard: %v", err)
		}
		if _, err := os.Lstat(made); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("lock file after Discard: %v, want it removed", err)
		}
		if err := l.Discard(); err != nil {
			t.Errorf("Discard again = %v, want nil", err)
		}

		found := filepath.Join(dir, "found.lock")
		if err := os.WriteFile(found, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err = AcquireLock(found)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Discard(); err != nil {
			t.Fatalf("Discard: %v", err)
		}
		if _, err := os.Stat(found); err != nil {
			t.Errorf("lock file found there, after Discard: %v, want it kept", err)
		}
	})
	t.Run("DiscardKeepsAnotherHoldersFile", func(t *testing.T) {
		// The file was replaced after this lock took it (its directory
		// removed and made again, say): the new one is not this lock's.
		path := filepath.Join(t.TempDir(), "x.lock")
		mine, err := AcquireLock(path)
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(path)
		theirs, err := AcquireLock(path)
		if err != nil {
			t.Fatal(err)
		}
		defer theirs.Release()
		if err := mine.Discard(); err != nil {
			t.Fatalf("Discard: %v", err)
		}
		if !theirs.Held() {
			t.Error("Discard removed the lock file another lock holds")
		}
	})
}

// TestAcquireLock_DiscardRace: while holders create, take and discard the
// same lock file over and over, never do two hold it at once. A process that
// opened the file just before its holder removed it must not keep a lock on
// the removed file while another takes a new one.
func TestAcquireLock_DiscardRace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "race.lock")
	var holders, overlaps, taken atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 300 {
				l, err := AcquireLock(path)
				if errors.Is(err, ErrLocked) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				if holders.Add(1) > 1 {
					overlaps.Add(1)
				}
				taken.Add(1)
				runtime.Gosched()
				holders.Add(-1)
				if err := l.Discard(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := overlaps.Load(); n > 0 {
		t.Errorf("the lock was held twice at once %d times (of %d takes)", n, taken.Load())
	}
}
