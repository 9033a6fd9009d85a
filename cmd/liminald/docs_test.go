package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	"liminald/internal/testenv"
)

// TestDocs_ReadmeSession replays the socat session of README.md against the
// real daemon: each request line must get exactly the reply shown.
func TestDocs_ReadmeSession(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	sessions := strings.Split(string(readme), "$ socat - UNIX-CONNECT:$S\n")[1:]
	if len(sessions) == 0 {
		t.Fatal("README.md has no socat session")
	}
	d := startDaemon(t)
	c := dialRaw(t, d.socket)
	for _, session := range sessions {
		session, _, _ = strings.Cut(session, "```")
		lines := strings.Split(strings.TrimSpace(session), "\n")
		if len(lines) < 10 || len(lines)%2 != 0 {
			t.Fatalf("README session has %d lines, want request/reply pairs", len(lines))
		}
		for i := 0; i < len(lines); i += 2 {
			if got, _ := c.do(lines[i]); normalizeReply(got) != normalizeReply(lines[i+1]) {
				t.Errorf("README: %s\n got %s\nwant %s", lines[i], got, lines[i+1])
			}
		}
	}
}

// TestDocs_ProtocolExamples replays every example of docs/PROTOCOL.md, in
// order, on one connection to a fresh daemon: each "> " line is sent and
// the "< " lines after it are the replies it must get, up to the commit
// time of events, the server's version and the figures of stats.
func TestDocs_ProtocolExamples(t *testing.T) {
	doc, err := os.ReadFile("../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--max-attempts", "2")
	c := dialRaw(t, d.socket)
	sent, checked := 0, 0
	inBlock := false
	for _, line := range strings.Split(string(doc), "\n") {
		if strings.HasPrefix(line, "```") || strings.HasPrefix(line, "~~~") {
			inBlock = !inBlock
			continue
		}
		if !inBlock {
			continue
		}
		switch {
		case strings.HasPrefix(line, "> "):
			c.send(line[2:] + "\n")
			sent++
		case strings.HasPrefix(line, "< "):
			got, _ := c.reply()
			if want := line[2:]; normalizeReply(got) != normalizeReply(want) {
				t.Errorf("docs/PROTOCOL.md reply\n got %s\nwant %s", got, want)
			}
			checked++
		}
	}
	if sent < 30 || checked < sent {
		t.Errorf("replayed %d requests and %d replies; the examples look broken", sent, checked)
	}
}

var (
	tsField      = regexp.MustCompile(`"ts":\d+`)
	versionField = regexp.MustCompile(`"version":"[^"]*"`)
	anyNumber    = regexp.MustCompile(`:\d+(\.\d+)?`)
	clockField   = regexp.MustCompile(`"(lease_expires_at|retry_after_ms|updated_at)":\d+`)
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
