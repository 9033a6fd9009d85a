package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
	"liminald/pgstore"
	"liminald/sqlitestore"
)

// exportCommand writes every event of a database as JSON lines, in commit
// order, with what retention keeps beside them (its conversations' headers
// and tombstones), to FILE or standard output: liminald export [FILE].
type exportCommand struct{}

// Command describes export.
func (cmd exportCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "export",
		Usage:     "write every event, and the tombstones, as JSON lines, in commit order (works beside a running daemon)",
		ArgsUsage: "[FILE]",
		Flags: offlineFlags(
			&cli.BoolFlag{Name: "force", Usage: "overwrite FILE if it exists"},
		),
		Action: cmd.Run,
	}
}

// Run exports the database. FILE must not exist yet, unless --force
// (which overwrites it); written to it, the export reports how many events
// it wrote.
func (exportCommand) Run(c *cli.Context) error {
	db, err := offlineDB(c, 1)
	if err != nil {
		return err
	}
	var w io.Writer = c.App.Writer
	var f *os.File
	if name := fileArg(c); name != "" {
		mode := os.O_WRONLY | os.O_CREATE | os.O_EXCL
		if c.Bool("force") {
			mode = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
		}
		if f, err = os.OpenFile(name, mode, 0o600); err != nil {
			if errors.Is(err, os.ErrExist) {
				return fmt.Errorf("export: %s exists; --force overwrites it", name)
			}
			return err
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
			f.Chmod(0o600) // it holds payloads, whatever the mode of the file it overwrites
		}
		w = f
	}
	export := sqlitestore.Export
	if daemon.IsPostgres(db) {
		export = pgstore.Export
	}
	n, err := export(c.Context, db, w, progress(c, "exported"))
	if err != nil || f == nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	report(c, map[string]any{"ok": true, "events": n}, fmt.Sprintf("exported %d events", n))
	return nil
}
