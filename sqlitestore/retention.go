package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"liminald/conversation"
	"liminald/internal/compaction"
	"liminald/internal/offline"
)

// Retention is how long the store keeps what it no longer needs (SPEC §8):
// the rules' own type. Zero keeps it forever.
type Retention = conversation.Retention

// SetRetention sets r from now on, and wakes compaction to apply it.
func (s *Store) SetRetention(r Retention) { s.retention.Set(r) }

// Retention returns the retention in force.
func (s *Store) Retention() Retention { return s.retention.Get() }

// maintenance is a piece of retention's work that the writer does on one
// message, or one conversation, in a batch's transaction, so that it
// interleaves with the writes and keeps the writer's state and caches
// right (see writer.maintain).
type maintenance struct {
	kind   maintKind
	cutoff int64                  // compact, drop: only what finished before this (epoch ms)
	tomb   conversation.Tombstone // restore
	header convHeader             // header
}

type maintKind uint8

const (
	maintCompact maintKind = iota + 1 // compact a finished message
	maintDrop                         // drop a tombstone
	maintRestore                      // restore an exported tombstone
	maintHeader                       // restore what an export says of a conversation
)

// convHeader is what an export says of a conversation that compacted
// messages: its next seq, the messages it compacted and its horizon.
type convHeader = offline.Header

// maintain does r's piece of retention on conversation conv (nil if it
// does not exist), with the batch's state. A message the batch wrote is
// left for the next pass: its events may not be in the table yet. Sets
// r.out.Append when it changed something. As in apply, a refusal is r's
// answer, and the error returned fails the batch.
func (w *writer) maintain(ctx context.Context, r *request, conv *convRow) error {
	mt, name, id := r.maint, r.cmd.Conversation, r.cmd.MessageID
	switch mt.kind {
	case maintHeader:
		if conv == nil {
			conv = w.newConversation(name)
		}
		// The database's count of compacted messages is the sum of its
		// conversations' (dropped tombstones are counted only where they
		// were dropped).
		if more := mt.header.Compacted - conv.compacted; more > 0 {
			conv.compacted += more
			w.totals.compacted += more
		}
		conv.next = max(conv.next, mt.header.Next)
		if h := mt.header.Horizon; h.Set {
			conv.horizon = conv.horizon.Advance(h.Before)
			w.totals.horizon = w.totals.horizon.Advance(h.Before)
		}
		conv.changed, w.maintained = true, true
		r.out = conversation.Outcome{Append: true}
		return nil
	case maintRestore:
		return w.restore(ctx, r, conv)
	}
	if conv == nil {
		return nil
	}
	k := msgKey{conv.id, id}
	if _, touched := w.dirtyMsgs[k]; touched {
		return nil
	}
	m := w.message(conv.id, id)
	if m == nil || m.Status != conversation.StatusFinished || m.LastTS >= mt.cutoff || m.Compacted != (mt.kind == maintDrop) {
		return nil
	}
	switch mt.kind {
	case maintCompact:
		res, err := w.stmts.delEvents.ExecContext(ctx, conv.id, m.ReceivedSeq, m.LastSeq, id)
		if err != nil {
			return unavailable("compact events", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return unavailable("compact events", err)
		}
		if _, err := w.stmts.delSteps.ExecContext(ctx, conv.id, id); err != nil {
			return unavailable("compact steps", err)
		}
		*m = *m.Tombstone().Message()
		w.changed[k] = m
		conv.compacted++
		w.totals.events -= n
		w.totals.compacted++
		w.totals.tombstones++
	case maintDrop:
		if _, err := w.stmts.delMessage.ExecContext(ctx, conv.id, id); err != nil {
			return unavailable("drop tombstone", err)
		}
		w.dirtyMsgs[k] = nil
		conv.counts.Move(conversation.StatusFinished, conversation.StatusUnknown)
		conv.horizon = conv.horizon.Advance(m.LastTS)
		w.totals.horizon = w.totals.horizon.Advance(m.LastTS)
		w.totals.messages--
		w.totals.tombstones--
		w.totals.dropped++
	}
	conv.changed, w.maintained = true, true
	r.out = conversation.Outcome{Append: true}
	return nil
}

// restore adds the exported tombstone of r to conversation conv (nil if it
// does not exist): its message must be unknown, or be that very tombstone
// (a duplicate, so that an import can run again), and no event may be
// stored at its seq.
func (w *writer) restore(ctx context.Context, r *request, conv *convRow) error {
	t := r.maint.tomb
	if conv == nil {
		conv = w.newConversation(r.cmd.Conversation)
	}
	k := msgKey{conv.id, t.MessageID}
	if m := w.message(conv.id, t.MessageID); m != nil {
		if m.Compacted && m.Tombstone() == t {
			r.out = conversation.Outcome{Seq: t.Seq, Duplicate: true}
			return nil
		}
		r.err = fmt.Errorf("a tombstone of message %q, which is already %v at seq %d", t.MessageID, m.Status, m.LastSeq)
		return nil
	}
	e, err := w.eventAt(ctx, conv, t.Seq)
	if err != nil {
		return err
	}
	if e != nil {
		r.err = fmt.Errorf("a tombstone of message %q at seq %d, where an event of %q is stored", t.MessageID, t.Seq, e.MessageID)
		return nil
	}
	m := t.Message()
	w.dirtyMsgs[k] = m
	w.changed[k] = m
	conv.counts.Move(conversation.StatusUnknown, conversation.StatusFinished)
	conv.next = max(conv.next, t.Seq+1)
	conv.changed, w.maintained = true, true
	w.totals.messages++
	w.totals.tombstones++
	r.out = conversation.Outcome{Append: true, Seq: t.Seq}
	return nil
}

// CompactResult is what one compaction pass did.
type CompactResult = compaction.Result

// Compact runs one compaction pass under the retention in force, at the
// store's clock: it compacts the messages finished before Finished ago and
// drops the tombstones finished before Tombstones ago, a few at a time,
// through the writer. The store runs it in the background; tests call it
// to make a pass happen now. An error (the database cannot write) ends the
// pass; what it did until then stays done.
func (s *Store) Compact(ctx context.Context) (CompactResult, error) {
	start := time.Now()
	ret, now := s.Retention(), s.opts.Now().UnixMilli()
	var res CompactResult
	var err error
	if ret.Finished > 0 {
		res.Compacted, err = s.sweep(ctx, s.reads.finishedBefore, maintCompact, now-ret.Finished.Milliseconds())
	}
	if err == nil && ret.Tombstones > 0 {
		res.Dropped, err = s.sweep(ctx, s.reads.tombstonesBefore, maintDrop, now-ret.Tombstones.Milliseconds())
	}
	res.Took = time.Since(start)
	s.compacting.Record(res, err)
	return res, err
}

// sweep hands the writer every message that candidates (a query of the
// oldest first, by cutoff and limit) finds, in groups (see
// compaction.Sweep). Returns how many of them the writer changed.
func (s *Store) sweep(ctx context.Context, candidates *sql.Stmt, kind maintKind, cutoff int64) (int64, error) {
	page := func(ctx context.Context, limit int) ([]compaction.Candidate, error) {
		rows, err := candidates.QueryContext(ctx, cutoff, limit)
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
				maint: &maintenance{kind: kind, cutoff: cutoff}, then: then}
		}, s.enqueue)
	})
}
