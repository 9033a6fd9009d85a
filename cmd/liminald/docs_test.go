package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"liminald/internal/testenv"
)

// TestDocs_ReadmeSession replays the shell sessions of README.md's "A
// session" and "Leases, fencing and quarantine", in order, against the real
// daemon on its default socket (under XDG_RUNTIME_DIR, the same for root
// and for other users), with liminald on the PATH: S=$(...) is run and S
// kept for what follows; after "socat - UNIX-CONNECT:$S" each request line
// must get exactly the reply shown, on a connection to $S; any other
// command must print exactly the lines shown after it.
func TestDocs_ReadmeSession(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var sessions []string
	for _, section := range strings.Split(string(readme), "\n## ")[1:] {
		if !strings.HasPrefix(section, "A session\n") && !strings.HasPrefix(section, "Leases, fencing and quarantine") {
			continue // liminald ui, say, runs until it is stopped
		}
		for _, block := range strings.Split(section, "```sh\n")[1:] {
			if block, _, _ = strings.Cut(block, "```"); strings.HasPrefix(block, "$ ") {
				sessions = append(sessions, block)
			}
		}
	}
	if len(sessions) < 3 {
		t.Fatalf("README.md has %d shell sessions, want the socat session, the command line's and the leases'", len(sessions))
	}
	dir := t.TempDir()
	env := append(cleanEnv(), "HOME="+dir, "XDG_RUNTIME_DIR="+filepath.Join(dir, "run"),
		"PATH="+filepath.Dir(binary)+string(os.PathListSeparator)+os.Getenv("PATH"))
	d := newDaemonProc(t, dir, "", filepath.Join(dir, "db"))
	d.cmd.Args = []string{binary, "serve", "--db", d.db} // the default socket
	d.cmd.Env = append(d.cmd.Env, env...)
	d.start()

	socat, cli := 0, 0
	for _, session := range sessions {
		var cmd string
		var lines []string
		for _, line := range append(strings.Split(strings.TrimSpace(session), "\n"), "$ ") {
			next, ok := strings.CutPrefix(line, "$ ")
			if !ok {
				lines = append(lines, line)
				continue
			}
			switch name, _, assign := strings.Cut(cmd, "="); {
			case cmd == "":
			case cmd == "socat - UNIX-CONNECT:$S":
				replayRequests(t, dialRaw(t, envValue(env, "S")), lines)
				socat++
			case assign && !strings.ContainsAny(name, " $"):
				if len(lines) > 0 {
					t.Errorf("README: %s shows output %q", cmd, lines)
				}
				out := runShell(t, env, cmd+`; printf '%s' "$`+name+`"`)
				env = append(env, name+"="+out)
			default:
				out := strings.TrimSuffix(runShell(t, env, cmd), "\n")
				if normalizeReply(out) != normalizeReply(strings.Join(lines, "\n")) {
					t.Errorf("README: $ %s\n got %q\nwant %q", cmd, out, strings.Join(lines, "\n"))
				}
				cli++
			}
			cmd, lines = next, nil
		}
	}
	if socat < 2 || cli < 5 || envValue(env, "S") == "" {
		t.Errorf("replayed %d socat sessions and %d commands, S=%q; the README sessions look broken", socat, cli, envValue(env, "S"))
	}
}

// replayRequests sends each request line of lines, a request and its
// reply in turn, on c, and checks it gets exactly the reply shown.
func replayRequests(t *testing.T, c *rawConn, lines []string) {
	t.Helper()
	if len(lines) < 4 || len(lines)%2 != 0 {
		t.Fatalf("README session has %d lines, want request/reply pairs", len(lines))
	}
	for i := 0; i < len(lines); i += 2 {
		if got, _ := c.do(lines[i]); normalizeReply(got) != normalizeReply(lines[i+1]) {
			t.Errorf("README: %s\n got %s\nwant %s", lines[i], got, lines[i+1])
		}
	}
}

// runShell runs script with /bin/sh in env and returns its standard
// output. A failure ends the test.
func runShell(t *testing.T, env []string, script string) string {
	t.Helper()
	sh := exec.Command("/bin/sh", "-c", script)
	sh.Env = env
	var stderr strings.Builder
	sh.Stderr = &stderr
	out, err := sh.Output()
	if err != nil {
		t.Fatalf("$ %s: %v\n%s", script, err, stderr.String())
	}
	return string(out)
}

// envValue returns the last value of name in env, as exec does.
func envValue(env []string, name string) string {
	value := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, name+"="); ok {
			value = v
		}
	}
	return value
}

// TestDocs_ProtocolExamples replays every example of docs/PROTOCOL.md, in
// order, on one connection to a fresh daemon: each "> " line is sent and
// the "< " lines after it are the replies it must get, up to the commit
// time of events, the server's version and the figures of stats. The
// section on retention runs on a daemon of its own, which compacts; there
// a "# " line says the example waits for compaction: the request after it
// is sent again until it gets its reply, for 20 seconds at most.
func TestDocs_ProtocolExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--max-attempts", "2")
	c := dialRaw(t, d.socket)
	sent, checked, retention := 0, 0, false
	inBlock, wait := false, false
	last := "" // the request sent last
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			if strings.HasPrefix(line, "## ") && strings.HasSuffix(line, " Retention") {
				c = dialRaw(t, startDaemon(t, "--retain-finished", "10ms", "--retain-tombstones", "2s").socket)
				retention = true
			}
			continue
		}
		switch {
		case strings.HasPrefix(line, "# "):
			wait = true
		case strings.HasPrefix(line, "> "):
			last = line[2:]
			c.send(last + "\n")
			sent++
		case strings.HasPrefix(line, "< "):
			got, _ := c.reply()
			want := line[2:]
			for deadline := time.Now().Add(20 * time.Second); wait && normalizeReply(got) != normalizeReply(want) && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond) // the poll's pace: a compaction pass runs every 500 ms
				got, _ = c.do(last)
			}
			if normalizeReply(got) != normalizeReply(want) {
				t.Errorf("docs/PROTOCOL.md reply\n got %s\nwant %s", got, want)
			}
			wait = false
			checked++
		}
	}
	if sent < 30 || checked < sent || !retention {
		t.Errorf("replayed %d requests and %d replies, the section on retention %v; the examples look broken", sent, checked, retention)
	}
}

var (
	tsField      = regexp.MustCompile(`"ts":\d+`)
	versionField = regexp.MustCompile(`"version":"[^"]*"`)
	anyNumber    = regexp.MustCompile(`:\d+(\.\d+)?`)
	clockField   = regexp.MustCompile(`"(lease_expires_at|retry_after_ms|updated_at|forgotten_before)":\d+`)
	msLeft       = regexp.MustCompile(`\d+ ms (more|from now)`)
	clockTime    = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z`)
)

// normalizeReply blanks what varies from run to run.
func normalizeReply(s string) string {
	s = tsField.ReplaceAllString(s, `"ts":0`)
	s = versionField.ReplaceAllString(s, `"version":""`)
	s = clockField.ReplaceAllString(s, `"$1":0`)
	s = msLeft.ReplaceAllString(s, "0 ms $1")
	s = clockTime.ReplaceAllString(s, "T")
	if strings.Contains(s, `"commits":{`) { // stats
		s = anyNumber.ReplaceAllString(s, ":0")
	}
	return s
}

// TestDocs_ShellRecipes runs the shell session of docs/OPERATIONS.md: each
// "$ " command, with S the socket, must print exactly the lines after it.
func TestDocs_ShellRecipes(t *testing.T) {
	testenv.NeedTools(t, "socat", "nc")
	doc, err := os.ReadFile("../../docs/OPERATIONS.md")
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--max-attempts", "2")
	var cmds []string
	want := map[int][]string{}
	for _, session := range strings.Split(string(doc), "```sh\n$ ")[1:] {
		session, _, _ = strings.Cut("$ "+session, "```")
		for _, line := range strings.Split(strings.TrimSpace(session), "\n") {
			if cmd, ok := strings.CutPrefix(line, "$ "); ok {
				cmds = append(cmds, cmd)
				continue
			}
			want[len(cmds)-1] = append(want[len(cmds)-1], normalizeReply(line))
		}
	}
	if len(cmds) < 4 {
		t.Fatalf("docs/OPERATIONS.md shell session has %d commands", len(cmds))
	}
	for i, cmd := range cmds {
		sh := exec.Command("/bin/sh", "-c", cmd)
		sh.Env = append(cleanEnv(), "S="+d.socket)
		out, err := sh.Output()
		var got []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			got = append(got, normalizeReply(line))
		}
		if err != nil || strings.Join(got, "\n") != strings.Join(want[i], "\n") {
			t.Errorf("$ %s\n got %q (%v)\nwant %q", cmd, got, err, strings.Join(want[i], "\n"))
		}
	}
}
