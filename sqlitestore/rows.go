package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"strconv"

	"liminald/conversation"
)

// rowBuilder builds the JSON array of rows a bulk statement reads with
// json_each: each row a JSON array of its columns in the statement's
// order, blobs as hex (the statement unhexes them), absent values as null.
type rowBuilder struct {
	buf []byte
	n   int // rows in buf
}

// maxBulkBytes bounds the JSON of one bulk statement; flushIfFull runs the
// statement early past it, so that a batch of large outputs does not build
// one huge string.
const maxBulkBytes = 4 << 20

func (b *rowBuilder) reset() {
	b.buf = append(b.buf[:0], '[')
	b.n = 0
}

func (b *rowBuilder) json() string { return string(append(b.buf, ']')) }

// flush runs stmt with the rows built, if any, and starts over.
func (b *rowBuilder) flush(ctx context.Context, stmt *sql.Stmt) error {
	if b.n == 0 {
		return nil
	}
	_, err := stmt.ExecContext(ctx, b.json())
	b.reset()
	return err
}

// flushIfFull runs stmt when the rows built pass maxBulkBytes.
func (b *rowBuilder) flushIfFull(ctx context.Context, stmt *sql.Stmt) error {
	if len(b.buf) < maxBulkBytes {
		return nil
	}
	return b.flush(ctx, stmt)
}

func (b *rowBuilder) row() {
	if b.n > 0 {
		b.buf = append(b.buf, ',')
	}
	b.n++
	b.buf = append(b.buf, '[')
}

func (b *rowBuilder) end() { b.buf = append(b.buf, ']') }

func (b *rowBuilder) int(v int64) { b.buf = strconv.AppendInt(append(b.buf, ','), v, 10) }

func (b *rowBuilder) str(s string) {
	b.buf = conversation.AppendJSONString(append(b.buf, ','), s)
}

func (b *rowBuilder) null() { b.buf = append(b.buf, ",null"...) }

// first starts a row with the integer v (no comma before it).
func (b *rowBuilder) first(v int64) {
	b.row()
	b.buf = strconv.AppendInt(b.buf, v, 10)
}

// string adds a row that is a single string (not an array).
func (b *rowBuilder) string(s string) {
	if b.n > 0 {
		b.buf = append(b.buf, ',')
	}
	b.n++
	b.buf = conversation.AppendJSONString(b.buf, s)
}

// event adds e, of conversation conv, as a row of insEvents.
func (b *rowBuilder) event(conv int64, e *conversation.Event) {
	b.first(e.Pos)
	b.int(conv)
	b.int(e.Seq)
	b.int(e.TS)
	b.int(int64(e.Type))
	b.str(e.MessageID)
	switch e.Type {
	case conversation.MessageReceived:
		b.int(e.ReceivedAt)
		b.buf = append(b.buf, ",null,null,null"...)
	case conversation.StepCompleted:
		b.null()
		b.int(int64(e.StepIndex))
		b.buf = append(b.buf, `,"`...)
		b.buf = hex.AppendEncode(b.buf, e.Output)
		b.buf = append(b.buf, `",null`...)
	case conversation.ErrorOccurred:
		b.buf = append(b.buf, ",null,null,null"...)
		b.str(e.Error)
	default:
		b.buf = append(b.buf, ",null,null,null,null"...)
	}
	b.end()
}

// step adds the step e completed as a row of insSteps.
func (b *rowBuilder) step(conv int64, e *conversation.Event) {
	b.first(conv)
	b.str(e.MessageID)
	b.int(int64(e.StepIndex))
	b.int(e.Seq)
	b.end()
}

// message adds m as a row of upsertMsgs; the leading conversation id and
// message id also make it a key of selMsgs.
func (b *rowBuilder) message(conv int64, m *conversation.Message) {
	b.first(conv)
	b.str(m.ID)
	b.int(int64(m.Status))
	b.int(m.ReceivedAt)
	b.int(m.ReceivedSeq)
	b.int(m.StartedSeq)
	if m.LastStep == conversation.NoStep {
		b.null()
	} else {
		b.int(m.LastStep)
	}
	if m.Error == "" {
		b.null()
	} else {
		b.str(m.Error)
	}
	b.int(int64(m.LastType))
	b.int(m.LastSeq)
	b.end()
}

// conversation adds c as a row of upsertConvs.
func (b *rowBuilder) conversation(c *convRow) {
	b.first(c.id)
	b.str(c.name)
	b.int(c.next)
	b.int(c.counts.Received)
	b.int(c.counts.InProgress)
	b.int(c.counts.Errored)
	b.int(c.counts.Finished)
	b.end()
}
