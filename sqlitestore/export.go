package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"

	"modernc.org/sqlite"

	"liminald/conversation"
	"liminald/internal/offline"
)

// Export writes the database at path to w as JSON lines (see
// offline.Export): its headers, every event in pos order, its tombstones
// in (conversation, seq) order. It reads one consistent snapshot and works
// beside a running daemon. Returns the number of events written.
func Export(ctx context.Context, path string, w io.Writer, progress Progress) (int64, error) {
	db, err := openExisting(path)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return 0, fmt.Errorf("export %s: %w", path, err)
	}
	defer tx.Rollback()
	n, err := offline.Export(w, offline.Source{
		Snapshot: snapshotOf(ctx, tx),
		ScanEvent: func(row offline.Rows, more ...any) (conversation.Event, error) {
			return scanEvent(row, "", more...)
		},
		ScanMessage: func(row offline.Rows, first ...any) (*conversation.Message, error) {
			return scanMessageColumns(row, first...)
		},
		EventsSQL: `SELECT ` + eventColumns + `, c.name FROM events e JOIN conversations c ON c.id = e.conversation_id ORDER BY e.pos`,
		// The join exposes only the conversation's name: messageColumns
		// name columns of messages that conversations has too.
		TombstonesSQL: `SELECT c.name, m.message_id, ` + messageColumns + ` FROM messages m
			JOIN (SELECT id, name FROM conversations) c ON c.id = m.conversation_id WHERE m.compacted = 1 ORDER BY c.name, m.last_seq`,
	}, progress)
	if err != nil {
		return n, fmt.Errorf("export %s: %w", path, err)
	}
	return n, nil
}

// snapshotOf is how the offline tools read the snapshot of tx.
func snapshotOf(ctx context.Context, tx *sql.Tx) offline.Snapshot {
	return offline.Snapshot{
		Query: func(query string, args ...any) (offline.Rows, func(), error) {
			rows, err := tx.QueryContext(ctx, query, args...)
			if err != nil {
				return nil, nil, err
			}
			return rows, func() { rows.Close() }, nil
		},
		Horizon: func(h *conversation.Horizon) any { return scanHorizon{h} },
	}
}

// ImportError is a line that Import refused.
type ImportError = offline.ImportError

// Import appends the lines read from r, as Export writes them, to the
// store (see offline.Import for what it takes). Events keep their
// conversation, seq, ts and content; pos is given anew, in the order of
// the input. A tombstone needs an unknown message, and no event at its
// seq. Returns the number of events appended, and an *ImportError naming
// the first line refused; the lines before it stay.
func (s *Store) Import(ctx context.Context, r io.Reader, progress Progress) (int64, error) {
	return offline.Import(ctx, r, progress, func(ctx context.Context, items []*offline.Item) {
		offline.WriteAll(ctx, items, func(it *offline.Item, then func(conversation.Outcome, error)) *request {
			req := &request{cmd: conversation.Command{Conversation: it.Conversation}, then: then}
			switch it.Kind {
			case offline.KindEvent:
				req.cmd, req.imported, req.ts = it.Command, true, it.Event.TS
			case offline.KindHeader:
				req.maint = &maintenance{kind: maintHeader, header: it.Header}
			case offline.KindTombstone:
				req.cmd.MessageID = it.Tombstone.MessageID
				req.maint = &maintenance{kind: maintRestore, tomb: it.Tombstone}
			}
			return req
		}, s.enqueue)
	})
}

// backupPages is how many pages Backup copies at a time, between two
// reports of its progress.
var backupPages int32 = 1024

// Backup writes a consistent copy of the database at path to dst, which must
// not exist: it is created with mode 0600, like the database (see Create),
// and removed again if the copy fails. It works beside a running daemon: it
// copies the pages of one snapshot with SQLite's online backup, a few at a
// time, and tells progress (which may be nil) how far it got in events,
// those of the snapshot in the share of its pages copied. Returns an error
// wrapping fs.ErrExist when dst exists.
func Backup(ctx context.Context, path, dst string, progress Progress) (err error) {
	db, err := openExisting(path)
	if err != nil {
		return err
	}
	defer db.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	f.Close()
	defer func() {
		if err != nil {
			Remove(dst)
		}
	}()
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	defer conn.Close()
	// One read transaction, held from the first page copied to the last,
	// is the snapshot: without it each step would read the latest commit,
	// and a commit between two steps would start the copy over.
	if _, err := conn.ExecContext(ctx, "BEGIN"); err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	defer conn.ExecContext(context.Background(), "ROLLBACK")
	var events int64
	if err := conn.QueryRowContext(ctx, "SELECT count(*) FROM events").Scan(&events); err != nil {
		return fmt.Errorf("backup %s: %w", path, err)
	}
	err = conn.Raw(func(driverConn any) error {
		bc, ok := driverConn.(interface {
			NewBackup(dst string) (*sqlite.Backup, error)
		})
		if !ok {
			return fmt.Errorf("driver connection %T has no online backup", driverConn)
		}
		b, err := bc.NewBackup(dsn(dst))
		if err != nil {
			return err
		}
		for more := true; more; {
			if err := ctx.Err(); err != nil {
				b.Finish()
				return err
			}
			if more, err = b.Step(backupPages); err != nil {
				b.Finish()
				return err
			}
			if pages := b.PageCount(); progress != nil && pages > 0 {
				copied := pages - b.Remaining()
				progress(int64(float64(events)*float64(copied)/float64(pages)), events)
			}
		}
		return b.Finish()
	})
	if err != nil {
		return fmt.Errorf("backup %s to %s: %w", path, dst, err)
	}
	return nil
}
