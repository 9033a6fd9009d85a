package pgstore

import (
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"

	"liminald/conversation"
)

// The store's failures are the domain's (conversation.ErrUnavailable,
// conversation.ErrClosed) and these.
var (
	// ErrNewerSchema: the database was written by a newer liminald.
	ErrNewerSchema = errors.New("database is from a newer version of liminald")
	// ErrNotLiminal: the database has tables of liminald's names but no
	// liminald schema version.
	ErrNotLiminal = errors.New("database has tables named as liminald's but no liminald schema version; it is not a liminald database")
)

// unavailable wraps err, a failure of the database, as
// conversation.ErrUnavailable when the store recovers from it by itself
// once its cause is gone: the server cannot be reached or went away, it
// is short of a resource, shutting down, read-only, or broke a deadlock.
// Any other error (a bug: a statement PostgreSQL refuses) is returned as
// it is, with op.
func unavailable(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, conversation.ErrUnavailable) {
		return err
	}
	if isUnavailable(err) {
		return fmt.Errorf("%s: %w: %w", op, conversation.ErrUnavailable, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

func isUnavailable(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		// Not an error of the server: the connection's (refused, reset,
		// closed, timed out).
		return true
	}
	switch pe.Code[:2] {
	case "08", // connection exception
		"40", // transaction rollback: serialization failure, deadlock
		"53", // insufficient resources: disk full, out of memory, too many connections
		"55", // object not in prerequisite state: lock not available
		"57", // operator intervention: shutdown, cannot connect now, canceled
		"58": // system error: I/O
		return true
	}
	return pe.Code == "25006" // read-only transaction (a standby)
}

// isRetryable reports whether err is a deadlock, a serialization failure,
// or errConversationGone: the batch that got it is rolled back and written
// again.
func isRetryable(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001") || errors.Is(err, errConversationGone)
}
