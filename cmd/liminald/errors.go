package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
	"liminald/sqlitestore"
)

// The command line's own fixed errors.
var (
	// errNoEvents is a conversation state found with no events: most likely
	// its name is misspelt. Printed as not_found.
	errNoEvents = errors.New("no events")
)

// exitError is a failure the command already printed; it carries the exit
// code.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

// usageError is a command line the command cannot run: run prints it with
// the code bad_request and exits 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// onUsageError makes a command line urfave/cli cannot parse (an unknown
// flag, a bad value) a usage error.
func onUsageError(_ *cli.Context, err error, _ bool) error { return usageError{err.Error()} }

// requiredFlag is a flag its command cannot run without: its help says so
// and shows no default, and checkRequired refuses a command line without
// it. (A flag marked Required for urfave/cli fails before any hook of the
// command runs, with an error run cannot tell from a failure of the
// command.)
type requiredFlag struct{ docFlag }

// docFlag is what urfave/cli asks of a flag to parse it and show its help.
type docFlag interface {
	cli.DocGenerationFlag
	cli.CategorizableFlag
}

func required(f docFlag) requiredFlag { return requiredFlag{f} }

// GetDefaultText returns "": a required flag has no default to show.
func (requiredFlag) GetDefaultText() string { return "" }

// GetUsage returns the flag's usage, marked required.
func (f requiredFlag) GetUsage() string { return f.docFlag.GetUsage() + " (required)" }

func (f requiredFlag) String() string { return cli.FlagStringer(f) }

// checkRequired returns a usage error naming the required flags of c's
// command that were not given.
func checkRequired(c *cli.Context) error {
	var missing []string
	for _, f := range c.Command.Flags {
		if r, ok := f.(requiredFlag); ok && !c.IsSet(r.Names()[0]) {
			missing = append(missing, "--"+r.Names()[0])
		}
	}
	if len(missing) > 0 {
		return usagef("%s needs %s", c.Command.Name, strings.Join(missing, " and "))
	}
	return nil
}

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
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
	case errors.Is(err, os.ErrNotExist), errors.Is(err, errNoEvents):
		return "not_found"
	}
	return "failed"
}
