package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strconv"

	"liminald/conversation"
)

// readStmts are the readers' prepared statements, on the read pool.
type readStmts struct {
	msg, steps, conv, events, eventsPos, convs, msgs, msgEvents *sql.Stmt
	// compaction's candidates, oldest first, with the seqs they span:
	// ?1 the cutoff, ?2 the limit
	finishedBefore, tombstonesBefore *sql.Stmt
}

func prepareReads(db *sql.DB) (*readStmts, error) {
	st := &readStmts{}
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&st.msg, `SELECT ` + messageColumns + ` FROM messages
			WHERE conversation_id = (SELECT id FROM conversations WHERE name = ?) AND message_id = ?`},
		{&st.steps, `SELECT s.step_index, s.seq, e.output FROM conversations c
			JOIN steps s ON s.conversation_id = c.id
			JOIN events e ON e.conversation_id = s.conversation_id AND e.seq = s.seq
			WHERE c.name = ? AND s.message_id = ? ORDER BY s.step_index`},
		{&st.conv, `SELECT next_seq, received, in_progress, errored, finished, compacted, forgotten_before FROM conversations WHERE name = ?`},
		{&st.events, `SELECT ` + eventColumns + ` FROM events
			WHERE conversation_id = (SELECT id FROM conversations WHERE name = ?) AND seq >= ? ORDER BY seq LIMIT ?`},
		{&st.eventsPos, `SELECT ` + eventColumns + `, c.name FROM events e JOIN conversations c ON c.id = e.conversation_id
			WHERE e.pos >= ? ORDER BY e.pos LIMIT ?`},
		{&st.convs, `SELECT name, next_seq, received, in_progress, errored, finished, compacted, forgotten_before FROM conversations
			WHERE name > ? ORDER BY name LIMIT ?`},
		// ?3 is the filter (see Messages), ?4 the time, ?5 max_attempts.
		{&st.msgs, `SELECT message_id, ` + messageColumns + ` FROM messages
			WHERE conversation_id = (SELECT id FROM conversations WHERE name = ?1) AND message_id > ?2
			AND CASE ?3 WHEN 0 THEN 1
				WHEN ` + strconv.Itoa(int(conversation.FilterLeased)) + ` THEN status = 2 AND lease_until > ?4
				WHEN ` + strconv.Itoa(int(conversation.FilterQuarantined)) + ` THEN ?5 > 0 AND status IN (1, 2, 3) AND attempts >= ?5
					AND NOT (status = 2 AND lease_until > ?4)
				ELSE status = ?3 END
			ORDER BY message_id LIMIT ?6`},
		// A message's events lie between its message_received and its
		// latest event: the (conversation, seq) index bounds the scan.
		{&st.msgEvents, `SELECT ` + eventColumns + ` FROM events
			WHERE conversation_id = (SELECT id FROM conversations WHERE name = ?1) AND seq BETWEEN ?2 AND ?3
			AND message_id = ?4 ORDER BY seq DESC LIMIT ?5`},
		// The partial indexes finished_messages and tombstones serve these.
		{&st.finishedBefore, `SELECT c.name, m.message_id, m.last_seq - m.received_seq FROM messages m
			JOIN conversations c ON c.id = m.conversation_id
			WHERE m.status = 4 AND m.compacted = 0 AND m.last_ts < ?1 ORDER BY m.last_ts LIMIT ?2`},
		{&st.tombstonesBefore, `SELECT c.name, m.message_id, 0 FROM messages m
			JOIN conversations c ON c.id = m.conversation_id
			WHERE m.compacted = 1 AND m.last_ts < ?1 ORDER BY m.last_ts LIMIT ?2`},
	} {
		var err error
		if *p.stmt, err = db.Prepare(p.sql); err != nil {
			st.close()
			return nil, err
		}
	}
	return st, nil
}

func (st *readStmts) close() error {
	for _, s := range []*sql.Stmt{st.msg, st.steps, st.conv, st.events, st.eventsPos, st.convs, st.msgs, st.msgEvents,
		st.finishedBefore, st.tombstonesBefore} {
		if s != nil {
			s.Close()
		}
	}
	return nil
}

// Message returns the state of message id of conversation conv, or nil if it
// was never received. A message written or read lately is served from
// the cache of committed states, without a query (see state).
func (s *Store) Message(ctx context.Context, conv, id string) (*conversation.Message, error) {
	e, err := s.state(ctx, conv, id)
	if err != nil || e.m == nil {
		return nil, err
	}
	cp := *e.m
	return &cp, nil
}

// state returns the committed state of message id of conversation conv
// from the cache, or else from the database, caching it when the cache
// knows the conversation (see msgCache); its m is nil if the message was
// never received.
func (s *Store) state(ctx context.Context, conv, id string) (cached, error) {
	cid, known := s.convIDs.Load(conv)
	var k msgKey
	if known {
		k = msgKey{cid.(int64), id}
		if e := s.msgs.entry(k); e.m != nil {
			return e, nil
		}
	}
	epoch := s.msgs.epoch.Load()
	m, err := scanMessage(s.reads.msg.QueryRowContext(ctx, conv, id), id)
	if err != nil || m == nil {
		return cached{}, err
	}
	e := cached{m, s.writing.Load()}
	if known {
		s.msgs.add(k, m, e.batch, epoch, s.opts.CacheSize)
	}
	return e, nil
}

// Steps returns the completed steps of message id of conversation conv, by
// index.
func (s *Store) Steps(ctx context.Context, conv, id string) ([]conversation.StepRecord, error) {
	rows, err := s.reads.steps.QueryContext(ctx, conv, id)
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
// conversation conv, at the store's Moment, without appending anything.
// Returns a *conversation.FingerprintMismatchError when the message was
// received with another fingerprint.
func (s *Store) Decide(ctx context.Context, conv, id string, d conversation.Delivery) (conversation.Decision, error) {
	m, err := s.Message(ctx, conv, id)
	if err != nil {
		return conversation.Decision{}, err
	}
	var h conversation.Horizon
	if m == nil {
		if h, err = s.Horizon(ctx, conv); err != nil {
			return conversation.Decision{}, err
		}
	}
	return conversation.Deliver(m, d, h, s.Moment())
}

// Settle answers a write that the durable state of its message settles
// without appending (conversation.Settled: the redelivery of a message
// already received), at once and without the writer; ok is false for any
// other write, which goes through WriteAsync. A state the writer committed
// and has not yet made durable settles nothing, so that no answer rests on
// a write a power loss could still undo; nor does any state once a sync
// failed, or after Close.
func (s *Store) Settle(cmd *conversation.Command) (conversation.Outcome, bool) {
	if cmd.Op != conversation.OpReceive || s.broken.Load() != nil {
		return conversation.Outcome{}, false
	}
	// Only a cached state: most receives are of new messages, which a read
	// of the database would look for in vain before the writer's own. A
	// redelivery of a message not cached goes through the writer, which
	// caches it for the next.
	cid, ok := s.convIDs.Load(cmd.Conversation)
	if !ok {
		return conversation.Outcome{}, false
	}
	e := s.msgs.entry(msgKey{cid.(int64), cmd.MessageID})
	if e.m == nil || e.batch > s.durable.Load() || cmd.Validate() != nil {
		return conversation.Outcome{}, false
	}
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return conversation.Outcome{}, false
	}
	return conversation.Settled(cmd, e.m, s.Moment())
}

// Horizon returns the forgotten_before of conversation conv (SPEC §8): not
// set when it never dropped a tombstone, or does not exist.
func (s *Store) Horizon(ctx context.Context, conv string) (conversation.Horizon, error) {
	sum, err := s.Conversation(ctx, conv)
	return sum.Horizon, err
}

// Moment returns what the rules judge a message by now: the store's clock
// and its max_attempts setting.
func (s *Store) Moment() conversation.Moment {
	return conversation.Moment{Now: s.opts.Now().UnixMilli(), MaxAttempts: s.maxAttempts.Load()}
}

// SetMaxAttempts sets how many times a message may be started before it is
// quarantined (0, or less: no limit), from the next request on.
func (s *Store) SetMaxAttempts(n int64) { s.maxAttempts.Store(max(n, 0)) }

// Messages returns up to limit messages of conversation conv whose ids sort
// after after, by id, with their state. filter is "" for every message, a
// stored status ("received", "in_progress", "errored", "finished"), or
// "leased" or "quarantined", judged at mo. Returns a
// *conversation.FieldError naming "status" for another filter.
//
// The query narrows leased and quarantined by their columns, and the rules
// of package conversation (Filter.Keep) have the last word on each row.
func (s *Store) Messages(ctx context.Context, conv, filter, after string, limit int, mo conversation.Moment) ([]conversation.Message, error) {
	filt, err := conversation.ParseFilter(filter)
	if err != nil {
		return nil, err
	}
	rows, err := s.reads.msgs.QueryContext(ctx, conv, after, int64(filt), mo.Now, mo.MaxAttempts, limit)
	if err != nil {
		return nil, unavailable("read messages", err)
	}
	defer rows.Close()
	var out []conversation.Message
	for rows.Next() {
		var id string
		m, err := scanMessageColumns(rows, &id)
		if err != nil {
			return nil, unavailable("read messages", err)
		}
		m.ID = id
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
	rows, err := s.reads.msgEvents.QueryContext(ctx, conv, m.ReceivedSeq, m.LastSeq, m.ID, limit)
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
	err := s.reads.conv.QueryRowContext(ctx, name).Scan(&sum.Next,
		&sum.Counts.Received, &sum.Counts.InProgress, &sum.Counts.Errored, &sum.Counts.Finished, &sum.Compacted, scanHorizon{&sum.Horizon})
	if errors.Is(err, sql.ErrNoRows) {
		err = nil
	}
	return sum, unavailable("read conversation", err)
}

// Conversations returns up to limit conversations whose names sort after
// after, by name.
func (s *Store) Conversations(ctx context.Context, after string, limit int) ([]conversation.Summary, error) {
	rows, err := s.reads.convs.QueryContext(ctx, after, limit)
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
	rows, err := s.reads.events.QueryContext(ctx, conv, from, limit)
	if err != nil {
		return nil, unavailable("read events", err)
	}
	events, err := scanEvents(rows, conv, nil)
	return events, unavailable("read events", err)
}

// EventsFrom returns up to limit events of every conversation from position
// pos on, in pos order.
func (s *Store) EventsFrom(ctx context.Context, pos int64, limit int) ([]conversation.Event, error) {
	rows, err := s.reads.eventsPos.QueryContext(ctx, pos, limit)
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
