package sqlitestore

import (
	"context"
	"database/sql"
	"errors"

	"liminald/conversation"
)

// The columns of an event row, in the order scanEvents reads them.
const eventColumns = `seq, pos, ts, type, message_id, received_at, step_index, output, error, fingerprint, worker, lease_ms, token, reason`

const selMessageSQL = `SELECT ` + messageColumns + ` FROM messages WHERE conversation_id = ? AND message_id = ?`

// writeStmts are the writer connection's prepared statements: the reads of
// a batch, and the bulk writes (see bulk).
type writeStmts struct {
	selConvs, selMsgs, selStep, selEventAt, updTotals *sql.Stmt
	// compaction's (see maintain)
	delEvents, delSteps, delMessage *sql.Stmt

	events, steps, messages, conversations *bulk
}

const convColumns = `id, name, next_seq, received, in_progress, errored, finished, compacted, forgotten_before`

const messageColumns = `status, received_at, received_seq, started_seq, last_step, error, last_type, last_seq,
	last_ts, fingerprint, worker, lease_until, attempts, compacted`

func prepareWrites(ctx context.Context, conn *sql.Conn) (*writeStmts, error) {
	st := &writeStmts{events: newEventsBulk(), steps: newStepsBulk(), messages: newMessagesBulk(), conversations: newConversationsBulk()}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&st.selConvs, `SELECT ` + convColumns + ` FROM conversations WHERE name IN (SELECT value FROM json_each(?))`},
		{&st.selMsgs, `SELECT m.conversation_id, m.message_id, ` + messageColumns + `
			FROM json_each(?) j CROSS JOIN messages m ON m.conversation_id = j.value->>0 AND m.message_id = j.value->>1`},
		{&st.selStep, `SELECT s.seq, e.output FROM steps s JOIN events e ON e.conversation_id = s.conversation_id AND e.seq = s.seq
			WHERE s.conversation_id = ? AND s.message_id = ? AND s.step_index = ?`},
		{&st.selEventAt, `SELECT ` + eventColumns + ` FROM events WHERE conversation_id = ? AND seq = ?`},
		{&st.updTotals, `UPDATE totals SET conversations = ?, messages = ?, events = ?, compacted = ?, tombstones = ?, dropped = ?,
			forgotten_before = ? WHERE id = 1`},
		// A message's events lie between its message_received and its
		// latest event: the (conversation, seq) index bounds the scan.
		{&st.delEvents, `DELETE FROM events WHERE conversation_id = ? AND seq BETWEEN ? AND ? AND message_id = ?`},
		{&st.delSteps, `DELETE FROM steps WHERE conversation_id = ? AND message_id = ?`},
		{&st.delMessage, `DELETE FROM messages WHERE conversation_id = ? AND message_id = ?`},
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
	for _, s := range []*sql.Stmt{st.selConvs, st.selMsgs, st.selStep, st.selEventAt, st.updTotals, st.delEvents, st.delSteps, st.delMessage} {
		if s != nil {
			s.Close()
		}
	}
	for _, b := range []*bulk{st.events, st.steps, st.messages, st.conversations} {
		b.close()
	}
}

// scanMessage reads a row of selMessageSQL for message id. Returns nil if
// there is no such message.
func scanMessage(row *sql.Row, id string) (*conversation.Message, error) {
	m, err := scanMessageColumns(row)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("read message", err)
	}
	m.ID = id
	return m, nil
}

// scanMessageRow reads a row of the conversation id, the message id and
// messageColumns.
func scanMessageRow(row scanner, conv *int64, id *string) (*conversation.Message, error) {
	m, err := scanMessageColumns(row, conv, id)
	if err != nil {
		return nil, err
	}
	m.ID = *id
	return m, nil
}

// scanMessageColumns reads messageColumns, after the columns read into
// first.
func scanMessageColumns(row scanner, first ...any) (*conversation.Message, error) {
	m := &conversation.Message{}
	var status, lastType, compacted int64
	var lastStep sql.NullInt64
	var errText, fingerprint, worker sql.NullString
	dest := append(first, &status, &m.ReceivedAt, &m.ReceivedSeq, &m.StartedSeq, &lastStep, &errText, &lastType, &m.LastSeq,
		&m.LastTS, &fingerprint, &worker, &m.LeaseUntil, &m.Attempts, &compacted)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	m.Status, m.LastType, m.Error = conversation.Status(status), conversation.Type(lastType), errText.String
	m.Fingerprint, m.Worker, m.Compacted = fingerprint.String, worker.String, compacted != 0
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
	var receivedAt, stepIndex, leaseMS, token sql.NullInt64
	var errText, fingerprint, worker, reason sql.NullString
	dest := append([]any{&e.Seq, &e.Pos, &e.TS, &typ, &e.MessageID, &receivedAt, &stepIndex, &e.Output, &errText,
		&fingerprint, &worker, &leaseMS, &token, &reason}, more...)
	if err := row.Scan(dest...); err != nil {
		return e, err
	}
	e.Type = conversation.Type(typ)
	e.ReceivedAt, e.StepIndex, e.Error = receivedAt.Int64, uint32(stepIndex.Int64), errText.String
	e.Fingerprint, e.Worker, e.LeaseMS, e.Token, e.Reason = fingerprint.String, worker.String, leaseMS.Int64, token.Int64, reason.String
	if e.Type == conversation.StepCompleted && e.Output == nil {
		e.Output = []byte{}
	}
	return e, nil
}
