package pgstore

import (
	"context"
	"fmt"
	"time"

	"liminald/conversation"
	"liminald/internal/compaction"
	"liminald/internal/offline"
)

// Retention is how long the store keeps what it no longer needs (SPEC §8):
// the rules' own type, as in the SQLite store. Zero keeps it forever.
type Retention = conversation.Retention

// SetRetention sets r from now on, and wakes compaction to apply it.
func (s *Store) SetRetention(r Retention) { s.retention.Set(r) }

// Retention returns the retention in force.
func (s *Store) Retention() Retention { return s.retention.Get() }

// maintenance is a piece of retention's work that the writer does on one
// message in a batch's transaction, with its conversation locked, so that
// it never races a write to the message through any daemon; or a piece of
// an import's that is not an event: a conversation's header, or a
// tombstone.
type maintenance struct {
	drop   bool  // drop a tombstone; else compact a finished message
	cutoff int64 // only what finished before this (epoch ms)
	// header, when set, restores what an export says of a conversation;
	// tomb, an exported tombstone.
	header *offline.Header
	tomb   *conversation.Tombstone
}

// maintain does r's piece of retention on its message of conversation
// conv, judged again on the state the lock gives. A message the batch
// wrote is left for the next pass. Sets r.out.Append when it changed
// something. As in apply, a refusal is r's answer, and the error returned
// fails the batch.
func (b *batch) maintain(ctx context.Context, r *request, conv *convRow) error {
	mt := r.maint
	switch {
	case mt.header != nil:
		b.restoreHeader(*mt.header, conv)
		r.out = conversation.Outcome{Append: true}
		return nil
	case mt.tomb != nil:
		return b.restore(ctx, r, conv)
	}
	k := msgKey{conv.id, r.cmd.MessageID}
	if b.changed[k] {
		return nil
	}
	m := b.msgs[k]
	if m == nil || m.Status != conversation.StatusFinished || m.LastTS >= mt.cutoff || m.Compacted != mt.drop {
		return nil
	}
	if mt.drop {
		b.dropped = append(b.dropped, k)
		delete(b.msgs, k)
		delete(b.rows, k)
		conv.counts.Move(conversation.StatusFinished, conversation.StatusUnknown)
		conv.horizon = conv.horizon.Advance(m.LastTS)
		b.totals.horizon = b.totals.horizon.Advance(m.LastTS)
		b.totals.messages--
		b.totals.tombstones--
		b.totals.dropped++
	} else {
		b.compacted = append(b.compacted, k)
		b.spans = append(b.spans, [2]int64{m.ReceivedSeq, m.LastSeq})
		*m = *m.Tombstone().Message()
		b.changed[k] = true
		conv.compacted++
		b.totals.compacted++
		b.totals.tombstones++
	}
	conv.used, b.maintained = true, true
	r.out = conversation.Outcome{Append: true}
	return nil
}

// restoreHeader gives conversation conv what header h of an export says:
// the messages it compacted (the database's count is the sum of its
// conversations'), its horizon, and a next seq it never lowers.
func (b *batch) restoreHeader(h offline.Header, conv *convRow) {
	if more := h.Compacted - conv.compacted; more > 0 {
		conv.compacted += more
		b.totals.compacted += more
	}
	conv.next = max(conv.next, h.Next)
	if h.Horizon.Set {
		conv.horizon = conv.horizon.Advance(h.Horizon.Before)
		b.totals.horizon = b.totals.horizon.Advance(h.Horizon.Before)
	}
	b.use(conv)
	b.maintained = true
}

// restore adds the exported tombstone of r to conversation conv: its
// message must be unknown, or be that very tombstone (a duplicate, so that
// an import can run again), and no event may be stored at its seq.
func (b *batch) restore(ctx context.Context, r *request, conv *convRow) error {
	t := *r.maint.tomb
	k := msgKey{conv.id, t.MessageID}
	if m := b.msgs[k]; m != nil {
		if m.Compacted && m.Tombstone() == t {
			r.out = conversation.Outcome{Seq: t.Seq, Duplicate: true}
			return nil
		}
		r.err = fmt.Errorf("a tombstone of message %q, which is already %v at seq %d", t.MessageID, m.Status, m.LastSeq)
		return nil
	}
	e, err := b.eventAt(ctx, conv, t.Seq)
	if err != nil {
		return err
	}
	if e != nil {
		r.err = fmt.Errorf("a tombstone of message %q at seq %d, where an event of %q is stored", t.MessageID, t.Seq, e.MessageID)
		return nil
	}
	b.msgs[k] = t.Message()
	b.changed[k] = true
	conv.counts.Move(conversation.StatusUnknown, conversation.StatusFinished)
	conv.next = max(conv.next, t.Seq+1)
	b.use(conv)
	b.maintained = true
	b.totals.messages++
	b.totals.tombstones++
	r.out = conversation.Outcome{Append: true, Seq: t.Seq}
	return nil
}

// CompactResult is what one compaction pass did.
type CompactResult = compaction.Result

// The candidates of a pass, oldest first, with the seqs they span: $1 the
// cutoff, $2 the limit (compaction.Rows). The partial indexes finished_messages and
// tombstones serve them.
const (
	finishedBeforeSQL = `SELECT c.name, m.message_id, m.last_seq - m.received_seq FROM messages m
		JOIN conversations c ON c.id = m.conversation_id
		WHERE m.finished_ts IS NOT NULL AND NOT m.compacted AND m.finished_ts < $1 ORDER BY m.finished_ts LIMIT $2`
	tombstonesBeforeSQL = `SELECT c.name, m.message_id, 0 FROM messages m
		JOIN conversations c ON c.id = m.conversation_id
		WHERE m.compacted AND m.finished_ts < $1 ORDER BY m.finished_ts LIMIT $2`
)

// Compact runs one compaction pass under the retention in force, at the
// database's clock: it compacts the messages finished before Finished ago
// and drops the tombstones finished before Tombstones ago, a few at a
// time, through the writer. The store runs it in the background; tests
// call it to make a pass happen now. Several daemons may compact one
// database at once: the writer judges each message again under its
// conversation's lock, and what another did is left alone. An error (the
// database cannot write) ends the pass; what it did until then stays done.
func (s *Store) Compact(ctx context.Context) (CompactResult, error) {
	start := time.Now()
	ret := s.Retention()
	var res CompactResult
	var err error
	if ret.Finished > 0 || ret.Tombstones > 0 {
		var now int64
		if now, err = s.now(ctx); err == nil && ret.Finished > 0 {
			res.Compacted, err = s.sweep(ctx, finishedBeforeSQL, false, now-ret.Finished.Milliseconds())
		}
		if err == nil && ret.Tombstones > 0 {
			res.Dropped, err = s.sweep(ctx, tombstonesBeforeSQL, true, now-ret.Tombstones.Milliseconds())
		}
	}
	res.Took = time.Since(start)
	s.compacting.Record(res, err)
	return res, err
}

// sweep hands the writer every message that the query candidates finds,
// in groups (see compaction.Sweep). Returns how many of them the writer
// changed.
func (s *Store) sweep(ctx context.Context, candidates string, drop bool, cutoff int64) (int64, error) {
	page := func(ctx context.Context, limit int) ([]compaction.Candidate, error) {
		rows, err := s.pool.Query(ctx, candidates, cutoff, limit)
		if err != nil {
			return nil, unavailable("find what to compact", err)
		}
		defer rows.Close()
		cands, err := compaction.ScanCandidates(rows)
		return cands, unavailable("find what to compact", err)
	}
	return compaction.Sweep(ctx, page, func(ctx context.Context, group []compaction.Candidate) (int64, error) {
		return compaction.Apply(ctx, group, func(c compaction.Candidate, then func(conversation.Outcome, error)) *request {
			return &request{cmd: conversation.Command{Conversation: c.Conversation, MessageID: c.MessageID},
				maint: &maintenance{drop: drop, cutoff: cutoff}, then: then}
		}, s.enqueue)
	})
}
