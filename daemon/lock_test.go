package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
}
