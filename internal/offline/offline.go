// Package offline is what the offline tools (check, export, import) do the
// same on every store: the export's line format (docs/PROTOCOL.md, Export)
// written and read, the import's batching and its refusals by line, and
// the check's replay of a conversation's remaining events and tombstones,
// compared with the state a store keeps. A store reads and writes its own
// tables; the rules are package conversation's.
package offline

import (
	"bufio"
	"fmt"
	"io"
	"strconv"

	"liminald/conversation"
)

// Progress is told how far a long offline operation got: done of total
// units (events). It may be nil.
type Progress func(done, total int64)

// Report is what a check found.
type Report struct {
	Conversations int64
	Messages      int64 // tombstones included
	Events        int64
	Tombstones    int64
	Problems      []string // empty when the database is sound
}

// maxProblems bounds the problems a Report lists.
const maxProblems = 100

// Problem adds a problem to r, unless it lists maxProblems already.
func (r *Report) Problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Header is what an export says of a conversation that compacted messages
// or has a horizon: its next seq, the messages it compacted and its
// horizon.
type Header struct {
	Next      int64
	Compacted int64
	Horizon   conversation.Horizon
}

// AppendHeader appends the header line of conversation name to dst:
//
//	{"conversation":"c","next_seq":N,"compacted":K,"forgotten_before":X}
//
// forgotten_before null when it has no horizon.
func AppendHeader(dst []byte, name string, h Header) []byte {
	dst = conversation.AppendJSONString(append(dst, `{"conversation":`...), name)
	dst = appendInt(dst, `,"next_seq":`, h.Next)
	dst = appendInt(dst, `,"compacted":`, h.Compacted)
	if !h.Horizon.Set {
		return append(dst, `,"forgotten_before":null}`+"\n"...)
	}
	return append(appendInt(dst, `,"forgotten_before":`, h.Horizon.Before), "}\n"...)
}

// AppendEvent appends the line of event e to dst: its event object (SPEC
// §3).
func AppendEvent(dst []byte, e *conversation.Event) []byte {
	return append(e.AppendJSON(dst), '\n')
}

// AppendTombstone appends the line of tombstone t of conversation name to
// dst:
//
//	{"conversation":"c","tombstone":{"message_id":"m","finished_at":T,"seq":S,"attempts":A,"fingerprint":"fp"}}
//
// without the fingerprint when it has none.
func AppendTombstone(dst []byte, name string, t conversation.Tombstone) []byte {
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

// Writer writes the lines of an export, buffered: Flush at the end.
type Writer struct {
	bw   *bufio.Writer
	line []byte
}

// NewWriter returns a Writer of lines to w.
func NewWriter(w io.Writer) *Writer { return &Writer{bw: bufio.NewWriterSize(w, 1<<16)} }

// Header writes the header line of conversation name.
func (w *Writer) Header(name string, h Header) error {
	w.line = AppendHeader(w.line[:0], name, h)
	return w.write()
}

// Event writes the line of event e.
func (w *Writer) Event(e *conversation.Event) error {
	w.line = AppendEvent(w.line[:0], e)
	return w.write()
}

// Tombstone writes the line of tombstone t of conversation name.
func (w *Writer) Tombstone(name string, t conversation.Tombstone) error {
	w.line = AppendTombstone(w.line[:0], name, t)
	return w.write()
}

func (w *Writer) write() error {
	if _, err := w.bw.Write(w.line); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// Flush writes what is buffered.
func (w *Writer) Flush() error {
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

// Rows are a query's rows, of database/sql or of pgx.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// Each calls f for each row of rows, until f fails. The caller closes
// rows.
func Each(rows Rows, f func() error) error {
	for rows.Next() {
		if err := f(); err != nil {
			return err
		}
	}
	return rows.Err()
}

// Snapshot is how the offline tools read one snapshot of a store.
type Snapshot struct {
	// Query runs query, with args, in the snapshot, and returns its rows
	// and what closes them. The queries are written for both stores: ?
	// is not used, and a store with $1 placeholders gets them.
	Query func(query string, args ...any) (Rows, func(), error)
	// Horizon is what a forgotten_before column scans into.
	Horizon func(h *conversation.Horizon) any
}

// each runs query and calls f for each of its rows.
func (sn Snapshot) each(query string, f func(rows Rows) error) error {
	rows, done, err := sn.Query(query)
	if err != nil {
		return err
	}
	defer done()
	return Each(rows, func() error { return f(rows) })
}

// count reads the counts of the one row of query.
func (sn Snapshot) count(query string, dest ...*int64) error {
	return sn.each(query, func(rows Rows) error {
		ptrs := make([]any, len(dest))
		for i, d := range dest {
			ptrs[i] = d
		}
		return rows.Scan(ptrs...)
	})
}

// Source is how an export reads one snapshot of a store: its queries in
// the store's SQL, and the store's scanners of their rows.
type Source struct {
	Snapshot
	// ScanEvent scans a row of EventsSQL: an event, then its
	// conversation's name into more.
	ScanEvent func(row Rows, more ...any) (conversation.Event, error)
	// ScanMessage scans a row of TombstonesSQL: the conversation's name
	// and the message id into first, then the message.
	ScanMessage func(row Rows, first ...any) (*conversation.Message, error)
	// EventsSQL reads every event, then its conversation's name, in pos
	// order; TombstonesSQL the conversation's name, the message id and
	// the message of every tombstone, in (conversation, seq) order.
	EventsSQL, TombstonesSQL string
}

// HeadersSQL reads the header of each conversation that compacted messages
// or has a horizon, by name: the same query in every store.
const HeadersSQL = `SELECT name, next_seq, compacted, forgotten_before FROM conversations
	WHERE compacted > 0 OR forgotten_before IS NOT NULL ORDER BY name`

// Export writes the snapshot src reads to w as JSON lines: every event as
// an event object (SPEC §3), in pos order, and what retention keeps beside
// them (SPEC §8): before the events, a header line for each conversation
// that compacted messages or has a horizon (see AppendHeader), and after
// them a line for each tombstone (see AppendTombstone), in (conversation,
// seq) order. Tells progress how many events it wrote. Returns the number
// of events written.
func Export(w io.Writer, src Source, progress Progress) (int64, error) {
	var total int64
	if err := src.count(`SELECT count(*) FROM events`, &total); err != nil {
		return 0, err
	}
	ow := NewWriter(w)
	err := src.each(HeadersSQL, func(rows Rows) error {
		var name string
		var h Header
		if err := rows.Scan(&name, &h.Next, &h.Compacted, src.Horizon(&h.Horizon)); err != nil {
			return err
		}
		return ow.Header(name, h)
	})
	if err != nil {
		return 0, err
	}
	var n int64
	err = src.each(src.EventsSQL, func(rows Rows) error {
		var name string
		e, err := src.ScanEvent(rows, &name)
		if err != nil {
			return err
		}
		e.Conversation = name
		if err := ow.Event(&e); err != nil {
			return err
		}
		n++
		if progress != nil && n%4096 == 0 {
			progress(n, total)
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	if progress != nil {
		progress(n, total)
	}
	err = src.each(src.TombstonesSQL, func(rows Rows) error {
		var name, id string
		m, err := src.ScanMessage(rows, &name, &id)
		if err != nil {
			return err
		}
		m.ID = id
		return ow.Tombstone(name, m.Tombstone())
	})
	if err != nil {
		return n, err
	}
	return n, ow.Flush()
}
