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
	"strconv"
	"sync"

	"modernc.org/sqlite"

	"liminald/conversation"
)

// Export writes the database at path to w as JSON lines: every event as
// an event object (SPEC §3), in pos order, and what retention keeps beside
// them (SPEC §8): before the events, a header line for each conversation
// that compacted messages or has a horizon (see appendHeader), and after
// them a line for each tombstone (see appendTombstone), in (conversation,
// seq) order. It reads one consistent snapshot and works beside a running
// daemon. Returns the number of events written.
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
	bw := bufio.NewWriterSize(w, 1<<16)
	_, err = exportLines(ctx, tx, bw, `SELECT name, next_seq, compacted, forgotten_before FROM conversations
		WHERE compacted > 0 OR forgotten_before IS NOT NULL ORDER BY name`,
		func(dst []byte, rows *sql.Rows) ([]byte, error) {
			var name string
			var h convHeader
			if err := rows.Scan(&name, &h.Next, &h.Compacted, scanHorizon{&h.Horizon}); err != nil {
				return dst, err
			}
			return appendHeader(dst, name, h), nil
		}, nil)
	if err != nil {
		return 0, fmt.Errorf("export %s: %w", path, err)
	}
	n, err := exportLines(ctx, tx, bw, `SELECT `+eventColumns+`, c.name FROM events e JOIN conversations c ON c.id = e.conversation_id ORDER BY e.pos`,
		func(dst []byte, rows *sql.Rows) ([]byte, error) {
			var name string
			e, err := scanEvent(rows, "", &name)
			if err != nil {
				return dst, err
			}
			e.Conversation = name
			return append(e.AppendJSON(dst), '\n'), nil
		},
		func(n int64) {
			if progress != nil && n%4096 == 0 {
				progress(n, total)
			}
		})
	if err != nil {
		return n, fmt.Errorf("export %s: %w", path, err)
	}
	if progress != nil {
		progress(n, total)
	}
	// The join exposes only the conversation's name: messageColumns name
	// columns of messages that conversations has too.
	_, err = exportLines(ctx, tx, bw, `SELECT c.name, m.message_id, `+messageColumns+` FROM messages m
		JOIN (SELECT id, name FROM conversations) c ON c.id = m.conversation_id WHERE m.compacted = 1 ORDER BY c.name, m.last_seq`,
		func(dst []byte, rows *sql.Rows) ([]byte, error) {
			var name, id string
			m, err := scanMessageColumns(rows, &name, &id)
			if err != nil {
				return dst, err
			}
			m.ID = id
			return appendTombstone(dst, name, m.Tombstone()), nil
		}, nil)
	if err != nil {
		return n, fmt.Errorf("export %s: %w", path, err)
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("export %s: write: %w", path, err)
	}
	return n, nil
}

// exportLines writes to w the line that appendLine makes of each row of
// query, telling written (which may be nil) how many it wrote so far.
// Returns how many it wrote.
func exportLines(ctx context.Context, tx *sql.Tx, w *bufio.Writer, query string,
	appendLine func(dst []byte, rows *sql.Rows) ([]byte, error), written func(n int64)) (int64, error) {
	rows, err := tx.QueryContext(ctx, query)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	var n int64
	var line []byte
	for rows.Next() {
		if line, err = appendLine(line[:0], rows); err != nil {
			return n, err
		}
		if _, err := w.Write(line); err != nil {
			return n, fmt.Errorf("write: %w", err)
		}
		n++
		if written != nil {
			written(n)
		}
	}
	return n, rows.Err()
}

// appendHeader appends the header line of conversation name to dst:
//
//	{"conversation":"c","next_seq":N,"compacted":K,"forgotten_before":X}
//
// forgotten_before null when it has no horizon.
func appendHeader(dst []byte, name string, h convHeader) []byte {
	dst = conversation.AppendJSONString(append(dst, `{"conversation":`...), name)
	dst = appendInt(dst, `,"next_seq":`, h.Next)
	dst = appendInt(dst, `,"compacted":`, h.Compacted)
	if !h.Horizon.Set {
		return append(dst, `,"forgotten_before":null}`+"\n"...)
	}
	return append(appendInt(dst, `,"forgotten_before":`, h.Horizon.Before), "}\n"...)
}

// appendTombstone appends the line of tombstone t of conversation name to
// dst:
//
//	{"conversation":"c","tombstone":{"message_id":"m","finished_at":T,"seq":S,"attempts":A,"fingerprint":"fp"}}
//
// without the fingerprint when it has none.
func appendTombstone(dst []byte, name string, t conversation.Tombstone) []byte {
	dst = conversation.AppendJSONString(append(dst, `{"conversation":`...), name)
	dst = conversation.AppendJSONString(append(dst, `,"tombstone":{"message_id":`...), t.MessageID)
	dst = appendInt(dst, `,"finished_at":`, t.FinishedAt)
	dst = appendInt(dst, `,"seq":`, t.Seq)
	dst = appendInt(dst, `,"attempts":`, t.Attempts)
	if t.Fingerprint != "" {
		dst = conversation.AppendJSONString(append(dst, `,"fingerprint":`...), t.Fingerprint)
	}
	return append(dst, "}}\n"...)
}

// appendInt appends key and v to dst.
func appendInt(dst []byte, key string, v int64) []byte {
	return strconv.AppendInt(append(dst, key...), v, 10)
}

// ImportError is a line that Import refused.
type ImportError struct {
	Line int // 1-based line of the input
	Err  error
}

func (e *ImportError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }
func (e *ImportError) Unwrap() error { return e.Err }

// importBatch is how many lines Import hands the writer at once.
const importBatch = 1024

// Import appends the lines read from r, as Export writes them, to the
// store. Each event must be the next of its conversation and one the write
// rules would append; in a conversation whose header says it compacted
// messages, it may skip their seqs. An event identical to the one already
// stored at its seq is skipped, and so is a tombstone identical to the one
// stored, so an interrupted import can be run again. Events keep their
// conversation, seq, ts and content; pos is given anew, in the order of
// the input. A header gives its conversation the messages it compacted
// and its horizon at once, and its next seq once the whole input is read,
// so that the seqs of compacted messages at the end of the conversation
// are never reused. A tombstone needs its conversation's header before it,
// an unknown message, and no event at its seq. Returns the number of
// events appended, and an *ImportError naming the first line refused; the
// lines before it stay.
func (s *Store) Import(ctx context.Context, r io.Reader, progress Progress) (int64, error) {
	im := &importer{s: s, dec: json.NewDecoder(bufio.NewReaderSize(r, 1<<16)), next: make(map[string]*importedNext)}
	im.answered = func(conversation.Outcome, error) { im.wg.Done() }
	for {
		req, err := im.read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// What came before the line refused stays, as when the
			// writer refuses it.
			if serr := im.send(ctx); serr != nil {
				return im.appended, serr
			}
			return im.appended, &ImportError{Line: im.line, Err: err}
		}
		if err := im.add(ctx, req, im.line); err != nil {
			return im.appended, err
		}
		if len(im.reqs) == 0 && progress != nil {
			progress(int64(im.line), 0)
		}
	}
	if err := im.send(ctx); err != nil {
		return im.appended, err
	}
	// The next seqs last: the events before them may skip seqs, but not
	// go back.
	for _, name := range im.order {
		n := im.next[name]
		req := &request{cmd: conversation.Command{Conversation: name}, maint: &maintenance{kind: maintHeader, header: convHeader{Next: n.seq}}}
		if err := im.add(ctx, req, n.line); err != nil {
			return im.appended, err
		}
	}
	if err := im.send(ctx); err != nil {
		return im.appended, err
	}
	if progress != nil {
		progress(int64(im.line), 0)
	}
	return im.appended, nil
}

// importer is the state of one Import.
type importer struct {
	s    *Store
	dec  *json.Decoder
	line int // of the latest line read
	// next holds, by conversation, the next seq its header gave and the
	// line of that header; order, the conversations in the order of their
	// headers.
	next     map[string]*importedNext
	order    []string
	appended int64
	// The batch being built: its requests and their lines. Each request
	// is answered in place (its out and err); send waits for all of them.
	reqs     []*request
	lines    []int
	wg       sync.WaitGroup
	answered func(conversation.Outcome, error)
}

type importedNext struct {
	seq  int64
	line int
}

// add adds req, read at line, to the batch, and sends the batch once full.
func (im *importer) add(ctx context.Context, req *request, line int) error {
	req.then = im.answered
	im.reqs, im.lines = append(im.reqs, req), append(im.lines, line)
	if len(im.reqs) < importBatch {
		return nil
	}
	return im.send(ctx)
}

// send hands the batch to the writer and waits for its answers. Returns an
// *ImportError for the first request refused.
func (im *importer) send(ctx context.Context) error {
	reqs, lines := im.reqs, im.lines
	im.reqs, im.lines = nil, nil
	if len(reqs) == 0 {
		return nil
	}
	im.wg.Add(len(reqs))
	im.s.enqueue(ctx, reqs)
	im.wg.Wait()
	for i, r := range reqs {
		if r.err == nil && r.maint == nil && r.out.Seq != r.cmd.ExpectedSeq {
			r.err = fmt.Errorf("the write rules do not append this event (duplicate of seq %d)", r.out.Seq)
		}
		if r.err != nil {
			return &ImportError{Line: lines[i], Err: r.err}
		}
		if r.maint == nil && r.out.Append {
			im.appended++
		}
	}
	return nil
}

// lineKind is what Import reads a line as before it knows its kind: an
// event has a type, a header a next_seq, a tombstone line a tombstone.
type lineKind struct {
	Type      json.RawMessage `json:"type"`
	NextSeq   json.RawMessage `json:"next_seq"`
	Tombstone json.RawMessage `json:"tombstone"`
}

// read reads the next line and returns the request that imports it.
// Returns io.EOF at the end of the input.
func (im *importer) read() (*request, error) {
	var raw json.RawMessage
	err := im.dec.Decode(&raw)
	if errors.Is(err, io.EOF) {
		return nil, err
	}
	im.line++
	var kind lineKind
	if err == nil {
		err = json.Unmarshal(raw, &kind)
	}
	if err != nil {
		return nil, fmt.Errorf("not an event, header or tombstone line: %w", err)
	}
	switch {
	case kind.Tombstone != nil && (kind.Type != nil || kind.NextSeq != nil), kind.Type != nil && kind.NextSeq != nil:
		return nil, errors.New("a line is an event (type), a conversation header (next_seq) or a tombstone (tombstone), not several")
	case kind.NextSeq != nil:
		return im.header(raw)
	case kind.Tombstone != nil:
		return im.tombstone(raw)
	}
	var e conversation.Event
	if err := e.UnmarshalJSON(raw); err != nil {
		var fe *conversation.FieldError
		if errors.As(err, &fe) {
			return nil, err
		}
		return nil, fmt.Errorf("not an event object: %w", err)
	}
	return &request{cmd: conversation.CommandOf(&e), imported: true, ts: e.TS}, nil
}

// header reads the header line raw: its conversation compacted messages
// or has a horizon. It gives them at once, and its next seq is kept for
// the end of the input.
func (im *importer) header(raw json.RawMessage) (*request, error) {
	var h struct {
		Conversation    *string `json:"conversation"`
		NextSeq         *int64  `json:"next_seq"`
		Compacted       *int64  `json:"compacted"`
		ForgottenBefore *int64  `json:"forgotten_before"`
	}
	if err := json.Unmarshal(raw, &h); err != nil {
		return nil, fmt.Errorf("not a conversation header: %w", err)
	}
	if err := required(field{"conversation", h.Conversation != nil}, field{"next_seq", h.NextSeq != nil},
		field{"compacted", h.Compacted != nil}); err != nil {
		return nil, err
	}
	header := convHeader{Compacted: *h.Compacted}
	if h.ForgottenBefore != nil {
		header.Horizon = conversation.Horizon{Before: *h.ForgottenBefore, Set: true}
	}
	if err := errors.Join(conversation.ValidName("conversation", *h.Conversation), notNegative("next_seq", *h.NextSeq),
		notNegative("compacted", header.Compacted), notNegative("forgotten_before", header.Horizon.Before)); err != nil {
		return nil, err
	}
	name := *h.Conversation
	if n := im.next[name]; n != nil {
		n.seq, n.line = max(n.seq, *h.NextSeq), im.line
	} else {
		im.next[name] = &importedNext{seq: *h.NextSeq, line: im.line}
		im.order = append(im.order, name)
	}
	return &request{cmd: conversation.Command{Conversation: name}, maint: &maintenance{kind: maintHeader, header: header}}, nil
}

// tombstone reads the tombstone line raw, of a conversation whose header
// came before it.
func (im *importer) tombstone(raw json.RawMessage) (*request, error) {
	var l struct {
		Conversation *string `json:"conversation"`
		Tombstone    struct {
			MessageID   *string `json:"message_id"`
			FinishedAt  *int64  `json:"finished_at"`
			Seq         *int64  `json:"seq"`
			Attempts    *int64  `json:"attempts"`
			Fingerprint string  `json:"fingerprint"`
		} `json:"tombstone"`
	}
	if err := json.Unmarshal(raw, &l); err != nil {
		return nil, fmt.Errorf("not a tombstone: %w", err)
	}
	t := &l.Tombstone
	if err := required(field{"conversation", l.Conversation != nil}, field{"tombstone.message_id", t.MessageID != nil},
		field{"tombstone.finished_at", t.FinishedAt != nil}, field{"tombstone.seq", t.Seq != nil},
		field{"tombstone.attempts", t.Attempts != nil}); err != nil {
		return nil, err
	}
	tomb := conversation.Tombstone{MessageID: *t.MessageID, FinishedAt: *t.FinishedAt, Seq: *t.Seq, Attempts: *t.Attempts,
		Fingerprint: t.Fingerprint}
	var fp error
	if tomb.Fingerprint != "" {
		fp = conversation.ValidFingerprint(tomb.Fingerprint)
	}
	if err := errors.Join(conversation.ValidName("conversation", *l.Conversation), conversation.ValidName("tombstone.message_id", tomb.MessageID),
		notNegative("tombstone.finished_at", tomb.FinishedAt), notNegative("tombstone.seq", tomb.Seq),
		notNegative("tombstone.attempts", tomb.Attempts), fp); err != nil {
		return nil, err
	}
	if im.next[*l.Conversation] == nil {
		return nil, fmt.Errorf("a tombstone of conversation %q, which no header before it says compacted messages", *l.Conversation)
	}
	return &request{cmd: conversation.Command{Conversation: *l.Conversation, MessageID: tomb.MessageID},
		maint: &maintenance{kind: maintRestore, tomb: tomb}}, nil
}

// field is a field of a line, and whether the line has it.
type field struct {
	name    string
	present bool
}

// required refuses the first of fields that the line does not have.
func required(fields ...field) error {
	for _, f := range fields {
		if !f.present {
			return &conversation.FieldError{Field: f.name, Problem: "is required"}
		}
	}
	return nil
}

// notNegative refuses a negative v of field.
func notNegative(field string, v int64) error {
	if v < 0 {
		return &conversation.FieldError{Field: field, Problem: "must not be negative"}
	}
	return nil
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
