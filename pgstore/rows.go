package pgstore

import (
	"github.com/jackc/pgx/v5"

	"liminald/conversation"
)

// scanMessage reads a row of the columns read into first, then
// messageColumns.
func scanMessage(row pgx.Row, first ...any) (*conversation.Message, error) {
	m := &conversation.Message{}
	var status, lastType int16
	var lastStep *int64
	var errText, fingerprint []byte
	var worker *string
	dest := append(first, &status, &m.ReceivedAt, &m.ReceivedSeq, &m.StartedSeq, &lastStep, &errText, &lastType, &m.LastSeq,
		&m.LastTS, &fingerprint, &worker, &m.LeaseUntil, &m.Attempts, &m.Compacted)
	if err := row.Scan(dest...); err != nil {
		return nil, err
	}
	m.Status, m.LastType, m.Error, m.Fingerprint = conversation.Status(status), conversation.Type(lastType), string(errText), string(fingerprint)
	if worker != nil {
		m.Worker = *worker
	}
	m.LastStep = conversation.NoStep
	if lastStep != nil {
		m.LastStep = *lastStep
	}
	for _, d := range first { // the message id, when read
		if id, ok := d.(*string); ok {
			m.ID = *id
		}
	}
	return m, nil
}

// scanEvents reads event rows (eventColumns) of conversation name, appends
// them to dst and closes rows.
func scanEvents(rows pgx.Rows, name string, dst []conversation.Event) ([]conversation.Event, error) {
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

// scanEvent reads one event row whose columns are eventColumns, and
// possibly more after them.
func scanEvent(row pgx.Row, name string, more ...any) (conversation.Event, error) {
	e := conversation.Event{Conversation: name}
	var typ int16
	var receivedAt, stepIndex, leaseMS, token *int64
	var errText, fingerprint, reason []byte
	var worker *string
	dest := append([]any{&e.Seq, &e.Pos, &e.TS, &typ, &e.MessageID, &receivedAt, &stepIndex, &e.Output, &errText,
		&fingerprint, &worker, &leaseMS, &token, &reason}, more...)
	if err := row.Scan(dest...); err != nil {
		return e, err
	}
	e.Type = conversation.Type(typ)
	e.ReceivedAt, e.StepIndex, e.LeaseMS, e.Token = deref(receivedAt), uint32(deref(stepIndex)), deref(leaseMS), deref(token)
	e.Error, e.Fingerprint, e.Reason = string(errText), string(fingerprint), string(reason)
	if worker != nil {
		e.Worker = *worker
	}
	if e.Type == conversation.StepCompleted && e.Output == nil {
		e.Output = []byte{}
	}
	return e, nil
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
