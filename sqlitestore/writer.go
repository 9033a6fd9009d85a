package sqlitestore

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"liminald/conversation"
)

// request is one write waiting for the writer. The writer or the syncer
// sets out and err, then answers it: then is called exactly once.
type request struct {
	cmd conversation.Command
	// imported is set for an event Import appends: it keeps its ts, and is
	// judged as when it was logged.
	imported bool
	ts       int64
	// maint, when set, makes the request a piece of retention's work on
	// cmd's message (or conversation) instead of a write: see maintain.
	maint *maintenance
	out   conversation.Outcome
	err   error
	then  func(conversation.Outcome, error)
}

// finish answers r with its out and err.
func (r *request) finish() { r.then(r.out, r.err) }

// Write evaluates cmd against the current state and, when the write rules
// accept it and it appends an event, commits that event and the state it
// changes. It returns only after the commit (with SyncFull, after the fsync).
// It is WriteAsync waiting for its answer.
//
// Returns a *conversation.FieldError for invalid arguments, the rule errors
// of package conversation (ErrUnknownMessage, ErrAlreadyFinished,
// ErrStepConflict, *SequenceConflictError, *BusyError, *FencedError,
// ErrQuarantined, ErrNotQuarantined, *FingerprintMismatchError), an error
// wrapping conversation.ErrUnavailable
// when the database cannot write now, conversation.ErrClosed after Close, or ctx's error
// if ctx ends before the request is queued. Once queued, a request is always
// answered.
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

// WriteAsync is the store's one way in for writes: it queues cmd and
// returns, and then is called once with what Write returns, from one of the
// store's goroutines once the write is durable (or from the caller's, when
// cmd is refused before it is queued). then must not block, and should
// only hand the outcome on: the syncer calls it between two syncs.
func (s *Store) WriteAsync(ctx context.Context, cmd conversation.Command, then func(conversation.Outcome, error)) {
	if err := cmd.Validate(); err != nil {
		then(conversation.Outcome{}, err)
		return
	}
	s.enqueue(ctx, []*request{{cmd: cmd, then: then}})
}

// enqueue hands reqs to the writer, in order, and every one of them is
// answered: those it could not queue at once with conversation.ErrClosed
// after Close, the error of a failed sync, or ctx's error if ctx ended
// first, the rest by the writer and the syncer.
func (s *Store) enqueue(ctx context.Context, reqs []*request) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var err error
	switch broken := s.broken.Load(); {
	case s.closed:
		err = conversation.ErrClosed
	case broken != nil:
		err = fmt.Errorf("writes refused since a sync failed; restart liminald: %w", *broken)
	}
	for i, r := range reqs {
		if err == nil {
			select {
			case s.queue <- r:
				if s.unstaged.Add(1) >= stageMin {
					s.poke()
				}
				continue
			case <-ctx.Done():
				err = ctx.Err()
			}
		}
		for _, r := range reqs[i:] {
			r.out, r.err = conversation.Outcome{}, err
			r.finish()
		}
		return
	}
}

// convRow is a row of the conversations table.
type convRow struct {
	id        int64
	name      string
	next      int64
	counts    conversation.Counts
	compacted int64                // messages it ever compacted
	horizon   conversation.Horizon // its forgotten_before
	changed   bool                 // the batch changed it since its last flush
}

type msgKey struct {
	conv int64
	id   string
}

type totals struct {
	conversations, messages, events int64
	compacted, tombstones, dropped  int64
	horizon                         conversation.Horizon // the newest of any conversation
}

// writer owns the writer connection. Only its goroutine touches its fields.
//
// It keeps the rows it committed last in two bounded caches, valid because
// it is the only writer of the database. A batch works on copies in its own
// dirty maps, merged into the caches only after COMMIT; a failed batch drops
// them, so the caches never hold what the database does not.
type writer struct {
	s     *Store
	conn  *sql.Conn
	stmts *writeStmts

	nextPos, nextConvID int64
	lastTS              int64 // the time of the last stage written
	totals              totals
	convs               map[string]*convRow

	// the batch being written
	batch      []*request
	maintained bool                 // the batch compacted, dropped or restored something
	events     []conversation.Event // appended by the batch, in pos order
	eventConvs []int64              // the conversation id of each of events
	dirtyConvs map[string]*convRow
	dirtyMsgs  map[msgKey]*conversation.Message
	changed    map[msgKey]*conversation.Message // the dirty messages an event changed
	steps      map[stepKey]conversation.StepRecord
	keys       keys
}

type stepKey struct {
	conv  int64
	id    string
	index uint32
}

func newWriter(s *Store) (*writer, error) {
	w := &writer{
		s:          s,
		convs:      make(map[string]*convRow),
		dirtyConvs: make(map[string]*convRow),
		dirtyMsgs:  make(map[msgKey]*conversation.Message),
		changed:    make(map[msgKey]*conversation.Message),
		steps:      make(map[stepKey]conversation.StepRecord),
	}
	if err := w.connect(); err != nil {
		return nil, err
	}
	return w, nil
}

// connect takes the writer connection, prepares its statements and loads the
// counters the writer keeps in memory.
func (w *writer) connect() error {
	ctx := context.Background()
	conn, err := w.s.wdb.Conn(ctx)
	if err != nil {
		return unavailable("writer connection", err)
	}
	stmts, err := prepareWrites(ctx, conn)
	if err != nil {
		conn.Close()
		return unavailable("prepare writes", err)
	}
	w.conn, w.stmts = conn, stmts
	if err := w.load(ctx); err != nil {
		w.disconnect()
		return err
	}
	return nil
}

func (w *writer) load(ctx context.Context) error {
	err := w.conn.QueryRowContext(ctx, `SELECT
		(SELECT coalesce(max(pos), 0) + 1 FROM events),
		(SELECT coalesce(max(id), 0) + 1 FROM conversations),
		conversations, messages, events, compacted, tombstones, dropped, forgotten_before FROM totals WHERE id = 1`).
		Scan(&w.nextPos, &w.nextConvID, &w.totals.conversations, &w.totals.messages, &w.totals.events,
			&w.totals.compacted, &w.totals.tombstones, &w.totals.dropped, scanHorizon{&w.totals.horizon})
	return unavailable("load counters", err)
}

// disconnect drops the writer connection for good, so that the next batch
// starts on a fresh one: the way back from an I/O error that left the
// connection in an unknown state.
func (w *writer) disconnect() {
	if w.conn == nil {
		return
	}
	w.stmts.close()
	w.conn.Raw(func(any) error { return driver.ErrBadConn })
	w.conn.Close()
	w.conn, w.stmts = nil, nil
}

func (w *writer) run() {
	for {
		r, ok := <-w.s.queue
		if !ok {
			w.disconnect()
			close(w.s.synced)
			return
		}
		w.batch = append(w.batch[:0], r)
		if w.s.opts.gather != nil {
			w.s.opts.gather()
		}
		w.commit()
		clear(w.batch)
	}
}

// build opens the batch's transaction and writes into it the requests
// waiting, up to MaxBatch. While the syncer is still making an earlier
// batch durable, it goes on writing the requests that arrive until that
// sync ends: they could not be answered before the next sync anyway, one
// larger transaction costs the disk less than several small ones, and the
// statements they need run while the disk works, so that only the COMMIT
// is left once the sync ends. It wakes for a stage's worth of requests,
// not for each. When nothing is syncing it takes only what is waiting, so
// a lone request is committed at once.
//
// Each stage is written at the time it is staged (see stamp), so that no
// event's ts is older than its request: a finish's ts, which a tombstone
// keeps as finished_at and a horizon is made of, is never before the
// sent_at of a message it finished.
func (w *writer) build() error {
	if err := w.begin(); err != nil {
		return err
	}
	written, closed := 0, false
	// What the batch took and did not write leaves the count too.
	defer func() { w.s.unstaged.Add(-int64(len(w.batch) - written)) }()
	for {
		closed = w.take() || closed
		last := closed || len(w.batch) >= w.s.opts.MaxBatch || w.s.syncing.Load() == 0
		if n := len(w.batch) - written; n > 0 && (last || n >= stageMin) {
			if err := w.stage(w.batch[written:], w.stamp()); err != nil {
				return err
			}
			w.s.unstaged.Add(-int64(n))
			if w.s.opts.staged != nil {
				w.s.opts.staged(n)
			}
			written = len(w.batch)
		}
		if last {
			return nil
		}
		<-w.s.wake
	}
}

// stamp returns the time a stage is written at: the store's clock, but
// never before the last stage's, so that ts never goes back in the log.
func (w *writer) stamp() int64 {
	w.lastTS = max(w.lastTS, w.s.opts.Now().UnixMilli())
	return w.lastTS
}

// stageMin is the fewest requests the writer stages at a time while a sync
// is in flight: each stage costs a few statements whatever its size.
const stageMin = 16

// take adds the requests waiting now to the batch, up to MaxBatch.
// Returns true if the queue is closed.
func (w *writer) take() (closed bool) {
	for len(w.batch) < w.s.opts.MaxBatch {
		select {
		case r, ok := <-w.s.queue:
			if !ok {
				return true
			}
			w.batch = append(w.batch, r)
		default:
			return false
		}
	}
	return false
}

// commit writes the batch in one transaction and hands it to the syncer,
// which answers its requests once the commit is durable.
func (w *writer) commit() {
	start := time.Now()
	// The batch's number: the states it caches are durable once it is
	// synced (see msgCache).
	seq := w.s.writing.Add(1)
	err := w.build()
	if err == nil {
		err = w.end()
	}
	if err != nil {
		w.abort(err)
		return
	}
	for k, c := range w.dirtyConvs {
		c.changed = false
		w.convs[k] = c
	}
	for k, m := range w.dirtyMsgs {
		if m == nil { // dropped
			w.s.msgs.del(k)
			continue
		}
		w.s.msgs.put(k, m, seq)
	}
	if len(w.convs) > w.s.opts.CacheSize {
		w.convs = make(map[string]*convRow)
		w.s.convIDs.Clear()
	}
	if w.s.msgs.len() > w.s.opts.CacheSize {
		w.s.msgs.clear()
	}
	for name, c := range w.dirtyConvs {
		w.s.convIDs.LoadOrStore(name, c.id)
	}
	events, maintained := w.events, w.maintained
	w.events = nil // the syncer and then the feed hold the slice now
	w.clearDirty()
	w.s.syncing.Add(1)
	w.s.synced <- &committed{reqs: slices.Clone(w.batch), events: events, maintained: maintained, start: start, commit: time.Since(start), seq: seq}
}

// abort rolls the batch back and answers every request in it with err: the
// rule decisions of the batch were taken against state that was not
// committed, so none of them stands.
func (w *writer) abort(err error) {
	w.s.stats.Fail()
	w.s.log.Error("write batch failed", "requests", len(w.batch), "err", err)
	if w.conn != nil {
		if _, rerr := w.conn.ExecContext(context.Background(), "ROLLBACK"); rerr != nil {
			w.s.log.Warn("rollback failed; reconnecting", "err", rerr)
			w.disconnect()
		} else if lerr := w.load(context.Background()); lerr != nil {
			w.disconnect()
		}
	}
	w.clearDirty()
	if !errors.Is(err, conversation.ErrUnavailable) {
		err = fmt.Errorf("write batch: %w", err)
	}
	for _, r := range w.batch {
		r.out, r.err = conversation.Outcome{}, err
		r.finish()
	}
}

func (w *writer) clearDirty() {
	clear(w.dirtyConvs)
	clear(w.dirtyMsgs)
	clear(w.changed)
	clear(w.steps)
	w.maintained = false
	w.events = w.events[:0]
	w.eventConvs = w.eventConvs[:0]
}

// begin opens the batch's transaction, on a new connection if the last
// one was dropped.
func (w *writer) begin() error {
	if w.conn == nil {
		if err := w.connect(); err != nil {
			return err
		}
	}
	if _, err := w.conn.ExecContext(context.Background(), "BEGIN IMMEDIATE"); err != nil {
		err = unavailable("begin", err)
		w.disconnect()
		return err
	}
	return nil
}

// stage evaluates reqs in order against the state the batch left and
// writes what they append into the open transaction. On an error, abort
// reloads the counters the batch advanced (totals, next pos, next
// conversation id) from the database.
func (w *writer) stage(reqs []*request, ts int64) error {
	ctx := context.Background()
	before, first := w.totals, len(w.events)
	if err := w.prefetch(ctx, reqs); err != nil {
		return err
	}
	for _, r := range reqs {
		if err := w.apply(ctx, r, ts); err != nil {
			return err
		}
	}
	return w.flush(ctx, before, first)
}

// end commits the batch's transaction, or rolls it back when it changed
// nothing: a batch of decisions, duplicates and refusals.
func (w *writer) end() error {
	end := "COMMIT"
	if len(w.events) == 0 && !w.maintained {
		end = "ROLLBACK"
	}
	if _, err := w.conn.ExecContext(context.Background(), end); err != nil {
		return unavailable(strings.ToLower(end), err)
	}
	return nil
}

// apply evaluates one request against the state as the batch left it and
// appends its event. A rule error is the request's answer and not an error
// of the batch; the error returned fails the whole batch.
func (w *writer) apply(ctx context.Context, r *request, ts int64) error {
	c := &r.cmd
	conv := w.conversation(c.Conversation)
	if r.maint != nil {
		return w.maintain(ctx, r, conv)
	}
	k := conversation.Known{Now: ts, MaxAttempts: w.s.maxAttempts.Load()}
	if conv != nil {
		var err error
		// An imported log of a conversation that compacted messages skips
		// their seqs.
		if r.imported && conv.compacted > 0 && c.ExpectedSeq > conv.next {
			conv.next, conv.changed = c.ExpectedSeq, true
		}
		k.Next, k.Horizon = conv.next, conv.horizon
		k.Message = w.message(conv.id, c.MessageID)
		// A step above the highest completed index cannot be recorded yet:
		// only look it up when it could be.
		if c.Op == conversation.OpStep && k.Message != nil && int64(c.StepIndex) <= k.Message.LastStep {
			if k.Step, err = w.step(ctx, conv.id, c.MessageID, c.StepIndex); err != nil {
				return err
			}
		}
		if c.NeedsPrior(k.Next) {
			if k.Prior, err = w.eventAt(ctx, conv, c.ExpectedSeq); err != nil {
				return err
			}
		}
	}
	if r.imported {
		ts = r.ts
		k.Replaying(c, ts)
	}
	r.out, r.err = conversation.Evaluate(c, k)
	if r.err != nil || !r.out.Append {
		return nil
	}
	if conv == nil {
		conv = w.newConversation(c.Conversation)
	}
	e := c.Event(conv.next, ts)
	e.Pos = w.nextPos
	if e.Type == conversation.StepCompleted {
		w.steps[stepKey{conv.id, e.MessageID, e.StepIndex}] = conversation.StepRecord{Index: e.StepIndex, Seq: e.Seq, Output: e.Output}
	}
	w.nextPos++
	m, key := k.Message, msgKey{conv.id, c.MessageID}
	if m == nil {
		m = &conversation.Message{}
		w.dirtyMsgs[key] = m
		w.totals.messages++
	}
	w.changed[key] = m
	conv.changed = true
	from := m.Status
	m.Apply(&e)
	conv.counts.Move(from, m.Status)
	conv.next++
	w.totals.events++
	w.events = append(w.events, e)
	w.eventConvs = append(w.eventConvs, conv.id)
	return nil
}

// newConversation adds conversation name to the batch.
func (w *writer) newConversation(name string) *convRow {
	conv := &convRow{id: w.nextConvID, name: name, changed: true}
	w.nextConvID++
	w.dirtyConvs[name] = conv
	w.totals.conversations++
	return conv
}

// flush writes the events the batch appended from first on and the state
// rows they changed, a few multi-row statements a table. A state row that
// two stages of one batch change (a conversation, the totals) is written by
// both: the second write lands on a page the first made dirty, so the
// COMMIT writes it once, and the stages run while the disk works, where
// deferring every state row to the end of the batch would put them after
// the sync.
func (w *writer) flush(ctx context.Context, before totals, first int) error {
	st := w.stmts
	for i := first; i < len(w.events); i++ {
		st.events.addEvent(w.eventConvs[i], &w.events[i])
		if e := &w.events[i]; e.Type == conversation.StepCompleted {
			st.steps.add(w.eventConvs[i], e.MessageID, int64(e.StepIndex), e.Seq)
		}
	}
	if err := st.events.exec(ctx, w.conn); err != nil {
		return unavailable("append events", err)
	}
	if err := st.steps.exec(ctx, w.conn); err != nil {
		return unavailable("record steps", err)
	}
	for k, m := range w.changed {
		st.messages.addMessage(k.conv, m)
	}
	clear(w.changed)
	if err := st.messages.exec(ctx, w.conn); err != nil {
		return unavailable("update messages", err)
	}
	for _, c := range w.dirtyConvs {
		if c.changed {
			st.conversations.addConversation(c)
			c.changed = false
		}
	}
	if err := st.conversations.exec(ctx, w.conn); err != nil {
		return unavailable("update conversations", err)
	}
	if w.totals != before {
		t := &w.totals
		if _, err := st.updTotals.ExecContext(ctx, t.conversations, t.messages, t.events, t.compacted, t.tombstones, t.dropped,
			nullHorizon(t.horizon)); err != nil {
			return unavailable("update totals", err)
		}
	}
	return nil
}

// prefetch reads, in one statement each, the conversations and the
// messages reqs name that neither the caches nor the batch hold, into the
// caches: what is not found after it does not exist, so apply reads nothing
// more (but a step or an event at expected_seq, when the rules need one).
// What the batch wrote itself is never read back: it is not committed, and
// the caches hold only what is.
func (w *writer) prefetch(ctx context.Context, reqs []*request) error {
	ks := &w.keys
	ks.reset()
	seen := make(map[string]bool)
	for _, r := range reqs {
		name := r.cmd.Conversation
		if w.convs[name] == nil && w.dirtyConvs[name] == nil && !seen[name] {
			seen[name] = true
			ks.name(name)
		}
	}
	if ks.n > 0 {
		rows, err := w.stmts.selConvs.QueryContext(ctx, ks.json())
		if err != nil {
			return unavailable("read conversations", err)
		}
		for rows.Next() {
			c := &convRow{}
			if err := rows.Scan(&c.id, &c.name, &c.next, &c.counts.Received, &c.counts.InProgress, &c.counts.Errored, &c.counts.Finished,
				&c.compacted, scanHorizon{&c.horizon}); err != nil {
				rows.Close()
				return unavailable("read conversations", err)
			}
			w.convs[c.name] = c
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return unavailable("read conversations", err)
		}
	}
	ks.reset()
	asked := make(map[msgKey]bool)
	for _, r := range reqs {
		c := w.convs[r.cmd.Conversation]
		if c == nil {
			continue
		}
		k := msgKey{c.id, r.cmd.MessageID}
		if _, dirty := w.dirtyMsgs[k]; !dirty && w.s.msgs.get(k) == nil && !asked[k] {
			asked[k] = true
			ks.message(k.conv, k.id)
		}
	}
	if ks.n == 0 {
		return nil
	}
	rows, err := w.stmts.selMsgs.QueryContext(ctx, ks.json())
	if err != nil {
		return unavailable("read messages", err)
	}
	defer rows.Close()
	for rows.Next() {
		var conv int64
		var id string
		m, err := scanMessageRow(rows, &conv, &id)
		if err != nil {
			return unavailable("read messages", err)
		}
		w.s.msgs.put(msgKey{conv, id}, m, w.s.writing.Load())
	}
	return unavailable("read messages", rows.Err())
}

// conversation returns the batch's copy of the row of conversation name, or
// nil if it does not exist. The prefetch put every conversation the batch
// names that exists in the cache.
func (w *writer) conversation(name string) *convRow {
	if c, ok := w.dirtyConvs[name]; ok {
		return c
	}
	c := w.convs[name]
	if c == nil {
		return nil
	}
	cp := *c
	w.dirtyConvs[name] = &cp
	return &cp
}

// message returns the batch's copy of message id of conversation conv, or
// nil if it was never received. The prefetch put every message the batch
// names that exists in the cache; a conversation the batch created has no
// message the batch did not append.
func (w *writer) message(conv int64, id string) *conversation.Message {
	k := msgKey{conv, id}
	if m, ok := w.dirtyMsgs[k]; ok {
		return m
	}
	m := w.s.msgs.get(k)
	if m == nil {
		return nil
	}
	cp := *m
	w.dirtyMsgs[k] = &cp
	return &cp
}

func (w *writer) step(ctx context.Context, conv int64, id string, index uint32) (*conversation.StepRecord, error) {
	if r, ok := w.steps[stepKey{conv, id, index}]; ok {
		return &r, nil
	}
	r := conversation.StepRecord{Index: index}
	err := w.stmts.selStep.QueryRowContext(ctx, conv, id, int64(index)).Scan(&r.Seq, &r.Output)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, unavailable("read step", err)
	}
	return &r, nil
}

func (w *writer) eventAt(ctx context.Context, conv *convRow, seq int64) (*conversation.Event, error) {
	for i := range w.events { // appended by this batch, not yet in the table
		if w.eventConvs[i] == conv.id && w.events[i].Seq == seq {
			e := w.events[i]
			return &e, nil
		}
	}
	rows, err := w.stmts.selEventAt.QueryContext(ctx, conv.id, seq)
	if err != nil {
		return nil, unavailable("read event", err)
	}
	events, err := scanEvents(rows, conv.name, nil)
	if err != nil || len(events) == 0 {
		return nil, unavailable("read event", err)
	}
	return &events[0], nil
}
