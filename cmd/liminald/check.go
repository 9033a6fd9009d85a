package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
	"liminald/pgstore"
	"liminald/sqlitestore"
)

// checkCommand verifies a database: its integrity, contiguous seqs but for
// compacted messages, and stored state equal to the replay of its log with
// its tombstones: liminald check.
type checkCommand struct{}

// Command describes check.
func (cmd checkCommand) Command() *cli.Command {
	return &cli.Command{
		Name:   "check",
		Usage:  "verify a database: integrity, contiguous seqs, stored state == replay of the log and the tombstones (works beside a running daemon)",
		Flags:  offlineFlags(),
		Action: cmd.Run,
	}
}

// Run checks the database and prints what it found. A problem found prints
// check_failed and exits 1.
func (checkCommand) Run(c *cli.Context) error {
	db, err := offlineDB(c, 0)
	if err != nil {
		return err
	}
	var r *sqlitestore.Report
	if daemon.IsPostgres(db) {
		r, err = pgstore.Check(c.Context, db, progress(c, "checked"))
	} else {
		r, err = sqlitestore.Check(c.Context, db, progress(c, "checked"))
	}
	if err != nil {
		return err
	}
	db = daemon.DisplayDB(db)
	if c.Bool("json") {
		problems := r.Problems
		if problems == nil {
			problems = []string{}
		}
		b, _ := json.Marshal(map[string]any{"ok": len(problems) == 0, "db": db, "conversations": r.Conversations,
			"messages": r.Messages, "events": r.Events, "tombstones": r.Tombstones, "problems": problems})
		fmt.Fprintf(c.App.Writer, "%s\n", b)
	} else {
		fmt.Fprintf(c.App.Writer, "%s: %d conversations, %d messages, %d events, %d tombstones\n", db, r.Conversations, r.Messages, r.Events, r.Tombstones)
		for _, p := range r.Problems {
			fmt.Fprintf(c.App.Writer, "problem: %s\n", p)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "liminald: check_failed: %d problems found\n", len(r.Problems))
		return exitError{1}
	}
	if !c.Bool("json") {
		fmt.Fprintln(c.App.Writer, "ok")
	}
	return nil
}
