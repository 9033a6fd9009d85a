package sqlitestore

import (
	"errors"
	"fmt"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

var (
	// ErrUnavailable: the store cannot write now (disk full, read-only file,
	// I/O error). Nothing acknowledged is lost and the request may be retried;
	// reads keep working. Errors wrapping it say what failed.
	ErrUnavailable = errors.New("store cannot write now")
	// ErrClosed: the store is closing or closed.
	ErrClosed = errors.New("store is closed")
	// ErrNewerSchema: the database was written by a newer liminald.
	ErrNewerSchema = errors.New("database is from a newer version of liminald")
)

// unavailable wraps err, a failure of the database, as ErrUnavailable when it
// is one the store recovers from by itself once its cause is gone: the disk
// is full, the file is read-only or cannot be opened, an I/O error. Any other
// error is returned as it is.
func unavailable(op string, err error) error {
	if err == nil {
		return nil
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, ErrUnavailable, err)
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
