package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"liminald/internal/testenv"
)

// openPTY opens a pseudo-terminal: the side the test reads and the
// terminal a command writes to. Both are closed at cleanup.
func openPTY(t *testing.T) (ptmx, tty *os.File) {
	t.Helper()
	ptmx, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		testenv.Missing(t, "a pseudo-terminal (/dev/ptmx): %v", err)
	}
	t.Cleanup(func() { ptmx.Close() })
	fd := int(ptmx.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetUint32(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pseudo-terminal number: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tty.Close() })
	return ptmx, tty
}

// TestBackup_Progress: on a terminal, backup shows how far it got, as
// check, export and import do.
func TestBackup_Progress(t *testing.T) {
	d := startDaemon(t)
	for _, args := range [][]string{{"receive", "c", "m"}, {"start", "c", "m"}, {"finish", "c", "m"}} {
		if _, stderr, code := runCLI(t, d, args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	copy := filepath.Join(d.dir, "copy.db")
	backup := exec.Command(binary, "backup", "--db", d.db, copy)
	backup.Env = append(cleanEnv(), "HOME="+d.dir)
	screen := stderrOnTerminal(t, backup)
	if want := "backed up 3/3 events (100%)"; !strings.Contains(screen, want) {
		t.Errorf("backup on a terminal wrote %q, want its progress, %q", screen, want)
	}
	if _, err := os.Stat(copy); err != nil {
		t.Errorf("backup on a terminal: %v", err)
	}
}
