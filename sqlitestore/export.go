package sqlitestore

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"modernc.org/sqlite"

	"liminald/conversation"
)

// Export writes every event of the database at path to w as event objects
// (SPEC §3), one JSON line each, in pos order. It reads one consistent
// snapshot and works beside a running daemon. Returns the number of events
// written.
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
	var total int64
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM events").Scan(&total); err != nil {
		return 0, fmt.Errorf("export %s: %w", path, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT `+eventColumns+`, c.name FROM events e JOIN conversations c ON c.id = e.conversation_id ORDER BY e.pos`)
	if err != nil {
		return 0, fmt.Errorf("export %s: %w", path, err)
	}
	defer rows.Close()
	bw := bufio.NewWriterSize(w, 1<<16)
	var n int64
	var line []byte
	for rows.Next() {
		var name string
		e, err := scanEvent(rows, "", &name)
		if err != nil {
			return n, fmt.Errorf("export %s: %w", path, err)
		}
		e.Conversation = name
		line = append(e.AppendJSON(line[:0]), '\n')
		if _, err := bw.Write(line); err != nil {
			return n, fmt.Errorf("export %s: write: %w", path, err)
		}
		n++
		if progress != nil && n%4096 == 0 {
			progress(n, total)
		}
	}
	if err := rows.Err(); err != nil {
		return n, fmt.Errorf("export %s: %w", path, err)
	}
	if progress != nil {
		progress(n, total)
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("export %s: write: %w", path, err)
	}
	return n, nil
}

// ImportError is an event that Import refused.
type ImportError struct {
	Line int // 1-based line of the input
	Err  error
}

func (e *ImportError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *ImportError) Unwrap() error { return e.Err }

// importBatch is how many events Import hands the writer at once.
const importBatch = 1024

// Import appends the event objects read from r (as Export writes them) to
// the store. Each event must be the next of its conversation and one the
// write rules would append; an event identical to the one already stored at
// its seq is skipped, so an interrupted import can be run again. Events
// keep their conversation, seq, ts and content; pos is given anew, in the
// order of the input. Returns the number of events appended, and an
// *ImportError naming the first line refused; the events before it stay.
func (s *Store) Import(ctx context.Context, r io.Reader, progress Progress) (int64, error) {
	dec := json.NewDecoder(bufio.NewReaderSize(r, 1<<16))
	var appended int64
	line := 0
	// Each request is answered in place (its out and err); Import waits
	// for a whole batch of them.
	var wg sync.WaitGroup
	answered := func(conversation.Outcome, error) { wg.Done() }
	for {
		reqs := make([]*request, 0, importBatch)
		lines := make([]int, 0, importBatch)
		for len(reqs) < importBatch {
			var e conversation.Event
			err := dec.Decode(&e)
			if errors.Is(err, io.EOF) {
				break
			}
			line++
			if err != nil {
				var fe *conversation.FieldError
				if errors.As(err, &fe) {
					return appended, &ImportError{Line: line, Err: err}
				}
				return appended, &ImportError{Line: line, Err: fmt.Errorf("not an event object: %w", err)}
			}
			reqs = append(reqs, &request{cmd: conversation.CommandOf(&e), imported: true, ts: e.TS, then: answered})
			lines = append(lines, line)
		}
		if len(reqs) == 0 {
			return appended, nil
		}
		wg.Add(len(reqs))
		s.enqueue(ctx, reqs)
		wg.Wait()
		for i, r := range reqs {
			if r.err == nil && r.out.Seq != r.cmd.ExpectedSeq {
				r.err = fmt.Errorf("the write rules do not append this event (duplicate of seq %d)", r.out.Seq)
			}
			if r.err != nil {
				return appended, &ImportError{Line: lines[i], Err: r.err}
			}
			if r.out.Append {
				appended++
			}
		}
		if progress != nil {
			progress(int64(line), 0)
		}
	}
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
