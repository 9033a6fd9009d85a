package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
	"liminald/sqlitestore"
)

// importCommand appends events, as JSON lines the way export writes them,
// from FILE or standard input to a database no daemon holds: liminald
// import [FILE].
type importCommand struct{}

// Command describes import.
func (cmd importCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "append events (JSON lines, as export writes them) to a database; refuses while a daemon holds it",
		ArgsUsage: "[FILE]",
		Flags:     offlineFlags(),
		Action:    cmd.Run,
	}
}

// Run imports the events under the database's lock. Returns
// daemon.ErrLocked while a daemon holds it, and the store's
// *sqlitestore.ImportError for an event it refuses.
func (importCommand) Run(c *cli.Context) error {
	db, err := offlineDB(c, 1)
	if err != nil {
		return err
	}
	var r io.Reader = c.App.Reader
	if name := fileArg(c); name != "" {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	lock, err := daemon.AcquireLock(db + ".lock")
	if err != nil {
		return err
	}
	defer lock.Release()
	if _, err := sqlitestore.Create(db); err != nil {
		return err
	}
	s, err := sqlitestore.Open(db, sqlitestore.Options{})
	if err != nil {
		return err
	}
	n, err := s.Import(c.Context, r, progress(c, "imported"))
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("import: %w (%d events appended before it)", err, n)
	}
	report(c, map[string]any{"ok": true, "appended": n}, fmt.Sprintf("imported %d events", n))
	return nil
}
