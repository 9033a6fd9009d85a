package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"liminald/sqlitestore"
)

// What the offline commands (check, export, import, backup) share: they
// work on a database file, found as serve finds it, with no daemon.

var dbFlag = &cli.StringFlag{Name: "db", Usage: "database `PATH`, or postgres:// URL", DefaultText: "as serve: $LIMINAL_DB, the config file, the default path"}

// offlineFlags returns the flags every offline command takes, then more.
func offlineFlags(more ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{dbFlag, configFlag, jsonFlag}, more...)
}

// offlineDB returns the database path the way serve finds it, and checks
// the command has at most maxArgs arguments. Returns a usage error for
// more, and the errors of resolve.
func offlineDB(c *cli.Context, maxArgs int) (string, error) {
	if c.NArg() > maxArgs {
		return "", usagef("%s takes at most %d arguments, got %d", c.Command.Name, maxArgs, c.NArg())
	}
	cfg, err := resolve(c)
	if err != nil {
		return "", err
	}
	return cfg.DB, nil
}

// fileArg returns the optional FILE argument of export and import, or ""
// when there is none or it is "-": standard output or input.
func fileArg(c *cli.Context) string {
	if name := c.Args().First(); name != "-" {
		return name
	}
	return ""
}

// report prints the outcome of an offline command: v as JSON on stdout
// with --json, else text on stderr.
func report(c *cli.Context, v map[string]any, text string) {
	if c.Bool("json") {
		b, _ := json.Marshal(v)
		fmt.Fprintf(c.App.Writer, "%s\n", b)
		return
	}
	fmt.Fprintln(c.App.ErrWriter, text)
}

// progress returns what reports the progress of long offline work, drawn
// on stderr when it is a terminal (see terminal), at most a few times a
// second; elsewhere it stays quiet (nil).
func progress(c *cli.Context, verb string) sqlitestore.Progress {
	t, ok := c.App.ErrWriter.(*terminal)
	if !ok {
		return nil
	}
	return t.progress(verb)
}

// terminal is stderr when it is a terminal. The offline commands draw
// their progress on it as one line, redrawn in place. Whatever is written
// next to stderr, or to stdout when that is a terminal too, first clears
// the line, and so does run when the command ends, whether the work ended
// or failed: the line never runs into other output, nor stays behind
// half-drawn.
type terminal struct {
	w    io.Writer
	mu   sync.Mutex
	open bool // a progress line is drawn and not cleared yet
}

// openTerminal returns the stdout and stderr the command line writes to:
// when stderr is a terminal, stderr becomes a *terminal, and stdout, when
// it is a terminal too, clears the terminal's progress line before it
// writes.
func openTerminal(stdout, stderr io.Writer) (io.Writer, io.Writer) {
	if !isTerminal(stderr) {
		return stdout, stderr
	}
	t := &terminal{w: stderr}
	if isTerminal(stdout) {
		stdout = clearFirst{t, stdout}
	}
	return stdout, t
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && isatty.IsTerminal(f.Fd())
}

// Write clears the progress line, then writes p.
func (t *terminal) Write(p []byte) (int, error) {
	t.clear()
	return t.w.Write(p)
}

// progress returns a sqlitestore.Progress that draws "verb done/total
// events" on t.
func (t *terminal) progress(verb string) sqlitestore.Progress {
	var last time.Time
	return func(done, total int64) {
		if time.Since(last) < 200*time.Millisecond && done != total {
			return
		}
		last = time.Now()
		if total > 0 && done <= total {
			t.draw(fmt.Sprintf("%s %d/%d events (%d%%)", verb, done, total, done*100/total))
		} else {
			t.draw(fmt.Sprintf("%s %d events", verb, done))
		}
	}
}

// draw draws text as the progress line, over the one before.
func (t *terminal) draw(text string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	fmt.Fprintf(t.w, "\r%s\x1b[K", text)
	t.open = true
}

// clear erases the progress line, if one is drawn, and leaves the cursor
// at the start of its line.
func (t *terminal) clear() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open {
		io.WriteString(t.w, "\r\x1b[K")
		t.open = false
	}
}

// clearFirst is stdout on the terminal of a *terminal: it clears the
// progress line before it writes.
type clearFirst struct {
	t *terminal
	w io.Writer
}

func (c clearFirst) Write(p []byte) (int, error) {
	c.t.clear()
	return c.w.Write(p)
}
