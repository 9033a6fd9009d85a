package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
		{args: []string{"state", "c", "m"}, want: `step 1       hex:000102ff`},
		{args: []string{"state", "--json", "c", "m2"}, want: `"status":"received","received_at":1700000000000`},
		{args: []string{"events", "c"}, want: `step_completed      m step 0 output "hello"`},
		{args: []string{"events"}, want: "processing_finished m"},
		{args: []string{"conversations", "--json"}, want: `{"conversation":"c","messages":2,"next_seq":8}`},
		{args: []string{"stats", "--json"}, want: `"events":8`},
		{args: []string{"finish", "c", "nobody"}, wantCode: 1, wantErr: "unknown_message"},
		{args: []string{"state"}, wantCode: 2, wantErr: "state takes CONV [MSG]"},
		{args: []string{"fail", "c", "m"}, wantCode: 2, wantErr: "liminald: bad_request: fail needs --error"},
		{args: []string{"start", "--nope", "c", "m"}, wantCode: 2, wantErr: "liminald: bad_request: "},
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

// cliStep is a command line and what it must do.
type cliStep struct {
	args     []string
	want     []string // each in stdout
	wantCode int
	wantErr  string // in stderr
}

// runSteps runs steps against d, in order.
func runSteps(t *testing.T, d *daemonProc, steps []cliStep) {
	t.Helper()
	for _, tc := range steps {
		stdout, stderr, code := runCLI(t, d, tc.args...)
		ok := code == tc.wantCode && strings.Contains(stderr, tc.wantErr)
		for _, want := range tc.want {
			ok = ok && strings.Contains(stdout, want)
		}
		if !ok {
			t.Errorf("liminald %s: exit %d\nstdout: %s\nstderr: %s\nwant exit %d, stdout with %q, stderr with %q",
				strings.Join(tc.args, " "), code, stdout, stderr, tc.wantCode, tc.want, tc.wantErr)
		}
	}
}

// TestCLI_Leases runs a worker's life from the command line: a leased
// start, busy for another worker, a renew, the takeover once the lease
// lapsed, a step fenced for the old token, and explain's timeline.
func TestCLI_Leases(t *testing.T) {
	d := startDaemon(t)
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "--fingerprint", "sha:1", "c", "m"}, want: []string{"start (message_received at seq 0)"}},
		{args: []string{"start", "--worker", "w1", "--lease", "1m", "c", "m"}, want: []string{"appended at seq 1, token 1, leased until "}},
		{args: []string{"start", "--worker", "w1", "--lease", "1m", "c", "m"}, want: []string{"duplicate of seq 1 (nothing appended), token 1"}},
		{args: []string{"decide", "c", "m"}, want: []string{`busy: worker "w1" holds it with token 1; retry after `}},
		{args: []string{"start", "--worker", "w2", "--lease", "1m", "c", "m"}, wantCode: 1, wantErr: `liminald: busy: worker "w1"`},
		{args: []string{"step", "--token", "1", "--output", "hi", "c", "m", "0"}, want: []string{"appended at seq 2"}},
		{args: []string{"messages", "--status", "leased", "c"}, want: []string{"m", "in_progress", "w1", "no\n"}},
		{args: []string{"renew", "--token", "1", "--lease", "1ms", "c", "m"}, want: []string{"appended at seq 3, leased until "}},
		{args: []string{"renew", "c", "m"}, wantCode: 2, wantErr: "liminald: bad_request: renew needs --token and --lease"},
		{args: []string{"start", "--lease", "0s", "c", "m"}, wantCode: 2, wantErr: "liminald: bad_request: --lease 0s: must be from 1ms to 24h"},
		{args: []string{"start", "--lease", "25h", "c", "m"}, wantCode: 2, wantErr: "must be from 1ms to 24h"},
	})
	// The renewed lease of 1 ms lapses: decide says so once it has.
	for deadline := time.Now().Add(10 * time.Second); ; {
		stdout, stderr, _ := runCLI(t, d, "decide", "--with-steps", "c", "m")
		if strings.HasPrefix(stdout, "resume from step 1\nstep 0       \"hi\"") {
			break
		}
		if !strings.HasPrefix(stdout, "busy:") || time.Now().After(deadline) {
			t.Fatalf("decide after a lease of 1 ms: %s%s", stdout, stderr)
		}
	}
	runSteps(t, d, []cliStep{
		{args: []string{"start", "--worker", "w2", "--lease", "1m", "c", "m"}, want: []string{"appended at seq 4, token 4, leased until "}},
		{args: []string{"step", "--token", "1", "--output", "late", "c", "m", "1"}, wantCode: 1,
			wantErr: "liminald: fenced: token 1 is not current: the message's token is 4"},
		{args: []string{"step", "--json", "--token", "1", "--output", "late", "c", "m", "1"}, wantCode: 1,
			want: []string{`"code":"fenced"`, `"current_token":4`}, wantErr: "liminald: fenced"},
		{args: []string{"renew", "--token", "1", "--lease", "1m", "c", "m"}, wantCode: 1, wantErr: "liminald: fenced: "},
		{args: []string{"step", "--token", "4", "--output-base64", "AP8=", "c", "m", "1"}, want: []string{"appended at seq 5"}},
		{args: []string{"finish", "--token", "4", "c", "m"}, want: []string{"appended at seq 6"}},
		{args: []string{"receive", "--fingerprint", "sha:2", "c", "m"}, wantCode: 1, wantErr: "liminald: fingerprint_mismatch: "},
		{args: []string{"state", "c", "m"}, want: []string{"status       finished", "attempts     2", "token        4",
			`worker       "w2"`, "quarantined  no", `fingerprint  "sha:1"`, `step 1       hex:00ff`}},
		{args: []string{"explain", "c", "m"}, want: []string{
			"decision  skip\n", "rule      finished\n", "reason    Its processing_finished is at seq 6, so it is done: skip it.\n",
			"\nSEQ  TIME                      EVENT                FIELDS\n",
			timeline("message_received", "received "), `fingerprint "sha:1"`,
			timeline("processing_started", `worker "w1" lease 1m0s`), timeline("step_completed", `step 0 output "hi"`),
			timeline("lease_renewed", "token 1 lease 1ms"), timeline("processing_started", `worker "w2" lease 1m0s`),
			timeline("step_completed", "step 1 output hex:00ff"), "  processing_finished\n"}},
		{args: []string{"explain", "--json", "c", "m"}, want: []string{`"decision":"skip","rule":"finished"`, `"type":"lease_renewed"`}},
		{args: []string{"explain", "c", "nobody"}, want: []string{"decision  start\n", "rule      never_seen\n", "no events"}},
	})
}

// timeline is how explain shows an event of type typ with fields.
func timeline(typ, fields string) string { return fmt.Sprintf("  %-19s  %s", typ, fields) }

// TestCLI_Quarantine: under --max-attempts 1 a failed message is
// quarantined, listed by messages --status quarantined, and released.
func TestCLI_Quarantine(t *testing.T) {
	d := startDaemon(t, "--max-attempts", "1")
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "q", "m"}, want: []string{"start"}},
		{args: []string{"receive", "q", "n"}, want: []string{"start"}},
		{args: []string{"start", "q", "m"}, want: []string{"appended at seq 2, token 2"}},
		{args: []string{"fail", "--error", "boom", "q", "m"}, want: []string{"appended at seq 3"}},
		{args: []string{"receive", "q", "m"}, want: []string{`quarantined after 1 attempts; last error "boom"`}},
		{args: []string{"start", "q", "m"}, wantCode: 1, wantErr: "liminald: quarantined: "},
		{args: []string{"messages", "--status", "quarantined", "q"}, want: []string{
			"MESSAGE  STATUS   ATTEMPTS  LAST_STEP  WORKER  LEASED_UNTIL  QUARANTINED\n",
			"m        errored  1         none       -       -             yes\n"}},
		{args: []string{"messages", "--limit", "1", "q"}, want: []string{"\nm ", `more: run again with --after "m"`}},
		{args: []string{"messages", "--after", "m", "q"}, want: []string{"\nn        received  0 "}},
		{args: []string{"messages", "--status", "stuck", "q"}, wantCode: 1, wantErr: "liminald: bad_request: status "},
		{args: []string{"explain", "q", "m"}, want: []string{"decision  quarantined after 1 attempts", "rule      quarantined\n", "max_attempts is 1"}},
		{args: []string{"release", "--reason", "fixed the parser", "q", "m"}, want: []string{"appended at seq 4"}},
		{args: []string{"release", "q", "m"}, wantCode: 1, wantErr: "liminald: not_quarantined: "},
		{args: []string{"decide", "q", "m"}, want: []string{"resume from step 0"}},
		{args: []string{"events", "q"}, want: []string{`message_released    m reason "fixed the parser"`}},
		{args: []string{"messages", "--json", "--status", "quarantined", "q"}, want: []string{`"messages":[],"next":null`}},
	})
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

// TestCLI_StepNeedsOutput: step records no output it was not given: without
// --output, --output-file, --output-base64 or --empty it is a usage error
// and appends nothing, so the real output can still be recorded.
func TestCLI_StepNeedsOutput(t *testing.T) {
	d := startDaemon(t)
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "c", "m"}, want: []string{"start"}},
		{args: []string{"start", "c", "m"}, want: []string{"appended at seq 1"}},
		{args: []string{"step", "c", "m", "0"}, wantCode: 2,
			wantErr: "liminald: bad_request: step needs its output: give --output TEXT, --output-file FILE or --output-base64 B64, or --empty for none"},
		{args: []string{"step", "--output", "x", "--empty", "c", "m", "0"}, wantCode: 2,
			wantErr: "liminald: bad_request: give only one of --output, --output-file, --output-base64 and --empty"},
		{args: []string{"step", "--output", "charged", "c", "m", "0"}, want: []string{"appended at seq 2"}},
		{args: []string{"step", "--empty", "c", "m", "1"}, want: []string{"appended at seq 3"}},
		{args: []string{"step", "--output", "", "c", "m", "1"}, want: []string{"duplicate of seq 3"}},
		{args: []string{"events", "c"}, want: []string{`step 0 output "charged"`, `step 1 output ""`}},
	})
}

// TestCLI_FlagsAfterArguments: a command's flags may follow its arguments;
// a flag keeps its value even when the value starts with -, and after --
// everything is an argument.
func TestCLI_FlagsAfterArguments(t *testing.T) {
	d := startDaemon(t)
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "orders", "m-20", "--json"}, want: []string{`{"id":null,"ok":true,"decision":"start","seq":0}`}},
		{args: []string{"start", "orders", "--worker", "w1", "m-20", "--lease", "1m"}, want: []string{"appended at seq 1, token 1, leased until "}},
		{args: []string{"step", "orders", "m-20", "0", "--token", "1", "--output", "-x"}, want: []string{"appended at seq 2"}},
		{args: []string{"step", "orders", "m-20", "1", "--output=--json", "--expected-seq", "3"}, want: []string{"appended at seq 3"}},
		{args: []string{"receive", "--json", "--", "orders", "-m"}, want: []string{`"decision":"start","seq":4`}},
		{args: []string{"receive", "orders", "-m"}, wantCode: 2,
			wantErr: "liminald: bad_request: receive has no flag -m (an argument that starts with - goes after --: liminald receive [flags] -- CONV MSG)"},
		{args: []string{"events", "orders", "--json", "--from-seq", "2"}, want: []string{`"output":"LXg="`, `"output":"LS1qc29u"`, `"message_id":"-m"`}},
		{args: []string{"state", "orders", "-m", "--json"}, wantCode: 2, wantErr: "liminald: bad_request: state has no flag -m"},
		{args: []string{"state", "orders", "--json", "--", "-m"}, want: []string{`"status":"received"`}},
	})
}

// TestCLI_FailureWithJSON: with --json a failure prints the failure reply
// on stdout, and its code and message on stderr as without --json.
func TestCLI_FailureWithJSON(t *testing.T) {
	d := startDaemon(t)
	runSteps(t, d, []cliStep{
		{args: []string{"finish", "--json", "c", "nobody"}, wantCode: 1,
			want: []string{`"ok":false`, `"code":"unknown_message"`}, wantErr: "liminald: unknown_message: message was never received\n"},
	})
}

// TestCLI_StateWithoutEvents: state of a conversation with no events (a
// misspelt name) is not_found, not a screen of zeros.
func TestCLI_StateWithoutEvents(t *testing.T) {
	d := startDaemon(t)
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "c", "m"}, want: []string{"start"}},
		{args: []string{"state", "c"}, want: []string{"next_seq     1\n", "received     1\n"}},
		{args: []string{"state", "cc"}, wantCode: 1, wantErr: `liminald: not_found: conversation "cc" has no events`},
		{args: []string{"state", "--json", "cc"}, wantCode: 1,
			want: []string{`"ok":true,"next_seq":0`}, wantErr: `liminald: not_found: conversation "cc" has no events`},
		{args: []string{"state", "cc", "m"}, want: []string{"status       unknown"}},
	})
	if stdout, _, _ := runCLI(t, d, "state", "cc"); stdout != "" {
		t.Errorf("state of a conversation with no events printed %q", stdout)
	}
}

// TestCLI_EventsLongOutput: events shows a long step output as its size,
// all of it with --full or --json.
func TestCLI_EventsLongOutput(t *testing.T) {
	d := startDaemon(t)
	long := strings.Repeat("a", 3000)
	file := filepath.Join(d.dir, "long.txt")
	os.WriteFile(file, []byte(long), 0o600)
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "c", "m"}, want: []string{"start"}},
		{args: []string{"step", "--output-file", file, "c", "m", "0"}, want: []string{"appended at seq 1"}},
		{args: []string{"events", "c"}, want: []string{"step_completed      m step 0 output 2.9 KiB\n"}},
		{args: []string{"state", "c", "m"}, want: []string{"step 0       2.9 KiB\n"}},
		{args: []string{"events", "--full", "c"}, want: []string{`step 0 output "` + long + `"` + "\n"}},
		{args: []string{"events", "--json", "c"}, want: []string{`"output":"` + base64.StdEncoding.EncodeToString([]byte(long)) + `"`}},
	})
}

// TestCLI_ExportForce: export refuses to overwrite FILE, saying how to, and
// overwrites it with --force, private as a new one.
func TestCLI_ExportForce(t *testing.T) {
	d := startDaemon(t)
	runCLI(t, d, "receive", "c", "m")
	dump := filepath.Join(d.dir, "dump.jsonl")
	os.WriteFile(dump, []byte(strings.Repeat("old\n", 100)), 0o644)
	if _, stderr, code := runCLI(t, d, "export", dump); code != 1 || !strings.Contains(stderr, "exists; --force overwrites it") {
		t.Errorf("export to an existing file: exit %d, %s; want refused, naming --force", code, stderr)
	}
	if _, stderr, code := runCLI(t, d, "export", dump, "--force"); code != 0 || !strings.Contains(stderr, "exported 1 events") {
		t.Fatalf("export --force: exit %d, %s", code, stderr)
	}
	if b, _ := os.ReadFile(dump); strings.Count(string(b), "\n") != 1 || !strings.Contains(string(b), `"type":"message_received"`) {
		t.Errorf("export --force wrote %q, want the one event alone", b)
	}
	wantPrivate(t, dump) // it holds payloads, whatever the file it overwrote
}

// TestFlagsFirst: flags move before the arguments, with their values, up
// to --; --help anywhere shows the command's help.
func TestFlagsFirst(t *testing.T) {
	cmds := commands()
	for _, tc := range []struct {
		args    []string
		want    []string
		wantErr string
	}{
		{args: []string{"receive", "orders", "m-20", "--json"}, want: []string{"receive", "--json", "--", "orders", "m-20"}},
		{args: []string{"receive", "--json", "orders", "m-20"}, want: []string{"receive", "--json", "--", "orders", "m-20"}},
		{args: []string{"step", "c", "--output", "-x", "m", "0"}, want: []string{"step", "--output", "-x", "--", "c", "m", "0"}},
		{args: []string{"step", "c", "m", "0", "--output=-x", "--expected-seq", "-1"}, want: []string{"step", "--output=-x", "--expected-seq", "-1", "--", "c", "m", "0"}},
		{args: []string{"events", "c", "-f"}, want: []string{"events", "-f", "--", "c"}},
		{args: []string{"state", "--json", "--", "-c", "--help"}, want: []string{"state", "--json", "--", "-c", "--help"}},
		{args: []string{"import", "-", "--db", "x"}, want: []string{"import", "--db", "x", "--", "-"}},
		{args: []string{"step", "--output", "--help", "c", "m", "0"}, want: []string{"step", "--output", "--help", "--", "c", "m", "0"}},
		{args: []string{"step", "c", "m", "0", "--help"}, want: []string{"help", "step"}},
		{args: []string{"serve", "--socket"}, want: []string{"serve", "--socket", "--"}},
		{args: []string{"help", "step", "--json"}, want: []string{"help", "step", "--json"}},
		{args: []string{"state", "c", "-m"}, wantErr: "state has no flag -m (an argument that starts with - goes after --: liminald state [flags] -- CONV [MSG])"},
		{args: []string{"check", "--jsn"}, wantErr: "check has no flag --jsn"},
	} {
		got, err := flagsFirst(cmds, append([]string{"liminald"}, tc.args...))
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr || !isUsage(err) {
				t.Errorf("flagsFirst(%q) = %q, %v; want the usage error %q", tc.args, got, err, tc.wantErr)
			}
			continue
		}
		if want := append([]string{"liminald"}, tc.want...); err != nil || !slices.Equal(got, want) {
			t.Errorf("flagsFirst(%q) = %q, %v; want %q", tc.args, got, err, want)
		}
	}
}
