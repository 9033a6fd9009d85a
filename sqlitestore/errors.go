package sqlitestore

import (
	"errors"
	"fmt"
	"liminald/conversation"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// The store's failures are the domain's: conversation.ErrUnavailable (the
// store cannot write now; reads keep working) and conversation.ErrClosed.
var (
	// ErrNewerSchema: the database was written by a newer liminald.
	ErrNewerSchema = errors.New("database is from a newer version of liminald")
)

// unavailable wraps err, a failure of the database, as conversation.ErrUnavailable when it
// is one the store recovers from by itself once its cause is gone: the disk
// is full, the file is read-only or cannot be opened, an I/O error. Any other
// error is returned as it is.
func unavailable(op string, err error) error {
	if err == nil {
		return nil
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, conversation.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isUnavailable(err error) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	switch se.Code() & 0xff {
	case sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY,
		sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED,
		sqlite3.SQLITE_NOMEM:
		return true
	}
	return false
}

func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && (se.Code()&0xff == sqlite3.SQLITE_BUSY || se.Code()&0xff == sqlite3.SQLITE_LOCKED)
}
