package pgstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"liminald/conversation"
)

// request is one write waiting for the writer, which sets out and err,
// then answers it: then is called exactly once.
type request struct {
	cmd conversation.Command
	// imported is set for an event Import appends: it keeps its ts, and is
	// judged as when it was logged.
	imported bool
	ts       int64
	// maint, when set, makes the request a piece of retention's work on
	// cmd's message instead of a write: see batch.maintain.
	maint *maintenance
	out   conversation.Outcome
	err   error
	then  func(conversation.Outcome, error)
}

func (r *request) finish() { r.then(r.out, r.err) }

// Write evaluates cmd against the committed state and, when the write
// rules accept it and it appends an event, commits that event and the
// state it changes. It returns only after COMMIT returned. It is WriteAsync
// waiting for its answer.
//
// Returns a *conversation.FieldError for invalid arguments, the rule
// errors of package conversation, an error wrapping
// conversation.ErrUnavailable when the database cannot write now,
// conversation.ErrClosed after Close, or ctx's error if ctx ends before the
// request is queued. Once queued, a request is always answered.
func (s *Store) Write(ctx context.Context, cmd conversation.Command) (conversation.Outcome, error) {
	var out conversation.Outcome
	var err error
	done := make(chan struct{})
	s.WriteAsync(ctx, cmd, func(o conversation.Outcome, e error) {
		out, err = o, e
		close(done)
	})
	<-done
	return out, err
}

// WriteAsync queues cmd and returns; then is called once with what Write
// returns, from a writer's goroutine once the batch of cmd committed (or
// from the caller's, when cmd is refused before it is queued). then must
// not block. Two writes queued one after the other may go to different
// writers and land in either order: a caller that needs the first before
// the second waits for its answer, as the server does for the requests of
// one connection on one conversation.
func (s *Store) WriteAsync(ctx context.Context, cmd conversation.Command, then func(conversation.Outcome, error)) {
	if err := cmd.Validate(); err != nil {
		then(conversation.Outcome{}, err)
		return
	}
	s.enqueue(ctx, []*request{{cmd: cmd, then: then}})
}

// enqueue hands reqs to the writers as one run, which one writer takes
// whole and writes in order; if it cannot be queued, every request of it
// is answered at once: conversation.ErrClosed after Close, or ctx's error.
func (s *Store) enqueue(ctx context.Context, reqs []*request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	err := conversation.ErrClosed
	if !s.closed {
		select {
		case s.queue <- reqs:
			return
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	for _, r := range reqs {
		r.out, r.err = conversation.Outcome{}, err
		r.finish()
	}
}

// writer is one of the store's writer goroutines (Options.Writers).
type writer struct {
	s     *Store
	batch []*request
}

func (w *writer) run() {
	for run := range w.s.queue {
		w.batch = append(w.batch[:0], run...)
	take:
		for len(w.batch) < w.s.opts.MaxBatch {
			select {
			case run, ok := <-w.s.queue:
				if !ok {
					break take
				}
				w.batch = append(w.batch, run...)
			default:
				break take
			}
		}
		w.commit()
		clear(w.batch)
	}
}

// maxRetries is how many times a batch rolled back for an error that
// isRetryable is written again.
const maxRetries = 5

// commit writes the batch in one transaction and answers its requests once
// COMMIT returned.
func (w *writer) commit() {
	s := w.s
	start := time.Now()
	var b *batch
	var err error
	for try := 0; ; try++ {
		b = newBatch(s, w.batch)
		ctx, cancel := context.WithTimeout(context.Background(), s.opts.WriteTimeout)
		err = b.write(ctx)
		cancel()
		if err == nil || !isRetryable(err) || try == maxRetries {
			break
		}
		s.log.Debug("write batch rolled back; writing it again", "requests", len(w.batch), "err", err)
	}
	if err != nil {
		s.stats.Fail()
		s.log.Error("write batch failed", "requests", len(w.batch), "err", err)
		err = unavailable("write batch", err)
		for _, r := range w.batch {
			r.out, r.err = conversation.Outcome{}, err
			r.finish()
		}
		return
	}
	s.known.learn(b.convs)
	s.stats.Record(len(w.batch), len(b.events), time.Since(start))
	for _, r := range w.batch {
		r.finish()
	}
	if len(b.events) > 0 {
		s.tail.committed(b.events)
	}
}

// convRow is a row of the conversations table, as a batch holds it.
type convRow struct {
	id        int64
	name      string
	next      int64
	counts    conversation.Counts
	compacted int64
	horizon   conversation.Horizon
	created   bool // the batch inserted it
	used      bool // the batch appended to it or changed it: it stays
}

type msgKey struct {
	conv int64
	id   string
}

type stepKey struct {
	conv  int64
	id    string
	index uint32
}

// totals are the changes a batch makes to the totals in positions.
type totals struct {
	conversations, messages, events int64
	compacted, tombstones, dropped  int64
	horizon                         conversation.Horizon
}

// batch is one try at writing a batch of requests: the state it locked and
// read, and what it writes.
type batch struct {
	s    *Store
	reqs []*request
	conn *pgx.Conn
	now  int64 // the database's clock, read once

	convs map[string]*convRow
	msgs  map[msgKey]*conversation.Message // the messages it read or wrote
	rows  map[msgKey]bool                  // the messages that have a row: read, and not dropped
	steps map[stepKey]conversation.StepRecord

	changed    map[msgKey]bool // messages to write
	dropped    []msgKey        // tombstones to delete
	compacted  []msgKey        // messages whose events and steps to delete
	spans      [][2]int64      // the seqs of each of compacted
	newSteps   []stepKey
	stepSeqs   []int64
	events     []conversation.Event // appended, in order
	eventConvs []int64
	totals     totals
	maintained bool // it compacted or dropped something
}

func newBatch(s *Store, reqs []*request) *batch {
	return &batch{s: s, reqs: reqs, convs: make(map[string]*convRow), msgs: make(map[msgKey]*conversation.Message),
		rows: make(map[msgKey]bool), steps: make(map[stepKey]conversation.StepRecord), changed: make(map[msgKey]bool)}
}

// write runs the batch's transaction on a connection of the pool. An
// error is the batch's: every request gets it.
func (b *batch) write(ctx context.Context) error {
	pc, err := b.s.pool.Acquire(ctx)
	if err != nil {
		return unavailable("connect", err)
	}
	defer pc.Release()
	b.conn = pc.Conn()
	if err := b.lockAndRead(ctx); err != nil {
		b.rollback(pc)
		return err
	}
	for _, r := range b.reqs {
		r.out, r.err = conversation.Outcome{}, nil
		if err := b.apply(ctx, r); err != nil {
			b.rollback(pc)
			return err
		}
	}
	if len(b.events) == 0 && !b.maintained {
		b.rollback(pc) // decisions, duplicates and refusals: nothing to keep
		return nil
	}
	if b.s.opts.beforeTail != nil {
		b.s.opts.beforeTail()
	}
	if err := b.end(ctx); err != nil {
		b.rollback(pc)
		return err
	}
	return nil
}

// rollback ends the batch's transaction, if it is still open; a connection
// that cannot is closed, and the pool drops it.
func (b *batch) rollback(pc *pgxpool.Conn) {
	if b.conn.PgConn().TxStatus() == 'I' {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := b.conn.Exec(ctx, "ROLLBACK"); err != nil {
		b.conn.Close(ctx)
	}
}

const convColumns = `id, name, next_seq, received, in_progress, errored, finished, compacted, forgotten_before`

const messageColumns = `status, received_at, received_seq, started_seq, last_step, error, last_type, last_seq,
	last_ts, fingerprint, worker, lease_until, attempts, compacted`

// mColumns are messageColumns of the messages table as m.
const mColumns = `m.status, m.received_at, m.received_seq, m.started_seq, m.last_step, m.error, m.last_type, m.last_seq,
	m.last_ts, m.fingerprint, m.worker, m.lease_until, m.attempts, m.compacted`

// lockAndRead begins the transaction, inserts the conversations the batch
// names that do not exist, locks them all in name order (so that two
// batches never wait for each other in a cycle), reads the clock, and
// reads the messages and steps the requests name: one round trip.
func (b *batch) lockAndRead(ctx context.Context) error {
	var names, msgConvs, msgIDs, stepConvs, stepIDs []string
	var stepIdx []int64
	seen := make(map[string]bool)
	for _, r := range b.reqs {
		c := &r.cmd
		if !seen[c.Conversation] {
			seen[c.Conversation] = true
			names = append(names, c.Conversation)
		}
		msgConvs, msgIDs = append(msgConvs, c.Conversation), append(msgIDs, c.MessageID)
		if c.Op == conversation.OpStep && r.maint == nil {
			stepConvs, stepIDs, stepIdx = append(stepConvs, c.Conversation), append(stepIDs, c.MessageID), append(stepIdx, int64(c.StepIndex))
		}
	}
	slices.Sort(names) // byte order: COLLATE "C"
	insert := b.s.known.unknown(names)
	q := &pgx.Batch{}
	q.Queue(`BEGIN`)
	if len(insert) > 0 {
		q.Queue(`INSERT INTO conversations (name) SELECT n FROM unnest($1::text[]) n ORDER BY n ON CONFLICT (name) DO NOTHING RETURNING name`, insert)
	}
	q.Queue(`SELECT `+convColumns+` FROM conversations WHERE name = ANY($1::text[]) ORDER BY name FOR UPDATE`, names)
	q.Queue(clockSQL)
	// Each key is looked up on its own (LATERAL, the conversation's id a
	// subquery's), so that the index is searched by the whole key: joined
	// to the list of keys, the planner may search messages by the
	// conversation alone while it holds few, then filter every message of
	// the conversation, however many it comes to hold.
	q.Queue(`SELECT m.conversation_id, m.message_id, `+mColumns+`
		FROM unnest($1::text[], $2::text[]) k(conv, id)
		CROSS JOIN LATERAL (SELECT * FROM messages m
			WHERE m.conversation_id = (SELECT id FROM conversations WHERE name = k.conv) AND m.message_id = k.id OFFSET 0) m`,
		msgConvs, msgIDs)
	if len(stepIdx) > 0 {
		q.Queue(`SELECT s.conversation_id, s.message_id, s.step_index, s.seq, e.output
			FROM unnest($1::text[], $2::text[], $3::bigint[]) k(conv, id, idx)
			CROSS JOIN LATERAL (SELECT * FROM steps s
				WHERE s.conversation_id = (SELECT id FROM conversations WHERE name = k.conv) AND s.message_id = k.id
					AND s.step_index = k.idx OFFSET 0) s
			JOIN events e ON e.conversation_id = s.conversation_id AND e.seq = s.seq`, stepConvs, stepIDs, stepIdx)
	}
	br := b.conn.SendBatch(ctx, q)
	err := b.readLocked(br, len(insert) > 0, len(stepIdx) > 0)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	if err == nil && len(b.convs) < len(names) {
		b.s.known.forget()
		return errConversationGone
	}
	return unavailable("lock conversations", err)
}

func (b *batch) readLocked(br pgx.BatchResults, insert, steps bool) error {
	if _, err := br.Exec(); err != nil { // BEGIN
		return err
	}
	created := make(map[string]bool)
	if insert {
		rows, _ := br.Query()
		for rows.Next() {
			var name string
			if err := rows.Scan(&name); err != nil {
				return err
			}
			created[name] = true
		}
		if err := rows.Err(); err != nil {
			return err
		}
	}
	rows, _ := br.Query()
	for rows.Next() {
		c := &convRow{}
		if err := rows.Scan(&c.id, &c.name, &c.next, &c.counts.Received, &c.counts.InProgress, &c.counts.Errored, &c.counts.Finished,
			&c.compacted, scanHorizon{&c.horizon}); err != nil {
			return err
		}
		c.created = created[c.name]
		b.convs[c.name] = c
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if err := br.QueryRow().Scan(&b.now); err != nil {
		return err
	}
	b.now += b.s.offset()
	rows, _ = br.Query()
	for rows.Next() {
		var k msgKey
		m, err := scanMessage(rows, &k.conv, &k.id)
		if err != nil {
			return err
		}
		b.msgs[k] = m
		b.rows[k] = true
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if !steps {
		return nil
	}
	rows, _ = br.Query()
	for rows.Next() {
		var k stepKey
		var index int64
		r := conversation.StepRecord{}
		if err := rows.Scan(&k.conv, &k.id, &index, &r.Seq, &r.Output); err != nil {
			return err
		}
		k.index, r.Index = uint32(index), uint32(index)
		if r.Output == nil {
			r.Output = []byte{}
		}
		b.steps[k] = r
	}
	return rows.Err()
}

// apply evaluates one request against the state as the batch left it and
// appends its event. A rule error is the request's answer and not an
// error of the batch; the error returned fails the whole batch.
func (b *batch) apply(ctx context.Context, r *request) error {
	c := &r.cmd
	conv := b.convs[c.Conversation]
	if conv == nil { // locked above: it exists
		return fmt.Errorf("conversation %q was not locked", c.Conversation)
	}
	if r.maint != nil {
		return b.maintain(ctx, r, conv)
	}
	// An imported log of a conversation that compacted messages skips
	// their seqs.
	if r.imported && conv.compacted > 0 && c.ExpectedSeq > conv.next {
		conv.next = c.ExpectedSeq
		b.use(conv)
	}
	key := msgKey{conv.id, c.MessageID}
	k := conversation.Known{Now: b.now, MaxAttempts: b.s.maxAttempts.Load(), Next: conv.next, Horizon: conv.horizon}
	k.Message = b.msgs[key]
	if c.Op == conversation.OpStep && k.Message != nil && int64(c.StepIndex) <= k.Message.LastStep {
		if s, ok := b.steps[stepKey{conv.id, c.MessageID, c.StepIndex}]; ok {
			k.Step = &s
		}
	}
	if c.NeedsPrior(k.Next) {
		var err error
		if k.Prior, err = b.eventAt(ctx, conv, c.ExpectedSeq); err != nil {
			return err
		}
	}
	ts := b.now
	if r.imported {
		ts = r.ts
		k.Replaying(c, ts)
	}
	r.out, r.err = conversation.Evaluate(c, k)
	if r.err != nil || !r.out.Append {
		return nil
	}
	e := c.Event(conv.next, ts)
	if e.Type == conversation.StepCompleted {
		sk := stepKey{conv.id, e.MessageID, e.StepIndex}
		b.steps[sk] = conversation.StepRecord{Index: e.StepIndex, Seq: e.Seq, Output: e.Output}
		b.newSteps, b.stepSeqs = append(b.newSteps, sk), append(b.stepSeqs, e.Seq)
	}
	m := k.Message
	if m == nil {
		m = &conversation.Message{}
		b.msgs[key] = m
		b.totals.messages++
	}
	b.use(conv)
	b.changed[key] = true
	from := m.Status
	m.Apply(&e)
	conv.counts.Move(from, m.Status)
	conv.next++
	b.totals.events++
	b.events = append(b.events, e)
	b.eventConvs = append(b.eventConvs, conv.id)
	return nil
}

// use marks conv as changed by the batch: it stays, and is written.
func (b *batch) use(conv *convRow) {
	if conv.created && !conv.used {
		b.totals.conversations++
	}
	conv.used = true
}

const eventColumns = `seq, pos, ts, type, message_id, received_at, step_index, output, error, fingerprint, worker, lease_ms, token, reason`

// eventAt returns the event of conversation conv at seq, nil if there is
// none (or it belongs to a message the batch compacted).
func (b *batch) eventAt(ctx context.Context, conv *convRow, seq int64) (*conversation.Event, error) {
	for i := range b.events { // appended by this batch
		if b.eventConvs[i] == conv.id && b.events[i].Seq == seq {
			e := b.events[i]
			return &e, nil
		}
	}
	rows, err := b.conn.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE conversation_id = $1 AND seq = $2`, conv.id, seq)
	if err != nil {
		return nil, unavailable("read event", err)
	}
	events, err := scanEvents(rows, conv.name, nil)
	if err != nil {
		return nil, unavailable("read event", err)
	}
	if len(events) == 0 || slices.Contains(b.compacted, msgKey{conv.id, events[0].MessageID}) {
		return nil, nil
	}
	return &events[0], nil
}

// end writes what the batch changed, then takes its positions and
// commits: one round trip, or two when it compacted messages (their
// events' count is needed for the totals).
func (b *batch) end(ctx context.Context) error {
	if len(b.compacted) > 0 {
		convs, ids, los, his := make([]int64, len(b.compacted)), make([]string, len(b.compacted)), make([]int64, len(b.compacted)), make([]int64, len(b.compacted))
		for i, k := range b.compacted {
			convs[i], ids[i], los[i], his[i] = k.conv, k.id, b.spans[i][0], b.spans[i][1]
		}
		// A message's events lie between its message_received and its
		// latest event: the (conversation, seq) index bounds the scan.
		tag, err := b.conn.Exec(ctx, `DELETE FROM events e USING unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[]) k(conv, id, lo, hi)
			WHERE e.conversation_id = k.conv AND e.seq BETWEEN k.lo AND k.hi AND e.message_id = k.id`, convs, ids, los, his)
		if err != nil {
			return unavailable("compact events", err)
		}
		b.totals.events -= tag.RowsAffected()
		if _, err := b.conn.Exec(ctx, `DELETE FROM steps s USING unnest($1::bigint[], $2::text[]) k(conv, id)
			WHERE s.conversation_id = k.conv AND s.message_id = k.id`, convs, ids); err != nil {
			return unavailable("compact steps", err)
		}
	}
	q := &pgx.Batch{}
	b.queueWrites(q)
	t := &b.totals
	n := int64(len(b.events))
	q.Queue(`UPDATE positions SET next = next + $1, conversations = conversations + $2, messages = messages + $3,
		events = events + $4, compacted = compacted + $5, tombstones = tombstones + $6, dropped = dropped + $7,
		forgotten_before = greatest(forgotten_before, $8::bigint) WHERE id = 1 RETURNING next - $1`,
		n, t.conversations, t.messages, t.events, t.compacted, t.tombstones, t.dropped, nullHorizon(t.horizon))
	if n > 0 {
		b.queueEvents(q)
		q.Queue(`SELECT pg_notify('`+notifyChannel+`', $1)`, b.s.id)
	}
	q.Queue(`COMMIT`)
	br := b.conn.SendBatch(ctx, q)
	err := b.readEnd(br, q.Len())
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return unavailable("commit", err)
}

// readEnd reads the results of the statements end queued: all but the
// tail's and COMMIT's are writes.
func (b *batch) readEnd(br pgx.BatchResults, queued int) error {
	tail := queued - 2
	if len(b.events) > 0 {
		tail -= 2
	}
	for range tail {
		if _, err := br.Exec(); err != nil {
			return err
		}
	}
	var base int64
	if err := br.QueryRow().Scan(&base); err != nil {
		return err
	}
	if len(b.events) > 0 {
		for range 2 {
			if _, err := br.Exec(); err != nil {
				return err
			}
		}
	}
	tag, err := br.Exec()
	if err != nil {
		return err
	}
	if tag.String() != "COMMIT" {
		return errors.New("the transaction was rolled back at COMMIT")
	}
	for i := range b.events {
		b.events[i].Pos = base + int64(i)
	}
	return nil
}

// queueWrites queues the writes of the batch's state: the steps it
// completed, the messages it changed, the tombstones it dropped, its
// conversations, and the deletion of the conversations it created but did
// not use.
func (b *batch) queueWrites(q *pgx.Batch) {
	if len(b.compacted) > 0 || len(b.dropped) > 0 {
		var convs []int64
		var ids []string
		for _, k := range b.dropped {
			convs, ids = append(convs, k.conv), append(ids, k.id)
		}
		if len(convs) > 0 {
			q.Queue(`DELETE FROM messages m USING unnest($1::bigint[], $2::text[]) k(conv, id)
				WHERE m.conversation_id = k.conv AND m.message_id = k.id`, convs, ids)
		}
	}
	if len(b.newSteps) > 0 {
		convs, ids, idx := make([]int64, len(b.newSteps)), make([]string, len(b.newSteps)), make([]int64, len(b.newSteps))
		for i, k := range b.newSteps {
			convs[i], ids[i], idx[i] = k.conv, k.id, int64(k.index)
		}
		q.Queue(`INSERT INTO steps (conversation_id, message_id, step_index, seq)
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[])`, convs, ids, idx, b.stepSeqs)
	}
	if len(b.changed) > 0 {
		b.queueMessages(q)
	}
	var ids, next, received, inProgress, errored, finished, compacted []int64
	var horizons []*int64
	var unused []int64
	for _, c := range b.convs {
		switch {
		case c.used:
			ids, next = append(ids, c.id), append(next, c.next)
			received, inProgress = append(received, c.counts.Received), append(inProgress, c.counts.InProgress)
			errored, finished = append(errored, c.counts.Errored), append(finished, c.counts.Finished)
			compacted, horizons = append(compacted, c.compacted), append(horizons, horizonPtr(c.horizon))
		case c.created:
			unused = append(unused, c.id)
		}
	}
	if len(ids) > 0 {
		q.Queue(`UPDATE conversations c SET next_seq = k.next, received = k.received, in_progress = k.in_progress,
			errored = k.errored, finished = k.finished, compacted = k.compacted, forgotten_before = k.forgotten_before
			FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[])
				k(id, next, received, in_progress, errored, finished, compacted, forgotten_before)
			WHERE c.id = k.id`, ids, next, received, inProgress, errored, finished, compacted, horizons)
	}
	if len(unused) > 0 {
		q.Queue(`DELETE FROM conversations WHERE id = ANY($1::bigint[])`, unused)
	}
}

// queueMessages queues the writes of the messages the batch changed: an
// UPDATE of those that have a row, found by their key (an upsert would
// also lock each row it updates, a WAL record more), and an INSERT of the
// others.
func (b *batch) queueMessages(q *pgx.Batch) {
	var update, insert []msgKey
	for k := range b.changed {
		if b.rows[k] {
			update = append(update, k)
		} else {
			insert = append(insert, k)
		}
	}
	if len(update) > 0 {
		q.Queue(`UPDATE messages m SET status = k.status, received_at = k.received_at, received_seq = k.received_seq,
				started_seq = k.started_seq, last_step = k.last_step, error = k.error, last_type = k.last_type,
				last_seq = k.last_seq, last_ts = k.last_ts, fingerprint = k.fingerprint, worker = k.worker,
				lease_until = k.lease_until, attempts = k.attempts, compacted = k.compacted
			FROM `+messagesUnnest+` k(conversation_id, message_id, `+messageColumns+`)
			WHERE m.conversation_id = k.conversation_id AND m.message_id = k.message_id`, b.messageArgs(update)...)
	}
	if len(insert) > 0 {
		q.Queue(`INSERT INTO messages (conversation_id, message_id, `+messageColumns+`) SELECT * FROM `+messagesUnnest,
			b.messageArgs(insert)...)
	}
}

// messagesUnnest makes rows of messages from the arrays of messageArgs.
const messagesUnnest = `unnest($1::bigint[], $2::text[], $3::smallint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
	$8::bytea[], $9::smallint[], $10::bigint[], $11::bigint[], $12::bytea[], $13::text[], $14::bigint[], $15::bigint[], $16::boolean[])`

// messageArgs are the columns of the messages of keys, as arrays: the
// key, then messageColumns.
func (b *batch) messageArgs(keys []msgKey) []any {
	n := len(keys)
	convs, ids := make([]int64, 0, n), make([]string, 0, n)
	status, lastType := make([]int16, 0, n), make([]int16, 0, n)
	receivedAt, receivedSeq, startedSeq, lastSeq, lastTS := make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n), make([]int64, 0, n)
	leaseUntil, attempts := make([]int64, 0, n), make([]int64, 0, n)
	lastStep := make([]*int64, 0, n)
	errText, fingerprint := make([][]byte, 0, n), make([][]byte, 0, n)
	worker := make([]*string, 0, n)
	compacted := make([]bool, 0, n)
	for _, k := range keys {
		m := b.msgs[k]
		convs, ids = append(convs, k.conv), append(ids, k.id)
		status, lastType = append(status, int16(m.Status)), append(lastType, int16(m.LastType))
		receivedAt, receivedSeq, startedSeq = append(receivedAt, m.ReceivedAt), append(receivedSeq, m.ReceivedSeq), append(startedSeq, m.StartedSeq)
		lastSeq, lastTS = append(lastSeq, m.LastSeq), append(lastTS, m.LastTS)
		leaseUntil, attempts = append(leaseUntil, m.LeaseUntil), append(attempts, m.Attempts)
		var step *int64
		if m.LastStep != conversation.NoStep {
			step = &m.LastStep
		}
		lastStep = append(lastStep, step)
		errText, fingerprint = append(errText, nullBytes(m.Error)), append(fingerprint, nullBytes(m.Fingerprint))
		worker, compacted = append(worker, nullText(m.Worker)), append(compacted, m.Compacted)
	}
	return []any{convs, ids, status, receivedAt, receivedSeq, startedSeq, lastStep, errText, lastType, lastSeq, lastTS, fingerprint, worker,
		leaseUntil, attempts, compacted}
}

// queueEvents queues the insert of the batch's events at the positions the
// tail's UPDATE just took: next - n on.
func (b *batch) queueEvents(q *pgx.Batch) {
	n := len(b.events)
	convs, seqs, ts := make([]int64, n), make([]int64, n), make([]int64, n)
	types := make([]int16, n)
	ids := make([]string, n)
	receivedAt, stepIndex, leaseMS, token := make([]*int64, n), make([]*int64, n), make([]*int64, n), make([]*int64, n)
	output, errText, fingerprint, reason := make([][]byte, n), make([][]byte, n), make([][]byte, n), make([][]byte, n)
	worker := make([]*string, n)
	for i := range b.events {
		e := &b.events[i]
		convs[i], seqs[i], ts[i], types[i], ids[i] = b.eventConvs[i], e.Seq, e.TS, int16(e.Type), e.MessageID
		switch e.Type {
		case conversation.MessageReceived:
			receivedAt[i] = &e.ReceivedAt
		case conversation.StepCompleted:
			index := int64(e.StepIndex)
			stepIndex[i] = &index
			output[i] = e.Output
			if output[i] == nil {
				output[i] = []byte{}
			}
		case conversation.ErrorOccurred:
			errText[i] = []byte(e.Error)
		case conversation.LeaseRenewed:
			token[i] = &e.Token
		}
		if e.LeaseMS > 0 {
			leaseMS[i] = &e.LeaseMS
		}
		fingerprint[i], worker[i], reason[i] = nullBytes(e.Fingerprint), nullText(e.Worker), nullBytes(e.Reason)
	}
	q.Queue(`INSERT INTO events (pos, conversation_id, seq, ts, type, message_id, received_at, step_index, output, error,
			fingerprint, worker, lease_ms, token, reason)
		SELECT p.next - $1 + k.i - 1, k.conv, k.seq, k.ts, k.type, k.id, k.received_at, k.step_index, k.output, k.error,
			k.fingerprint, k.worker, k.lease_ms, k.token, k.reason
		FROM positions p, unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::smallint[], $6::text[], $7::bigint[], $8::bigint[],
			$9::bytea[], $10::bytea[], $11::bytea[], $12::text[], $13::bigint[], $14::bigint[], $15::bytea[])
			WITH ORDINALITY k(conv, seq, ts, type, id, received_at, step_index, output, error, fingerprint, worker, lease_ms, token, reason, i)
		WHERE p.id = 1`,
		int64(n), convs, seqs, ts, types, ids, receivedAt, stepIndex, output, errText, fingerprint, worker, leaseMS, token, reason)
}

// nullText is &s, or nil (NULL) for "".
func nullText(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// nullBytes is s as bytes, or nil (NULL) for "".
func nullBytes(s string) []byte {
	if s == "" {
		return nil
	}
	return []byte(s)
}

// horizonPtr is h's forgotten_before, or nil (NULL) when h is not set.
func horizonPtr(h conversation.Horizon) *int64 {
	if !h.Set {
		return nil
	}
	return &h.Before
}

// nullHorizon is horizonPtr as a query argument.
func nullHorizon(h conversation.Horizon) any {
	if p := horizonPtr(h); p != nil {
		return *p
	}
	return nil
}

// scanHorizon reads a forgotten_before column.
type scanHorizon struct{ h *conversation.Horizon }

// Scan implements sql.Scanner, which pgx scans into.
func (s scanHorizon) Scan(src any) error {
	switch v := src.(type) {
	case nil:
		*s.h = conversation.Horizon{}
	case int64:
		*s.h = conversation.Horizon{Before: v, Set: true}
	default:
		return fmt.Errorf("forgotten_before: %T is not an integer", src)
	}
	return nil
}

// maxKnownConvs bounds knownConvs: past it, the names are forgotten and
// learnt again.
const maxKnownConvs = 1 << 16

// knownConvs are names of conversations that had a row when a batch
// committed. A conversation's row, once committed, is never deleted, so a
// batch of known conversations skips the insert of its conversations, a
// statement of every batch. If one is gone all the same (the database was
// restored under the daemon), the batch forgets the names and is written
// again.
type knownConvs struct {
	mu    sync.Mutex
	names map[string]struct{}
}

// unknown returns the names of names not known.
func (k *knownConvs) unknown(names []string) []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []string
	for _, n := range names {
		if _, ok := k.names[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// learn records the conversations of a committed batch that have a row.
func (k *knownConvs) learn(convs map[string]*convRow) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.names == nil || len(k.names)+len(convs) > maxKnownConvs {
		k.names = make(map[string]struct{}, len(convs))
	}
	for name, c := range convs {
		if !c.created || c.used {
			k.names[name] = struct{}{}
		}
	}
}

// forget forgets every name.
func (k *knownConvs) forget() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.names = nil
}

// errConversationGone: a conversation known to have a row had none. The
// batch is written again, inserting its conversations.
var errConversationGone = errors.New("a known conversation has no row")
