package main

import (
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
	"liminald/pgstore"
	"liminald/sqlitestore"
)

// importCommand appends events, and restores the headers and tombstones
// beside them, as JSON lines the way export writes them, from FILE or
// standard input to a database no daemon holds: liminald import [FILE].
type importCommand struct{}

// Command describes import.
func (cmd importCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "import",
		Usage:     "append events and tombstones (JSON lines, as export writes them) to a database; a SQLite one only while no daemon holds it",
		ArgsUsage: "[FILE]",
		Flags:     offlineFlags(),
		Action:    cmd.Run,
	}
}

// Run imports the events under the database's lock. Returns
// daemon.ErrLocked while a daemon holds it, and the store's
// *sqlitestore.ImportError for a line it refuses. A failed import leaves
// behind neither the database nor the lock file if it made them.
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
	if daemon.IsPostgres(db) {
		return importPostgres(c, db, r)
	}
	lock, err := daemon.AcquireLock(db + ".lock")
	if err != nil {
		return err
	}
	n, created, err := importInto(c, db, r)
	if err != nil {
		lock.Discard()
		if created {
			return fmt.Errorf("import: %w (nothing kept: the new database %s is removed)", err, db)
		}
		return fmt.Errorf("import: %w (%d events appended before it)", err, n)
	}
	if err := lock.Release(); err != nil {
		return err
	}
	report(c, map[string]any{"ok": true, "appended": n}, fmt.Sprintf("imported %d events", n))
	return nil
}

// importInto imports the events read from r into the database at db,
// creating it (0600) if it does not exist, and removing it again if it
// created it and the import fails. Returns how many events it appended,
// and whether it created the database.
func importInto(c *cli.Context, db string, r io.Reader) (n int64, created bool, err error) {
	if created, err = sqlitestore.Create(db); err != nil {
		return 0, false, err
	}
	defer func() {
		if err != nil && created {
			sqlitestore.Remove(db)
		}
	}()
	s, err := sqlitestore.Open(db, sqlitestore.Options{})
	if err != nil {
		return 0, created, err
	}
	n, err = s.Import(c.Context, r, progress(c, "imported"))
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return n, created, err
}

// importPostgres imports the events read from r into the PostgreSQL
// database at url, creating liminald's schema there if it has none. The
// database lock is SQLite's: daemons may serve the database meanwhile, and
// the write rules judge each imported event against what they wrote.
func importPostgres(c *cli.Context, url string, r io.Reader) error {
	cfg, err := resolve(c)
	if err != nil {
		return err
	}
	log, _ := daemon.NewLogger(c.App.ErrWriter, "warn", "text") // says what it waits for
	s, err := pgstore.Open(c.Context, url, pgstore.Options{Logger: log, ConnectTimeout: cfg.ConnectTimeout})
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
