package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"liminald/sqlitestore"
)

// What the offline commands (check, export, import, backup) share: they
// work on a database file, found as serve finds it, with no daemon.

var dbFlag = &cli.StringFlag{Name: "db", Usage: "database `PATH`", DefaultText: "as serve: $LIMINAL_DB, the config file, the default path"}

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

// progress reports the progress of long offline work on stderr when it is
// a terminal, at most a few times a second; elsewhere it stays quiet.
func progress(c *cli.Context, verb string) sqlitestore.Progress {
	f, ok := c.App.ErrWriter.(*os.File)
	if !ok {
		return nil
	}
	if !isatty.IsTerminal(f.Fd()) {
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
