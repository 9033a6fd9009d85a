package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"liminald/conversation"
)

// The reads run on the pool, each in a statement of its own: they see
// what every daemon committed before they began.

const selMessageSQL = `SELECT ` + messageColumns + ` FROM messages
	WHERE conversation_id = (SELECT id FROM conversations WHERE name = $1) AND message_id = $2`

// Message returns the state of message id of conversation conv, or nil if
// it was never received.
func (s *Store) Message(ctx context.Context, conv, id string) (*conversation.Message, error) {
	m, err := scanMessage(s.pool.QueryRow(ctx, selMessageSQL, conv, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("read message", err)
	}
	m.ID = id
	return m, nil
}

// Steps returns the completed steps of message id of conversation conv,
// by index.
func (s *Store) Steps(ctx context.Context, conv, id string) ([]conversation.StepRecord, error) {
	rows, err := s.pool.Query(ctx, `SELECT s.step_index, s.seq, e.output FROM conversations c
		JOIN steps s ON s.conversation_id = c.id
		JOIN events e ON e.conversation_id = s.conversation_id AND e.seq = s.seq
		WHERE c.name = $1 AND s.message_id = $2 ORDER BY s.step_index`, conv, id)
	if err != nil {
		return nil, unavailable("read steps", err)
	}
	defer rows.Close()
	var steps []conversation.StepRecord
	for rows.Next() {
		var r conversation.StepRecord
		var index int64
		if err := rows.Scan(&index, &r.Seq, &r.Output); err != nil {
			return nil, unavailable("read steps", err)
		}
		r.Index = uint32(index)
		if r.Output == nil {
			r.Output = []byte{}
		}
		steps = append(steps, r)
	}
	return steps, unavailable("read steps", rows.Err())
}

// Decide returns the redelivery decision for delivery d of message id of
// conversation conv, without appending anything, judged at the database's
// clock, read in the same round trip as the message. Returns a
// *conversation.FingerprintMismatchError when the message was received
// with another fingerprint.
func (s *Store) Decide(ctx context.Context, conv, id string, d conversation.Delivery) (conversation.Decision, error) {
	q := &pgx.Batch{}
	q.Queue(`SELECT `+clockSQL[len("SELECT "):]+`, (SELECT forgotten_before FROM conversations WHERE name = $1)`, conv)
	q.Queue(selMessageSQL, conv, id)
	br := s.pool.SendBatch(ctx, q)
	defer br.Close()
	var now int64
	var h conversation.Horizon
	if err := br.QueryRow().Scan(&now, scanHorizon{&h}); err != nil {
		return conversation.Decision{}, unavailable("read the clock", err)
	}
	m, err := scanMessage(br.QueryRow())
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		m = nil
	case err != nil:
		return conversation.Decision{}, unavailable("read message", err)
	default:
		m.ID = id
	}
	return conversation.Deliver(m, d, h, conversation.Moment{Now: now + s.offset(), MaxAttempts: s.maxAttempts.Load()})
}

// Horizon returns the forgotten_before of conversation conv (SPEC §8): not
// set when it never dropped a tombstone, or does not exist.
func (s *Store) Horizon(ctx context.Context, conv string) (conversation.Horizon, error) {
	sum, err := s.Conversation(ctx, conv)
	return sum.Horizon, err
}

// Messages returns up to limit messages of conversation conv whose ids
// sort after after, by id, with their state. filter is "" for every
// message, a stored status ("received", "in_progress", "errored",
// "finished"), or "leased" or "quarantined", judged at mo. Returns a
// *conversation.FieldError naming "status" for another filter.
func (s *Store) Messages(ctx context.Context, conv, filter, after string, limit int, mo conversation.Moment) ([]conversation.Message, error) {
	filt, err := conversation.ParseFilter(filter)
	if err != nil {
		return nil, err
	}
	// The query narrows leased and quarantined by their columns; the rules
	// of package conversation (Filter.Keep) have the last word on each row.
	rows, err := s.pool.Query(ctx, fmt.Sprintf(`SELECT message_id, `+messageColumns+` FROM messages
		WHERE conversation_id = (SELECT id FROM conversations WHERE name = $1) AND message_id > $2
		AND CASE $3::bigint WHEN 0 THEN true
			WHEN %d THEN status = 2 AND lease_until > $4::bigint
			WHEN %d THEN $5::bigint > 0 AND status IN (1, 2, 3) AND attempts >= $5 AND NOT (status = 2 AND lease_until > $4)
			ELSE status = $3 END
		ORDER BY message_id LIMIT $6`, conversation.FilterLeased, conversation.FilterQuarantined), conv, after, int64(filt), mo.Now, mo.MaxAttempts, limit)
	if err != nil {
		return nil, unavailable("read messages", err)
	}
	defer rows.Close()
	var out []conversation.Message
	for rows.Next() {
		var id string
		m, err := scanMessage(rows, &id)
		if err != nil {
			return nil, unavailable("read messages", err)
		}
		if filt.Keep(m, mo) {
			out = append(out, *m)
		}
	}
	return out, unavailable("read messages", rows.Err())
}

// MessageEvents returns the latest limit events of message m of
// conversation conv, in seq order.
func (s *Store) MessageEvents(ctx context.Context, conv string, m *conversation.Message, limit int) ([]conversation.Event, error) {
	if m.Compacted {
		return nil, nil // a tombstone has no events left
	}
	// A message's events lie between its message_received and its latest
	// event: the (conversation, seq) index bounds the scan.
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE conversation_id = (SELECT id FROM conversations WHERE name = $1) AND seq BETWEEN $2 AND $3
		AND message_id = $4 ORDER BY seq DESC LIMIT $5`, conv, m.ReceivedSeq, m.LastSeq, m.ID, limit)
	if err != nil {
		return nil, unavailable("read message events", err)
	}
	events, err := scanEvents(rows, conv, nil)
	slices.Reverse(events)
	return events, unavailable("read message events", err)
}

// Conversation returns the summary of conversation name. A conversation
// with no events has next seq 0 and no messages.
func (s *Store) Conversation(ctx context.Context, name string) (conversation.Summary, error) {
	sum := conversation.Summary{Name: name}
	err := s.pool.QueryRow(ctx, `SELECT next_seq, received, in_progress, errored, finished, compacted, forgotten_before
		FROM conversations WHERE name = $1`, name).Scan(&sum.Next,
		&sum.Counts.Received, &sum.Counts.InProgress, &sum.Counts.Errored, &sum.Counts.Finished, &sum.Compacted, scanHorizon{&sum.Horizon})
	if errors.Is(err, pgx.ErrNoRows) {
		err = nil
	}
	return sum, unavailable("read conversation", err)
}

// Conversations returns up to limit conversations whose names sort after
// after, by name (by their bytes). A conversation a batch is creating
// right now is left out until the batch commits.
func (s *Store) Conversations(ctx context.Context, after string, limit int) ([]conversation.Summary, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, next_seq, received, in_progress, errored, finished, compacted, forgotten_before
		FROM conversations WHERE name > $1 ORDER BY name LIMIT $2`, after, limit)
	if err != nil {
		return nil, unavailable("read conversations", err)
	}
	defer rows.Close()
	var out []conversation.Summary
	for rows.Next() {
		var c conversation.Summary
		if err := rows.Scan(&c.Name, &c.Next, &c.Counts.Received, &c.Counts.InProgress, &c.Counts.Errored, &c.Counts.Finished,
			&c.Compacted, scanHorizon{&c.Horizon}); err != nil {
			return nil, unavailable("read conversations", err)
		}
		out = append(out, c)
	}
	return out, unavailable("read conversations", rows.Err())
}

// Events returns up to limit events of conversation conv from seq from on,
// in seq order.
func (s *Store) Events(ctx context.Context, conv string, from int64, limit int) ([]conversation.Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumns+` FROM events
		WHERE conversation_id = (SELECT id FROM conversations WHERE name = $1) AND seq >= $2 ORDER BY seq LIMIT $3`, conv, from, limit)
	if err != nil {
		return nil, unavailable("read events", err)
	}
	events, err := scanEvents(rows, conv, nil)
	return events, unavailable("read events", err)
}

// EventsFrom returns up to limit events of every conversation from position
// pos on, in pos order. What it returns is a prefix of what it will return
// later: no event below the last one it returned commits after it read it
// (see the package's documentation).
func (s *Store) EventsFrom(ctx context.Context, pos int64, limit int) ([]conversation.Event, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+eventColumns+`, c.name FROM events e JOIN conversations c ON c.id = e.conversation_id
		WHERE e.pos >= $1 ORDER BY e.pos LIMIT $2`, pos, limit)
	if err != nil {
		return nil, unavailable("read events", err)
	}
	defer rows.Close()
	var events []conversation.Event
	for rows.Next() {
		var name string
		e, err := scanEvent(rows, "", &name)
		if err != nil {
			return nil, unavailable("read events", err)
		}
		e.Conversation = name
		events = append(events, e)
	}
	return events, unavailable("read events", rows.Err())
}
