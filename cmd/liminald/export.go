package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"liminald/sqlitestore"
)

// exportCommand writes every event of a database as JSON lines, in commit
// order, to FILE or standard output: liminald export [FILE].
type exportCommand struct{}

// Command describes export.
func (cmd exportCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write every event as JSON lines, in commit order (works beside a running daemon)",
		ArgsUsage: "[FILE]",
		Flags:     offlineFlags(),
		Action:    cmd.Run,
	}
}

// Run exports the database. FILE must not exist yet; written to it, the
// export reports how many events it wrote.
func (exportCommand) Run(c *cli.Context) error {
	db, err := offlineDB(c, 1)
	if err != nil {
		return err
	}
	var w io.Writer = c.App.Writer
	var f *os.File
	if name := fileArg(c); name != "" {
		if f, err = os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	n, err := sqlitestore.Export(c.Context, db, w, progress(c, "exported"))
	if err != nil || f == nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	report(c, map[string]any{"ok": true, "events": n}, fmt.Sprintf("exported %d events", n))
	return nil
}
