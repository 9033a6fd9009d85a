package main

import (
	"errors"
	"fmt"
	"os"

	"liminald/daemon"
	"liminald/sqlitestore"
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
	case errors.Is(err, os.ErrNotExist):
		return "not_found"
	}
	return "failed"
}
