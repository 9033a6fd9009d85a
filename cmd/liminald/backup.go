package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
	"liminald/sqlitestore"
)

// backupCommand writes a consistent copy of a database, live or not, to
// DEST: liminald backup DEST.
type backupCommand struct{}

// Command describes backup.
func (cmd backupCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "write a consistent copy of a database, live or not, to DEST",
		ArgsUsage: "DEST",
		Flags:     offlineFlags(),
		Action:    cmd.Run,
	}
}

// Run writes the copy, showing its progress on a terminal. Returns
// sqlitestore.Backup's error.
func (backupCommand) Run(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("backup takes DEST, got %d arguments", c.NArg())
	}
	db, err := offlineDB(c, 1)
	if err != nil {
		return err
	}
	if daemon.IsPostgres(db) {
		return fmt.Errorf("backup: %s is a PostgreSQL database: back it up with PostgreSQL's tools, pg_dump (or pg_basebackup with WAL archiving, for point-in-time recovery); see docs/OPERATIONS.md", daemon.DisplayDB(db))
	}
	dest := c.Args().First()
	if err := sqlitestore.Backup(c.Context, db, dest, progress(c, "backed up")); err != nil {
		return err
	}
	report(c, map[string]any{"ok": true, "backup": dest}, "backup written to "+dest)
	return nil
}
