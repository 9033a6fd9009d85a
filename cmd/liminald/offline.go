package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"liminald/daemon"
	"liminald/sqlitestore"
)

var dbFlag = &cli.StringFlag{Name: "db", Usage: "database `PATH` (default: as serve: $LIMINAL_DB, the config file, the default path)"}

func offlineFlags(more ...cli.Flag) []cli.Flag {
	return append([]cli.Flag{dbFlag, configFlag, jsonFlag}, more...)
}

func offlineCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:  "check",
			Usage: "verify a database: integrity, contiguous seqs, stored state == replay of the log (works beside a running daemon)",
			Flags: offlineFlags(),
			Action: func(c *cli.Context) error {
				db, err := offlineDB(c, 0)
				if err != nil {
					return err
				}
				r, err := sqlitestore.Check(c.Context, db, progress(c, "checked"))
				if err != nil {
					return err
				}
				if c.Bool("json") {
					b, _ := json.Marshal(map[string]any{"ok": len(r.Problems) == 0, "db": db, "conversations": r.Conversations,
						"messages": r.Messages, "events": r.Events, "problems": nonNil(r.Problems)})
					fmt.Fprintf(c.App.Writer, "%s\n", b)
				} else {
					fmt.Fprintf(c.App.Writer, "%s: %d conversations, %d messages, %d events\n", db, r.Conversations, r.Messages, r.Events)
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
			},
		},
		{
			Name:      "export",
			Usage:     "write every event as JSON lines, in commit order (works beside a running daemon)",
			ArgsUsage: "[FILE]",
			Flags:     offlineFlags(),
			Action: func(c *cli.Context) error {
				db, err := offlineDB(c, 1)
				if err != nil {
					return err
				}
				name := c.Args().First()
				if name == "" || name == "-" {
					_, err := sqlitestore.Export(c.Context, db, c.App.Writer, progress(c, "exported"))
					return err
				}
				f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				n, err := sqlitestore.Export(c.Context, db, f, progress(c, "exported"))
				if err != nil {
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
				report(c, map[string]any{"ok": true, "events": n}, fmt.Sprintf("exported %d events", n))
				return nil
			},
		},
		{
			Name:      "import",
			Usage:     "append events (JSON lines, as export writes them) to a database; refuses while a daemon holds it",
			ArgsUsage: "[FILE]",
			Flags:     offlineFlags(),
			Action: func(c *cli.Context) error {
				db, err := offlineDB(c, 1)
				if err != nil {
					return err
				}
				var r io.Reader = c.App.Reader
				if name := c.Args().First(); name != "" && name != "-" {
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
			},
		},
		{
			Name:      "backup",
			Usage:     "write a consistent copy of a database, live or not, to DEST",
			ArgsUsage: "DEST",
			Flags:     offlineFlags(),
			Action: func(c *cli.Context) error {
				if c.NArg() != 1 {
					return usagef("backup takes DEST, got %d arguments", c.NArg())
				}
				db, err := offlineDB(c, 1)
				if err != nil {
					return err
				}
				if err := sqlitestore.Backup(c.Context, db, c.Args().First()); err != nil {
					return err
				}
				report(c, map[string]any{"ok": true, "backup": c.Args().First()}, "backup written to "+c.Args().First())
				return nil
			},
		},
	}
}

// offlineDB returns the database path the way serve finds it, and checks
// the command has at most maxArgs arguments.
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

func report(c *cli.Context, v map[string]any, text string) {
	if c.Bool("json") {
		b, _ := json.Marshal(v)
		fmt.Fprintf(c.App.Writer, "%s\n", b)
		return
	}
	fmt.Fprintln(c.App.ErrWriter, text)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// progress reports the progress of long offline work on stderr when it is
// a terminal, at most a few times a second; elsewhere it stays quiet.
func progress(c *cli.Context, verb string) sqlitestore.Progress {
	f, ok := c.App.ErrWriter.(*os.File)
	if !ok {
		return nil
	}
	if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err != nil {
		return nil
	}
	var last time.Time
	return func(done, total int64) {
		if time.Since(last) < 200*time.Millisecond && done != total {
			return
		}
		last = time.Now()
		if total > 0 {
			fmt.Fprintf(f, "\r%s %d/%d events (%d%%)  ", verb, done, total, done*100/total)
		} else {
			fmt.Fprintf(f, "\r%s %d events  ", verb, done)
		}
		if done == total {
			fmt.Fprintln(f)
		}
	}
}
