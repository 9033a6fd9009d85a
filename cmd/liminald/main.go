// Command liminald is the liminald daemon and its command line: serve runs
// the daemon; the client subcommands speak its protocol over the unix
// socket for local debugging; check, export, import and backup work on a
// database file.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
	"liminald/ipc"
	"liminald/sqlitestore"
)

// version is set at build time with -ldflags "-X main.version=..."; else it
// comes from the module's build information.
var version = ""

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// exitError is a failure the command already printed; it carries the exit
// code.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// run runs the command line args and returns the exit code: 0 on success,
// 1 on a failure (its error code printed), 2 on a usage error.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	err := app.RunContext(ctx, args)
	if err == nil {
		return 0
	}
	var ee exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var ie *ipc.Error
	if errors.As(err, &ie) {
		fmt.Fprintf(stderr, "liminald: %s\n", ie.Error())
		return 1
	}
	fmt.Fprintf(stderr, "liminald: %s: %v\n", commandCode(err), err)
	if isUsage(err) {
		return 2
	}
	return 1
}

// commandCode is the error code printed for a failure of the command line
// itself rather than a reply of the daemon (those print the protocol's
// code).
func commandCode(err error) string {
	var importErr *sqlitestore.ImportError
	switch {
	case isUsage(err):
		return "bad_request"
	case errors.Is(err, daemon.ErrLocked):
		return "locked"
	case errors.As(err, &importErr):
		return "import_refused"
	case errors.Is(err, sqlitestore.ErrNewerSchema):
		return "newer_schema"
	case errors.Is(err, os.ErrNotExist):
		return "not_found"
	}
	return "failed"
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// usageError is a command line the command cannot run.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	return &cli.App{
		Name:            "liminald",
		Usage:           "durable memory of message processing: skip, resume or start a redelivered message",
		Version:         versionString(),
		Reader:          stdin,
		Writer:          stdout,
		ErrWriter:       stderr,
		HideHelpCommand: true,
		Commands:        append(append([]*cli.Command{serveCommand()}, clientCommands()...), offlineCommands()...),
		ExitErrHandler:  func(*cli.Context, error) {}, // run prints errors and picks the exit code
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err.Error()}
		},
	}
}
