package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLI_Lifecycle runs the client subcommands of SPEC §6 against the real
// daemon, in readable and --json output, and their failures.
func TestCLI_Lifecycle(t *testing.T) {
	d := startDaemon(t)
	out := filepath.Join(d.dir, "out.bin")
	os.WriteFile(out, []byte{0, 1, 2, 255}, 0o600)
	for _, tc := range []struct {
		args     []string
		want     string // in stdout
		wantCode int
		wantErr  string // in stderr
	}{
		{args: []string{"ping"}, want: "ok"},
		{args: []string{"receive", "c", "m"}, want: "start"},
		{args: []string{"decide", "c", "m"}, want: "resume from step 0"},
		{args: []string{"start", "c", "m"}, want: "appended at seq 1"},
		{args: []string{"step", "--output", "hello", "c", "m", "0"}, want: "appended at seq 2"},
		{args: []string{"step", "--output-file", out, "c", "m", "1"}, want: "appended at seq 3"},
		{args: []string{"step", "--output-base64", "AAEC/w==", "c", "m", "1"}, want: "duplicate of seq 3"},
		{args: []string{"step", "--output", "other", "c", "m", "0"}, wantCode: 1, wantErr: "step_conflict"},
		{args: []string{"step", "c", "m", "x"}, wantCode: 2, wantErr: "step index"},
		{args: []string{"fail", "--error", "disk on fire", "c", "m"}, want: "appended at seq 4"},
		{args: []string{"decide", "--json", "c", "m"}, want: `"decision":"resume","resume_from":2`},
		{args: []string{"start", "c", "m"}, want: "appended at seq 5"},
		{args: []string{"finish", "--json", "c", "m"}, want: `"seq":6`},
		{args: []string{"start", "--json", "c", "m"}, want: `"code":"already_finished"`, wantCode: 1, wantErr: "already_finished"},
		{args: []string{"receive", "c", "m"}, want: "skip"},
		{args: []string{"receive", "--json", "--received-at", "1700000000000", "c", "m2"}, want: `"decision":"start","seq":7`},
		{args: []string{"state", "c"}, want: "finished     1"},
		{args: []string{"state", "c", "m"}, want: `step 1       base64:AAEC/w==`},
		{args: []string{"state", "--json", "c", "m2"}, want: `"status":"received","received_at":1700000000000`},
		{args: []string{"events", "c"}, want: `step_completed      m step 0 output "hello"`},
		{args: []string{"events"}, want: "processing_finished m"},
		{args: []string{"conversations", "--json"}, want: `{"conversation":"c","messages":2,"next_seq":8}`},
		{args: []string{"stats", "--json"}, want: `"events":8`},
		{args: []string{"finish", "c", "nobody"}, wantCode: 1, wantErr: "unknown_message"},
		{args: []string{"state"}, wantCode: 2, wantErr: "state takes CONV [MSG]"},
	} {
		stdout, stderr, code := runCLI(t, d, tc.args...)
		if code != tc.wantCode || !strings.Contains(stdout, tc.want) || !strings.Contains(stderr, tc.wantErr) {
			t.Errorf("liminald %s: exit %d\nstdout: %s\nstderr: %s\nwant exit %d, stdout with %q, stderr with %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.wantCode, tc.want, tc.wantErr)
		}
	}

	// events --json prints one event object per line.
	stdout, _, _ := runCLI(t, d, "events", "--json", "c")
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 8 {
		t.Fatalf("events --json: %d lines, want 8:\n%s", len(lines), stdout)
	}
	for i, line := range lines {
		var e struct {
			Seq  *int64 `json:"seq"`
			Type string `json:"type"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil || e.Seq == nil || *e.Seq != int64(i) {
			t.Errorf("events --json line %d: %s", i, line)
		}
	}
}

// TestCLI_NoDaemon: a client command with no daemon fails with a code, and
// ping --wait gives up.
func TestCLI_NoDaemon(t *testing.T) {
	dir := t.TempDir()
	d := &daemonProc{t: t, dir: dir, socket: filepath.Join(dir, "none.sock"), db: filepath.Join(dir, "db")}
	_, stderr, code := runCLI(t, d, "ping", "--wait", "200ms")
	if code != 1 || !strings.Contains(stderr, "unavailable") {
		t.Errorf("ping with no daemon: exit %d, %s", code, stderr)
	}
}

// TestCLI_Offline: check, export, backup beside a running daemon; import
// refused while it holds the database, then done into a new one.
func TestCLI_Offline(t *testing.T) {
	d := startDaemon(t)
	for _, args := range [][]string{{"receive", "c", "m"}, {"start", "c", "m"}, {"step", "--output", "x", "c", "m", "0"}, {"finish", "c", "m"}, {"receive", "d", "n"}} {
		if _, stderr, code := runCLI(t, d, args...); code != 0 {
			t.Fatalf("%v: %s", args, stderr)
		}
	}
	if stdout, stderr, code := runCLI(t, d, "check"); code != 0 || !strings.Contains(stdout, "ok") {
		t.Errorf("check: %d %s %s", code, stdout, stderr)
	}
	dump := filepath.Join(d.dir, "dump.jsonl")
	if _, stderr, code := runCLI(t, d, "export", dump); code != 0 {
		t.Fatalf("export: %s", stderr)
	}
	exported, _ := os.ReadFile(dump)
	if n := strings.Count(string(exported), "\n"); n != 5 {
		t.Errorf("export wrote %d lines, want 5", n)
	}
	backup := filepath.Join(d.dir, "backup.db")
	if _, stderr, code := runCLI(t, d, "backup", backup); code != 0 {
		t.Fatalf("backup: %s", stderr)
	}
	if _, stderr, code := runCLI(t, d, "import", dump); code != 1 || !strings.Contains(stderr, "liminald: locked: ") {
		t.Errorf("import beside the daemon: exit %d, %s; want refused, naming the lock", code, stderr)
	}

	missing := &daemonProc{t: t, dir: d.dir, db: filepath.Join(d.dir, "missing.db")}
	if _, stderr, code := runCLI(t, missing, "check"); code != 1 || !strings.Contains(stderr, "liminald: not_found: ") {
		t.Errorf("check of a missing database: exit %d, %s; want not_found", code, stderr)
	}
	os.WriteFile(filepath.Join(d.dir, "bad.jsonl"), []byte(`{"conversation":"c","seq":5,"ts":1,"type":"processing_started","message_id":"m"}`+"\n"), 0o600)
	fresh := &daemonProc{t: t, dir: d.dir, db: filepath.Join(d.dir, "fresh.db")}
	if _, stderr, code := runCLI(t, fresh, "import", filepath.Join(d.dir, "bad.jsonl")); code != 1 || !strings.Contains(stderr, "liminald: import_refused: ") {
		t.Errorf("import of a bad line: exit %d, %s; want import_refused", code, stderr)
	}

	for _, db := range []string{backup, filepath.Join(d.dir, "imported.db")} {
		other := &daemonProc{t: t, dir: d.dir, db: db}
		if db != backup {
			if _, stderr, code := runCLI(t, other, "import", dump); code != 0 {
				t.Fatalf("import into a new database: %s", stderr)
			}
		}
		stdout, stderr, code := runCLI(t, other, "check", "--json")
		if code != 0 || !strings.Contains(stdout, `"events":5`) {
			t.Errorf("check %s: %s %s", filepath.Base(db), stdout, stderr)
		}
	}

}

// TestCLI_PingWaitsForTheDaemon: ping --wait succeeds once a daemon that
// starts later answers.
func TestCLI_PingWaitsForTheDaemon(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "late.sock")
	ping := exec.Command(binary, "ping", "--socket", socket, "--wait", "30s")
	ping.Env = append(cleanEnv(), "HOME="+dir)
	var out strings.Builder
	ping.Stdout, ping.Stderr = &out, &out
	if err := ping.Start(); err != nil {
		t.Fatal(err)
	}
	startDaemonIn(t, dir, socket, filepath.Join(dir, "db"))
	if err := ping.Wait(); err != nil || !strings.Contains(out.String(), "ok") {
		t.Errorf("ping --wait: %v, %s", err, out.String())
	}
}

// TestCLI_EventsFollow: events --follow prints the log, then events as they
// commit.
func TestCLI_EventsFollow(t *testing.T) {
	d := startDaemon(t)
	runCLI(t, d, "receive", "c", "m")
	follow := exec.Command(binary, "events", "--socket", d.socket, "--follow", "--json", "c")
	follow.Env = append(cleanEnv(), "HOME="+d.dir)
	stdout, err := follow.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { follow.Process.Kill(); follow.Wait() }()
	lines := bufio.NewScanner(stdout)
	for i, op := range []string{"message_received", "processing_started"} {
		if i == 1 {
			runCLI(t, d, "start", "c", "m") // committed after the follow began
		}
		if !lines.Scan() || !strings.Contains(lines.Text(), `"type":"`+op+`"`) {
			t.Fatalf("events --follow line %d = %q, want %s", i, lines.Text(), op)
		}
	}
}
