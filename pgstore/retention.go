package pgstore

import (
	"context"
	"sync"
	"time"

	"liminald/conversation"
)

// Retention is how long the store keeps what it no longer needs (SPEC §8),
// as in the SQLite store. Zero keeps it forever.
type Retention struct {
	// Finished: a message finished longer ago than this is compacted: its
	// events and steps are deleted and a tombstone keeps what its
	// redeliveries and writes need.
	Finished time.Duration
	// Tombstones: a tombstone whose message finished longer ago than this
	// is dropped, and its conversation's horizon (forgotten_before) moves
	// to its finished_at.
	Tombstones time.Duration
}

// every returns how often compaction looks for work under r: often enough
// that what became eligible goes within max(1 s, a tenth of its setting);
// 0 when r keeps everything.
func (r Retention) every() time.Duration {
	var d time.Duration
	for _, set := range []time.Duration{r.Finished, r.Tombstones} {
		if set > 0 {
			deadline := max(time.Second, set/10)
			if d == 0 || deadline < d {
				d = deadline
			}
		}
	}
	return d / 2
}

// SetRetention sets r from now on, and wakes compaction to apply it.
func (s *Store) SetRetention(r Retention) {
	s.retention.Store(&r)
	select {
	case s.retained <- struct{}{}:
	default:
	}
}

// Retention returns the retention in force.
func (s *Store) Retention() Retention { return *s.retention.Load() }

// maintenance is a piece of retention's work that the writer does on one
// message in a batch's transaction, with its conversation locked, so that
// it never races a write to the message through any daemon.
type maintenance struct {
	drop   bool  // drop a tombstone; else compact a finished message
	cutoff int64 // only what finished before this (epoch ms)
}

// maintain does r's piece of retention on its message of conversation
// conv, judged again on the state the lock gives. A message the batch
// wrote is left for the next pass. Sets r.out.Append when it changed
// something.
func (b *batch) maintain(r *request, conv *convRow) error {
	mt := r.maint
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

// CompactResult is what one compaction pass did.
type CompactResult struct {
	Compacted int64         // messages compacted into tombstones
	Dropped   int64         // tombstones dropped
	Took      time.Duration // the whole pass
}

// compactStats are compaction's figures since the store opened.
type compactStats struct {
	mu             sync.Mutex
	passes         int64
	total, longest time.Duration
	failures       int64
}

func (c *compactStats) record(r CompactResult, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.passes++
	c.total += r.Took
	c.longest = max(c.longest, r.Took)
	if err != nil {
		c.failures++
	}
}

// sweepRows is how many candidates a pass reads at a time, and
// sweepBudget how many seqs of the log one group of them may span: a group
// goes to the writer as one run of requests, which it writes in one batch.
const (
	sweepRows   = 256
	sweepBudget = 1024
)

// The candidates of a pass, oldest first, with the seqs they span: $1 the
// cutoff, $2 the limit. The partial indexes finished_messages and
// tombstones serve them.
const (
	finishedBeforeSQL = `SELECT c.name, m.message_id, m.last_seq - m.received_seq FROM messages m
		JOIN conversations c ON c.id = m.conversation_id
		WHERE m.status = 4 AND NOT m.compacted AND m.last_ts < $1 ORDER BY m.last_ts LIMIT $2`
	tombstonesBeforeSQL = `SELECT c.name, m.message_id, 0 FROM messages m
		JOIN conversations c ON c.id = m.conversation_id
		WHERE m.compacted AND m.last_ts < $1 ORDER BY m.last_ts LIMIT $2`
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
	s.compacting.record(res, err)
	return res, err
}

// sweep hands the writer every message that the query candidates finds, in
// groups, and waits for each group to be done before it sends the next.
// Returns how many of them the writer changed.
func (s *Store) sweep(ctx context.Context, candidates string, drop bool, cutoff int64) (int64, error) {
	var done int64
	for {
		rows, err := s.pool.Query(ctx, candidates, cutoff, sweepRows)
		if err != nil {
			return done, unavailable("find what to compact", err)
		}
		var reqs []*request
		var widths []int64
		for rows.Next() {
			r := &request{maint: &maintenance{drop: drop, cutoff: cutoff}}
			var width int64
			if err := rows.Scan(&r.cmd.Conversation, &r.cmd.MessageID, &width); err != nil {
				rows.Close()
				return done, unavailable("find what to compact", err)
			}
			reqs, widths = append(reqs, r), append(widths, width)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return done, unavailable("find what to compact", err)
		}
		var changed int64
		page := len(reqs)
		for len(reqs) > 0 {
			n, span := 0, int64(0)
			for n < len(reqs) && (n == 0 || span+widths[n] <= sweepBudget) {
				span += widths[n] + 1
				n++
			}
			c, err := s.maintainAll(ctx, reqs[:n])
			changed += c
			if err != nil {
				return done + changed, err
			}
			reqs, widths = reqs[n:], widths[n:]
		}
		done += changed
		// A short page was the last; a page of which nothing changed holds
		// what the writer left for the next pass.
		if page < sweepRows || changed == 0 {
			return done, nil
		}
	}
}

// maintainAll hands reqs to the writer and waits for their answers.
// Returns how many of them changed something, and the first error.
func (s *Store) maintainAll(ctx context.Context, reqs []*request) (int64, error) {
	var wg sync.WaitGroup
	wg.Add(len(reqs))
	for _, r := range reqs {
		r.then = func(conversation.Outcome, error) { wg.Done() }
	}
	s.enqueue(ctx, reqs)
	wg.Wait()
	var n int64
	for _, r := range reqs {
		if r.err != nil {
			return n, r.err
		}
		if r.out.Append {
			n++
		}
	}
	return n, nil
}

// compactLoop runs compaction passes while the retention in force keeps
// less than everything, every Retention.every, and at once when it
// changes.
func (s *Store) compactLoop() {
	t := time.NewTimer(time.Hour)
	t.Stop()
	failing := false
	for {
		select {
		case <-s.stop:
			return
		case <-s.retained:
		case <-t.C:
		}
		every := s.Retention().every()
		if every == 0 {
			continue
		}
		res, err := s.Compact(context.Background())
		switch {
		case err != nil && !failing:
			s.log.Warn("compaction stopped; it tries again", "err", err, "every", every)
		case err == nil && failing:
			s.log.Info("compaction works again")
		}
		failing = err != nil
		if res.Compacted > 0 || res.Dropped > 0 {
			s.log.Debug("compaction", "compacted", res.Compacted, "dropped", res.Dropped, "took", res.Took)
		}
		t.Reset(every)
	}
}
