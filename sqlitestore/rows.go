package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"math/bits"
	"strings"

	"liminald/conversation"
)

// bulk writes rows to one table with multi-row INSERT statements: the rows
// of a batch go in chunks of a power of two rows (at most maxBulkRows), each
// chunk size a statement prepared once, so that a batch costs a few
// statements a table, not one a row.
type bulk struct {
	prefix string // "INSERT INTO t (a, b) VALUES "
	suffix string // what follows the rows, such as an ON CONFLICT clause
	cols   int
	stmts  map[int]*sql.Stmt // by rows
	args   []any             // the rows added, flattened
}

// maxBulkRows is the largest chunk: 64 rows of at most 15 columns stay far
// below SQLite's limit of host parameters.
const maxBulkRows = 64

func newBulk(prefix string, cols int, suffix string) *bulk {
	return &bulk{prefix: prefix, suffix: suffix, cols: cols, stmts: make(map[int]*sql.Stmt)}
}

func (b *bulk) add(vals ...any) { b.args = append(b.args, vals...) }

// exec writes the rows added and forgets them.
func (b *bulk) exec(ctx context.Context, conn *sql.Conn) error {
	args := b.args
	defer func() { clear(b.args); b.args = b.args[:0] }()
	for len(args) > 0 {
		rows := len(args) / b.cols
		chunk := min(1<<(bits.Len(uint(rows))-1), maxBulkRows)
		stmt, err := b.stmt(ctx, conn, chunk)
		if err != nil {
			return err
		}
		if _, err := stmt.ExecContext(ctx, args[:chunk*b.cols]...); err != nil {
			return err
		}
		args = args[chunk*b.cols:]
	}
	return nil
}

func (b *bulk) stmt(ctx context.Context, conn *sql.Conn, rows int) (*sql.Stmt, error) {
	if s, ok := b.stmts[rows]; ok {
		return s, nil
	}
	row := "(" + strings.Repeat("?, ", b.cols-1) + "?)"
	q := b.prefix + strings.Repeat(row+", ", rows-1) + row + b.suffix
	s, err := conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("prepare %d-row insert: %w", rows, err)
	}
	b.stmts[rows] = s
	return s, nil
}

func (b *bulk) close() {
	for _, s := range b.stmts {
		s.Close()
	}
	clear(b.stmts)
}

// The bulk writes of a batch. They are INSERT OR FAIL: a constraint
// failure fails the whole batch, which is rolled back anyway, and a
// multi-row statement that cannot abort needs no statement journal (a copy
// of every page it touches, to undo it alone). The appends of events and
// steps keep none; an upsert's update always may abort, so the messages
// and conversations statements still do.
func newEventsBulk() *bulk {
	return newBulk(`INSERT OR FAIL INTO events (pos, conversation_id, seq, ts, type, message_id, received_at, step_index, output, error,
		fingerprint, worker, lease_ms, token, reason) VALUES `, 15, "")
}

func newStepsBulk() *bulk {
	return newBulk(`INSERT OR FAIL INTO steps (conversation_id, message_id, step_index, seq) VALUES `, 4, "")
}

func newMessagesBulk() *bulk {
	return newBulk(`INSERT OR FAIL INTO messages (conversation_id, message_id, `+messageColumns+`) VALUES `, 16,
		` ON CONFLICT (conversation_id, message_id) DO UPDATE SET status = excluded.status,
		received_at = excluded.received_at, received_seq = excluded.received_seq, started_seq = excluded.started_seq,
		last_step = excluded.last_step, error = excluded.error, last_type = excluded.last_type, last_seq = excluded.last_seq,
		last_ts = excluded.last_ts, fingerprint = excluded.fingerprint, worker = excluded.worker,
		lease_until = excluded.lease_until, attempts = excluded.attempts, compacted = excluded.compacted`)
}

func newConversationsBulk() *bulk {
	return newBulk(`INSERT OR FAIL INTO conversations (`+convColumns+`) VALUES `, 9,
		` ON CONFLICT (id) DO UPDATE SET next_seq = excluded.next_seq, received = excluded.received,
		in_progress = excluded.in_progress, errored = excluded.errored, finished = excluded.finished,
		compacted = excluded.compacted, forgotten_before = excluded.forgotten_before`)
}

// addEvent adds e, of conversation conv, with NULL in the columns that do
// not belong to its type.
func (b *bulk) addEvent(conv int64, e *conversation.Event) {
	var receivedAt, stepIndex, output, errText, leaseMS, token any
	switch e.Type {
	case conversation.MessageReceived:
		receivedAt = e.ReceivedAt
	case conversation.StepCompleted:
		stepIndex = int64(e.StepIndex)
		output = e.Output
		if e.Output == nil {
			output = []byte{}
		}
	case conversation.ErrorOccurred:
		errText = e.Error
	case conversation.LeaseRenewed:
		token = e.Token
	}
	if e.LeaseMS > 0 {
		leaseMS = e.LeaseMS
	}
	b.add(e.Pos, conv, e.Seq, e.TS, int64(e.Type), e.MessageID, receivedAt, stepIndex, output, errText,
		nullText(e.Fingerprint), nullText(e.Worker), leaseMS, token, nullText(e.Reason))
}

// nullText is s, or NULL for "".
func nullText(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func (b *bulk) addMessage(conv int64, m *conversation.Message) {
	var lastStep any
	if m.LastStep != conversation.NoStep {
		lastStep = m.LastStep
	}
	b.add(conv, m.ID, int64(m.Status), m.ReceivedAt, m.ReceivedSeq, m.StartedSeq, lastStep, nullText(m.Error), int64(m.LastType), m.LastSeq,
		m.LastTS, nullText(m.Fingerprint), nullText(m.Worker), m.LeaseUntil, m.Attempts, m.Compacted)
}

func (b *bulk) addConversation(c *convRow) {
	b.add(c.id, c.name, c.next, c.counts.Received, c.counts.InProgress, c.counts.Errored, c.counts.Finished,
		c.compacted, nullHorizon(c.horizon))
}

// nullHorizon is h's forgotten_before, or NULL when h is not set.
func nullHorizon(h conversation.Horizon) any {
	if !h.Set {
		return nil
	}
	return h.Before
}

// scanHorizon reads a forgotten_before column.
type scanHorizon struct{ h *conversation.Horizon }

func (s scanHorizon) Scan(v any) error {
	var n sql.NullInt64
	if err := n.Scan(v); err != nil {
		return err
	}
	*s.h = conversation.Horizon{Before: n.Int64, Set: n.Valid}
	return nil
}

// keys builds the JSON array of keys that the prefetch queries read with
// json_each: names, or [conversation id, message id] pairs.
type keys struct {
	buf []byte
	n   int
}

func (k *keys) reset() { k.buf, k.n = append(k.buf[:0], '['), 0 }

func (k *keys) json() string { return string(append(k.buf, ']')) }

func (k *keys) sep() {
	if k.n > 0 {
		k.buf = append(k.buf, ',')
	}
	k.n++
}

func (k *keys) name(s string) {
	k.sep()
	k.buf = conversation.AppendJSONString(k.buf, s)
}

func (k *keys) message(conv int64, id string) {
	k.sep()
	k.buf = fmt.Appendf(k.buf, "[%d,", conv)
	k.buf = append(conversation.AppendJSONString(k.buf, id), ']')
}
