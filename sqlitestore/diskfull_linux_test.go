package sqlitestore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"liminald/conversation"
	"liminald/internal/testenv"
)

// TestStore_DiskFull fills a real, small filesystem (a tmpfs mounted for the
// test; it needs root): writes get a retryable unavailable, reads keep
// working, nothing acknowledged is lost, and writes work again once space
// is freed, without a restart.
func TestStore_DiskFull(t *testing.T) {
	dir, filler := smallDisk(t)
	path := filepath.Join(dir, "full.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	acked, failed := fillUntilUnavailable(t, s)
	if len(acked) == 0 {
		t.Fatal("no write succeeded before the disk filled")
	}
	// Still full: the write that failed fails again, reads work.
	if _, err := s.Write(context.Background(), failed); !errors.Is(err, conversation.ErrUnavailable) {
		t.Errorf("Write while full: %v, want unavailable", err)
	}
	if d, err := s.Decide(context.Background(), "c", "m0", conversation.Delivery{}); err != nil || d.Action != conversation.Skip {
		t.Errorf("Decide while full = %+v, %v; want skip", d, err)
	}
	verifyLog(t, s, acked)

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	o, err := s.Write(context.Background(), failed)
	if err != nil || !o.Append {
		t.Fatalf("Write after freeing space = %+v, %v; want an append", o, err)
	}
	acked[o.Seq] = failed
	verifyLog(t, s, acked)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, path)
}

// smallDisk mounts a 4 MiB tmpfs for the test (it needs root) and half
// fills it with the file filler, which the test removes to free space.
// Returns the mount's directory and filler's path.
func smallDisk(t *testing.T) (dir, filler string) {
	t.Helper()
	dir = t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=4m"); err != nil {
		testenv.Missing(t, "mount a tmpfs (needs root): %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	filler = filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 2<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, filler
}
