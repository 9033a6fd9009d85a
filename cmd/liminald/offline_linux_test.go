package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestOffline_ProgressEnds runs import with stderr on a terminal: the line
// of progress it draws is cleared before what comes next, so its report,
// or its failure, starts a line of its own.
func TestOffline_ProgressEnds(t *testing.T) {
	// A batch of 1024 events, and progress drawn after it; then a line that
	// fails.
	var lines strings.Builder
	for seq := range 1024 {
		fmt.Fprintf(&lines, `{"conversation":"c","seq":%d,"ts":1,"type":"message_received","message_id":"m%d","received_at":1}`+"\n", seq, seq)
	}
	dir := t.TempDir()
	dump := filepath.Join(dir, "dump.jsonl")
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(dump, []byte(lines.String()), 0o600)
	os.WriteFile(bad, []byte(lines.String()+`{"conversation":"c","seq":5,"ts":1,"type":"processing_started","message_id":"m"}`+"\n"), 0o600)
	for _, tc := range []struct {
		name, file, want string
	}{
		{"Report", dump, "imported 1024 events\r\n"},
		{"Failure", bad, "liminald: import_refused: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			imp := exec.Command(binary, "import", "--db", filepath.Join(t.TempDir(), "db"), tc.file)
			imp.Env = append(cleanEnv(), "HOME="+dir)
			got := stderrOnTerminal(t, imp)
			const progress = "\rimported 1024 events\x1b[K"
			drawn := strings.LastIndex(got, progress)
			if drawn < 0 {
				t.Fatalf("import on a terminal wrote %q, want its progress drawn", got)
			}
			if after := got[drawn+len(progress):]; !strings.HasPrefix(after, "\r\x1b[K"+tc.want) {
				t.Errorf("after its progress, import wrote %q, want the line cleared, then %q", after, tc.want)
			}
		})
	}
}

// stderrOnTerminal runs cmd with its stderr on a pseudo-terminal, and
// returns what it wrote there once it exited.
func stderrOnTerminal(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	ptmx, tty := openPTY(t)
	cmd.Stderr = tty
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	tty.Close() // the command holds it now; the reads end when it exits
	var screen bytes.Buffer
	read := make(chan struct{})
	go func() { io.Copy(&screen, ptmx); close(read) }() // ends with EIO
	cmd.Wait()
	<-read
	return screen.String()
}
