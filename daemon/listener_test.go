package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mustListen calls Listen and closes the listener in cleanup.
func mustListen(tb testing.TB, path string, mode os.FileMode, group string) *net.UnixListener {
	tb.Helper()
	ln, err := Listen(path, mode, group)
	if err != nil {
		tb.Fatalf("Listen(%s, %#o, %q): %v", path, mode, group, err)
	}
	tb.Cleanup(func() { ln.Close() })
	return ln
}

// roundTrip connects to the socket at path and checks that ln accepts the
// connection and both ends can talk.
func roundTrip(t *testing.T, ln net.Listener, path string) {
	t.Helper()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- err
			return
		}
		defer c.Close()
		_, err = io.WriteString(c, "hello\n")
		accepted <- err
	}()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatalf("dial %s: %v", path, err)
	}
	defer c.Close()
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Errorf("read from %s = %q, %v; want hello", path, line, err)
	}
	if err := <-accepted; err != nil {
		t.Errorf("accept on %s: %v", path, err)
	}
}

func TestListen(t *testing.T) {
	gid := os.Getgid()
	group, err := user.LookupGroupId(strconv.Itoa(gid))
	if err != nil {
		t.Fatalf("look up own group %d: %v", gid, err)
	}
	type listenCase struct {
		name    string
		mode    os.FileMode
		group   string
		wantGID int
	}
	tests := []listenCase{
		{name: "Default", mode: 0o600, wantGID: gid},
		{name: "GroupByID", mode: 0o660, group: strconv.Itoa(gid), wantGID: gid},
		{name: "GroupByName", mode: 0o660, group: group.Name, wantGID: gid},
		// Wider than the usual umask lets bind make it: the mode is exact.
		{name: "Wide", mode: 0o666, wantGID: gid},
		{name: "Narrow", mode: 0o200, wantGID: gid},
	}
	// Another group the test may give the socket: any gid for root, else a
	// supplementary group of the test's user, if it has one.
	if os.Geteuid() == 0 {
		tests = append(tests, listenCase{name: "OtherGroup", mode: 0o660, group: "12345", wantGID: 12345})
	} else if groups, _ := os.Getgroups(); len(groups) > 0 {
		for _, g := range groups {
			if g != gid {
				tests = append(tests, listenCase{name: "OtherGroup", mode: 0o660, group: strconv.Itoa(g), wantGID: g})
				break
			}
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "l.sock")
			ln := mustListen(t, path, tt.mode, tt.group)
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != tt.mode {
				t.Errorf("socket file mode = %v, want a socket with %#o", fi.Mode(), tt.mode)
			}
			if st := fi.Sys().(*syscall.Stat_t); int(st.Gid) != tt.wantGID {
				t.Errorf("socket file gid = %d, want %d", st.Gid, tt.wantGID)
			}
			if got := ln.Addr().String(); got != path {
				t.Errorf("Addr() = %q, want %q", got, path)
			}
			roundTrip(t, ln, path)
		})
	}

	t.Run("StaleSocket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "l.sock")
		old, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		old.SetUnlinkOnClose(false)
		old.Close() // leaves the file, as a killed daemon does
		if fi, err := os.Lstat(path); err != nil || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("stale socket = %v, %v; want a socket file", fi, err)
		}
		ln := mustListen(t, path, 0o600, "")
		roundTrip(t, ln, path)
	})
	t.Run("RegularFile", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "l.sock")
		if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
			t.Fatal(err)
		}
		ln, err := Listen(path, 0o600, "")
		if !errors.Is(err, ErrNotSocket) {
			t.Fatalf("Listen over a regular file = %v, %v; want ErrNotSocket", ln, err)
		}
		for _, want := range []string{path, "regular file", "not a socket, refusing to remove"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Listen error = %q, want it to hold %q", err, want)
			}
		}
		if b, err := os.ReadFile(path); err != nil || string(b) != "data" {
			t.Errorf("file after Listen = %q, %v; want it untouched", b, err)
		}
	})
	t.Run("Directory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "l.sock")
		if err := os.Mkdir(path, 0o700); err != nil {
			t.Fatal(err)
		}
		if _, err := Listen(path, 0o600, ""); !errors.Is(err, ErrNotSocket) {
			t.Errorf("Listen over a directory = %v, want ErrNotSocket", err)
		}
	})
	t.Run("PathTooLong", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), strings.Repeat("s", MaxSocketPathLen))
		var pe *SocketPathError
		if _, err := Listen(path, 0o600, ""); !errors.As(err, &pe) {
			t.Errorf("Listen(%d bytes) = %v, want a *SocketPathError", len(path), err)
		}
	})
	t.Run("UnknownGroup", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "l.sock")
		_, err := Listen(path, 0o660, "no-such-group-liminald")
		if err == nil || !strings.Contains(err.Error(), "no-such-group-liminald") {
			t.Errorf("Listen = %v, want an error naming the group", err)
		}
		if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket file after a failed Listen: %v, want none", err)
		}
	})
	t.Run("CloseKeepsFile", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "l.sock")
		ln, err := Listen(path, 0o600, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("socket file after Close: %v, want it kept for the daemon to remove", err)
		}
	})
}

func TestActivated(t *testing.T) {
	t.Run("NotActivated", func(t *testing.T) {
		t.Setenv("LISTEN_PID", "")
		t.Setenv("LISTEN_FDS", "")
		if lns, err := Activated(); lns != nil || err != nil {
			t.Errorf("Activated() = %v, %v; want nil, nil", lns, err)
		}
	})
	t.Run("AnotherProcess", func(t *testing.T) {
		t.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()+1))
		t.Setenv("LISTEN_FDS", "1")
		if lns, err := Activated(); lns != nil || err != nil {
			t.Errorf("Activated() = %v, %v; want nil, nil", lns, err)
		}
		if v, ok := os.LookupEnv("LISTEN_FDS"); ok {
			t.Errorf("LISTEN_FDS = %q after Activated, want it unset", v)
		}
	})
	t.Run("Socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "a.sock")
		ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
		if err != nil {
			t.Fatal(err)
		}
		f, err := ln.File()
		if err != nil {
			t.Fatal(err)
		}
		// The child accepts on its copy of the socket, as systemd's service
		// would; the test dials it.
		cmd, out := startActivatedChild(t, "socket", f)
		f.Close()
		ln.SetUnlinkOnClose(false)
		ln.Close()

		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if want := "activated " + path + "\n"; line != want {
			t.Errorf("child said %q, %v; want %q", line, err, want)
		}
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v\n%s", err, out)
		}
	})
	t.Run("NotASocket", func(t *testing.T) {
		f, err := os.Create(filepath.Join(t.TempDir(), "plain"))
		if err != nil {
			t.Fatal(err)
		}
		cmd, out := startActivatedChild(t, "file", f)
		f.Close()
		if err := cmd.Wait(); err != nil {
			t.Errorf("child: %v\n%s", err, out)
		}
	})
}

// startActivatedChild runs the test binary as a process systemd started
// with f as its one passed descriptor (fd 3); what it checks is mode (see
// activatedChild). It returns the command and what the child writes.
func startActivatedChild(t *testing.T, mode string, f *os.File) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	out := new(strings.Builder)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=activated", "LIMINALD_TEST_ACTIVATED="+mode,
		"LISTEN_FDS=1", "LISTEN_FDNAMES=liminald")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, out
}

// activatedChild is the test binary run by startActivatedChild. It cannot
// know its pid before it starts, so it sets LISTEN_PID itself, as systemd
// would have, and then calls Activated. It returns the exit code.
func activatedChild() int {
	fail := func(format string, args ...any) int {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
		return 1
	}
	os.Setenv("LISTEN_PID", strconv.Itoa(os.Getpid()))
	lns, err := Activated()
	for _, name := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if v, ok := os.LookupEnv(name); ok {
			return fail("%s = %q after Activated, want it unset", name, v)
		}
	}
	switch os.Getenv("LIMINALD_TEST_ACTIVATED") {
	case "socket":
		if err != nil || len(lns) != 1 {
			return fail("Activated() = %v, %v; want one listener", lns, err)
		}
		c, err := lns[0].Accept()
		if err != nil {
			return fail("accept: %v", err)
		}
		defer c.Close()
		if _, err := fmt.Fprintf(c, "activated %s\n", lns[0].Addr()); err != nil {
			return fail("write: %v", err)
		}
		return 0
	case "file":
		if err == nil || !strings.Contains(err.Error(), "descriptor 3 (liminald)") {
			return fail("Activated() = %v, %v; want an error naming descriptor 3 (liminald)", lns, err)
		}
		return 0
	}
	return fail("unknown LIMINALD_TEST_ACTIVATED=%q", os.Getenv("LIMINALD_TEST_ACTIVATED"))
}

func TestWatchSocket(t *testing.T) {
	// watchTest listens at path and watches it, with the database db
	// ("" for none); each time the socket goes, the callback makes the
	// directory and listens again, as the daemon does, and reports the new
	// listener. trace, when not nil, gets each decision of the watcher.
	watchTest := func(t *testing.T, path, db string, trace func(string)) <-chan net.Listener {
		t.Helper()
		mustListen(t, path, 0o600, "")
		relisten := make(chan net.Listener, 10)
		ctx, cancel := context.WithCancel(context.Background())
		spec := socketSpec(path, sameDir(path, db), func() {
			if err := PrepareDir(filepath.Dir(path)); err != nil {
				t.Errorf("PrepareDir: %v", err)
				return
			}
			ln, err := Listen(path, 0o600, "")
			if err != nil {
				t.Errorf("Listen again: %v", err)
				return
			}
			relisten <- ln
		})
		spec.trace = trace
		w, err := watch(ctx, spec)
		if err != nil {
			t.Fatalf("watch the socket: %v", err)
		}
		t.Cleanup(func() {
			cancel()
			if err := w.Wait(); err != nil {
				t.Errorf("watcher stopped with %v, want nil", err)
			}
			close(relisten)
			for ln := range relisten {
				ln.Close()
			}
		})
		return relisten
	}
	next := func(t *testing.T, relisten <-chan net.Listener) net.Listener {
		t.Helper()
		select {
		case ln := <-relisten:
			return ln
		case <-time.After(30 * time.Second):
			t.Fatal("socket not re-created within 30s")
			return nil
		}
	}

	// Each case runs with the database elsewhere (the directory watched)
	// and beside the socket (the socket file watched).
	for _, beside := range []bool{false, true} {
		name := "DatabaseElsewhere"
		if beside {
			name = "DatabaseBeside"
		}
		db := func(dir string) string {
			if beside {
				return filepath.Join(dir, "liminald.db")
			}
			return filepath.Join(t.TempDir(), "liminald.db")
		}
		t.Run(name+"/Removed", func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "l.sock")
			relisten := watchTest(t, path, db(dir), nil)
			for range 2 {
				if err := os.Remove(path); err != nil {
					t.Fatal(err)
				}
				ln := next(t, relisten)
				roundTrip(t, ln, path)
				ln.Close()
			}
		})
		t.Run(name+"/RenamedAway", func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "l.sock")
			relisten := watchTest(t, path, db(dir), nil)
			for i := range 2 {
				if err := os.Rename(path, filepath.Join(dir, fmt.Sprintf("moved%d.sock", i))); err != nil {
					t.Fatal(err)
				}
				ln := next(t, relisten)
				roundTrip(t, ln, path)
				ln.Close()
			}
		})
	}
	t.Run("DatabaseBeside/ItsWritesCostNothing", func(t *testing.T) {
		dir := t.TempDir()
		path, db := filepath.Join(dir, "l.sock"), filepath.Join(dir, "liminald.db")
		traces := make(chan string, 1000)
		relisten := watchTest(t, path, db, func(s string) { traces <- s })
		f, err := os.Create(db + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		for range 200 {
			if _, err := f.Write([]byte("frame")); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		ln := next(t, relisten)
		roundTrip(t, ln, path)
		ln.Close()
		// The writes came before the removal that the watcher answered:
		// whatever it was told of them is traced by now.
		for len(traces) > 0 {
			if s := <-traces; strings.Contains(s, "liminald.db") {
				t.Fatalf("the watcher was told of a write to the database: %q", s)
			}
		}
	})
	t.Run("DirectoryRenamedAway", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "run")
		if err := PrepareDir(dir); err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, "l.sock")
		relisten := watchTest(t, path, "", nil)
		if err := os.Rename(dir, dir+".old"); err != nil {
			t.Fatal(err)
		}
		ln := next(t, relisten)
		roundTrip(t, ln, path)
		ln.Close()
		// The new directory is watched in turn.
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		ln = next(t, relisten)
		roundTrip(t, ln, path)
		ln.Close()
	})
	t.Run("MissingDirectory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "no", "l.sock")
		if _, err := WatchSocket(context.Background(), path, "", func() {}); err == nil {
			t.Error("WatchSocket in a missing directory succeeded, want an error")
		}
	})
}
