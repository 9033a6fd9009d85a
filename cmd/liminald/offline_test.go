package main

import (
	"fmt"
	"strings"
	"testing"
)

// TestTerminal_Progress draws progress on a fake terminal: each draw
// overwrites the line before, and whatever comes next (the work's report
// on stderr, a result on stdout, or the end of the command) first clears
// it, so no half line of progress is left before it or behind.
func TestTerminal_Progress(t *testing.T) {
	const clearLine = "\r\x1b[K"
	for _, tc := range []struct {
		name string
		then func(term *terminal, stdout clearFirst)
		want string // after the drawing
	}{
		{"Report", func(term *terminal, _ clearFirst) { fmt.Fprintln(term, "exported 3 events") }, clearLine + "exported 3 events\n"},
		{"Failure", func(term *terminal, _ clearFirst) { fmt.Fprintln(term, "liminald: failed: disk full") }, clearLine + "liminald: failed: disk full\n"},
		{"Stdout", func(_ *terminal, stdout clearFirst) { fmt.Fprintln(stdout, "ok") }, clearLine + "ok\n"},
		{"End", func(term *terminal, _ clearFirst) { term.clear(); term.clear() }, clearLine},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var screen strings.Builder
			term := &terminal{w: &screen}
			progress := term.progress("exported")
			progress(1, 3)
			progress(3, 3) // the last is drawn however soon it comes
			drawn := "\rexported 1/3 events (33%)\x1b[K\rexported 3/3 events (100%)\x1b[K"
			if screen.String() != drawn {
				t.Fatalf("progress drew %q, want %q", screen.String(), drawn)
			}
			// stdout shares the screen, as on a terminal.
			tc.then(term, clearFirst{term, &screen})
			if got := strings.TrimPrefix(screen.String(), drawn); got != tc.want {
				t.Errorf("after the progress: %q, want %q", got, tc.want)
			}
		})
	}

	t.Run("UnknownTotal", func(t *testing.T) {
		var screen strings.Builder
		term := &terminal{w: &screen}
		term.progress("imported")(4096, 0)
		term.clear()
		if want := "\rimported 4096 events\x1b[K" + clearLine; screen.String() != want {
			t.Errorf("progress with no total drew %q, want %q", screen.String(), want)
		}
	})
}
