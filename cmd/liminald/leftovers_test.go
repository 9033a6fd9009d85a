package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// entries returns the names below dir, or a note that dir is gone.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, _ os.DirEntry, err error) error {
		if path != dir {
			rel, _ := filepath.Rel(dir, path)
			names = append(names, rel)
		}
		return err
	})
	if os.IsNotExist(err) {
		return []string{"(gone)"}
	}
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestServe_FailureLeavesNothing: a serve that cannot start leaves nothing
// that was not there before (no database, lock file or directory), and
// leaves the files of the daemon that holds the locks alone.
func TestServe_FailureLeavesNothing(t *testing.T) {
	d := startDaemon(t)
	for _, tc := range []struct {
		name, want string
		args       func(dir string) []string
	}{
		{"SocketLocked", "locked", func(dir string) []string {
			return []string{"--socket", d.socket, "--db", filepath.Join(dir, "state", "db")}
		}},
		{"DatabaseLocked", "locked", func(dir string) []string {
			return []string{"--socket", filepath.Join(dir, "run", "s.sock"), "--db", d.db}
		}},
		{"AfterTheStoreOpened", "no-such-group", func(dir string) []string {
			// The group is looked up when the socket is made, once the
			// database is open and the metrics endpoint listens.
			return []string{"--socket", filepath.Join(dir, "run", "s.sock"), "--db", filepath.Join(dir, "state", "db"),
				"--metrics", "unix:" + filepath.Join(dir, "m.sock"), "--socket-group", "no-such-group"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command(binary, append([]string{"serve"}, tc.args(dir)...)...)
			cmd.Env = append(cleanEnv(), "HOME="+dir)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("serve: %v\n%s\nwant a failure naming %s", err, out, tc.want)
			}
			if left := entries(t, dir); len(left) > 0 {
				t.Errorf("a failed serve left %q in its directory", left)
			}
		})
	}
	for _, lock := range []string{d.db + ".lock", d.socket + ".lock"} {
		if _, err := os.Stat(lock); err != nil {
			t.Errorf("the running daemon's lock file: %v", err)
		}
	}
	// The first daemon still holds both locks and serves.
	again := exec.Command(binary, "serve", "--socket", d.socket, "--db", d.db)
	again.Env = append(cleanEnv(), "HOME="+d.dir)
	if out, err := again.CombinedOutput(); err == nil || !strings.Contains(string(out), "locked") {
		t.Errorf("serve beside the first daemon: %v\n%s\nwant it refused", err, out)
	}
	if line, _ := dialRaw(t, d.socket).do(`{"op":"ping"}`); !strings.Contains(line, `"ok":true`) {
		t.Errorf("first daemon after the refusals: %s", line)
	}
}

// TestImport_FailureLeavesNothing: an import refused for its input leaves
// neither the database nor the lock file it made; one refused because a
// daemon holds the database leaves the daemon's lock file alone.
func TestImport_FailureLeavesNothing(t *testing.T) {
	input := filepath.Join(t.TempDir(), "bad.jsonl")
	os.WriteFile(input, []byte(`{"conversation":"c","seq":5,"ts":1,"type":"processing_started","message_id":"m"}`+"\n"), 0o600)
	dir := t.TempDir()
	fresh := &daemonProc{t: t, dir: dir, db: filepath.Join(dir, "fresh.db")}
	if _, stderr, code := runCLI(t, fresh, "import", input); code != 1 || !strings.Contains(stderr, "import_refused") {
		t.Fatalf("import of a bad line: exit %d, %s; want import_refused", code, stderr)
	}
	if left := entries(t, dir); len(left) > 0 {
		t.Errorf("a refused import left %q", left)
	}

	d := startDaemon(t)
	if _, stderr, code := runCLI(t, d, "import", input); code != 1 || !strings.Contains(stderr, "locked") {
		t.Fatalf("import beside the daemon: exit %d, %s; want locked", code, stderr)
	}
	if _, err := os.Stat(d.db + ".lock"); err != nil {
		t.Errorf("the daemon's lock file after a refused import: %v", err)
	}
	if _, stderr, code := runCLI(t, d, "import", input); code != 1 || !strings.Contains(stderr, "locked") {
		t.Errorf("import beside the daemon, again: exit %d, %s; want locked", code, stderr)
	}
}
