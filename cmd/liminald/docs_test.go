package main

import (
	"os"
	"strings"
	"testing"
)

// TestDocs_ReadmeSession replays the socat session of README.md against the
// real daemon: each request line must get exactly the reply shown.
func TestDocs_ReadmeSession(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, session, ok := strings.Cut(string(readme), "$ socat - UNIX-CONNECT:$S\n")
	if !ok {
		t.Fatal("README.md has no socat session")
	}
	session, _, _ = strings.Cut(session, "```")
	lines := strings.Split(strings.TrimSpace(session), "\n")
	if len(lines) < 10 || len(lines)%2 != 0 {
		t.Fatalf("README session has %d lines, want request/reply pairs", len(lines))
	}
	d := startDaemon(t)
	c := dialRaw(t, d.socket)
	for i := 0; i < len(lines); i += 2 {
		if got, _ := c.do(lines[i]); got != lines[i+1] {
			t.Errorf("README: %s\n got %s\nwant %s", lines[i], got, lines[i+1])
		}
	}
}
