package sqlitestore

import (
	"context"
	"database/sql"
	"errors"

	"liminald/conversation"
)

// The columns of an event row, in the order scanEvents reads them.
const eventColumns = `seq, pos, ts, type, message_id, received_at, step_index, output, error`

const selMessageSQL = `SELECT status, received_at, received_seq, started_seq, last_step, error, last_type, last_seq
	FROM messages WHERE conversation_id = ? AND message_id = ?`

// writeStmts are the writer connection's prepared statements.
type writeStmts struct {
	selConv, selMsg, selStep, selEventAt                *sql.Stmt
	insEvent, insStep, upsertMsg, upsertConv, updTotals *sql.Stmt
}

func prepareWrites(ctx context.Context, conn *sql.Conn) (*writeStmts, error) {
	st := &writeStmts{}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&st.selConv, `SELECT id, next_seq, received, in_progress, errored, finished FROM conversations WHERE name = ?`},
		{&st.selMsg, selMessageSQL},
		{&st.selStep, `SELECT s.seq, e.output FROM steps s JOIN events e ON e.conversation_id = s.conversation_id AND e.seq = s.seq
			WHERE s.conversation_id = ? AND s.message_id = ? AND s.step_index = ?`},
		{&st.selEventAt, `SELECT ` + eventColumns + ` FROM events WHERE conversation_id = ? AND seq = ?`},
		{&st.insEvent, `INSERT INTO events (pos, conversation_id, seq, ts, type, message_id, received_at, step_index, output, error)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&st.insStep, `INSERT INTO steps (conversation_id, message_id, step_index, seq) VALUES (?, ?, ?, ?)`},
		{&st.upsertMsg, `INSERT OR REPLACE INTO messages (conversation_id, message_id, status, received_at, received_seq,
			started_seq, last_step, error, last_type, last_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`},
		{&st.upsertConv, `INSERT INTO conversations (id, name, next_seq, received, in_progress, errored, finished)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET next_seq = excluded.next_seq,
			received = excluded.received, in_progress = excluded.in_progress, errored = excluded.errored, finished = excluded.finished`},
		{&st.updTotals, `UPDATE totals SET conversations = ?, messages = ?, events = ? WHERE id = 1`},
	} {
		var err error
		if *p.stmt, err = conn.PrepareContext(ctx, p.sql); err != nil {
			st.close()
			return nil, err
		}
	}
	return st, nil
}

func (st *writeStmts) close() {
	for _, s := range []*sql.Stmt{st.selConv, st.selMsg, st.selStep, st.selEventAt, st.insEvent, st.insStep, st.upsertMsg, st.upsertConv, st.updTotals} {
		if s != nil {
			s.Close()
		}
	}
}

// insertEvent inserts e into the log of conversation conv, with NULL in the
// columns that do not belong to its type.
func (st *writeStmts) insertEvent(ctx context.Context, conv int64, e *conversation.Event) error {
	var receivedAt, stepIndex, output, errText any
	switch e.Type {
	case conversation.MessageReceived:
		receivedAt = e.ReceivedAt
	case conversation.StepCompleted:
		stepIndex = int64(e.StepIndex)
		if e.Output == nil {
			output = []byte{}
		} else {
			output = e.Output
		}
	case conversation.ErrorOccurred:
		errText = e.Error
	}
	_, err := st.insEvent.ExecContext(ctx, e.Pos, conv, e.Seq, e.TS, int64(e.Type), e.MessageID, receivedAt, stepIndex, output, errText)
	return err
}

func (st *writeStmts) upsertMessage(ctx context.Context, conv int64, m *conversation.Message) error {
	var lastStep, errText any
	if m.LastStep != conversation.NoStep {
		lastStep = m.LastStep
	}
	if m.Error != "" {
		errText = m.Error
	}
	_, err := st.upsertMsg.ExecContext(ctx, conv, m.ID, int64(m.Status), m.ReceivedAt, m.ReceivedSeq,
		m.StartedSeq, lastStep, errText, int64(m.LastType), m.LastSeq)
	return err
}

// scanMessage reads a row of selMessageSQL for message id. Returns nil if
// there is no such message.
func scanMessage(row *sql.Row, id string) (*conversation.Message, error) {
	m := &conversation.Message{ID: id}
	var status, lastType int64
	var lastStep sql.NullInt64
	var errText sql.NullString
	err := row.Scan(&status, &m.ReceivedAt, &m.ReceivedSeq, &m.StartedSeq, &lastStep, &errText, &lastType, &m.LastSeq)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("read message", err)
	}
	m.Status, m.LastType, m.Error = conversation.Status(status), conversation.Type(lastType), errText.String
	m.LastStep = conversation.NoStep
	if lastStep.Valid {
		m.LastStep = lastStep.Int64
	}
	return m, nil
}

// scanEvents reads event rows (eventColumns) of conversation name, appends
// them to dst and closes rows.
func scanEvents(rows *sql.Rows, name string, dst []conversation.Event) ([]conversation.Event, error) {
	defer rows.Close()
	for rows.Next() {
		e, err := scanEvent(rows, name)
		if err != nil {
			return dst, err
		}
		dst = append(dst, e)
	}
	return dst, rows.Err()
}

type scanner interface{ Scan(dest ...any) error }

// scanEvent reads one event row whose columns are eventColumns, and possibly
// more after them.
func scanEvent(row scanner, name string, more ...any) (conversation.Event, error) {
	e := conversation.Event{Conversation: name}
	var typ int64
	var receivedAt, stepIndex sql.NullInt64
	var errText sql.NullString
	dest := append([]any{&e.Seq, &e.Pos, &e.TS, &typ, &e.MessageID, &receivedAt, &stepIndex, &e.Output, &errText}, more...)
	if err := row.Scan(dest...); err != nil {
		return e, err
	}
	e.Type = conversation.Type(typ)
	e.ReceivedAt, e.StepIndex, e.Error = receivedAt.Int64, uint32(stepIndex.Int64), errText.String
	if e.Type == conversation.StepCompleted && e.Output == nil {
		e.Output = []byte{}
	}
	return e, nil
}
