// Package compaction is the part of retention's background work (SPEC §8)
// that does not depend on where the log is kept: the loop that runs a
// pass every conversation.Retention.Every, a pass's walk over its
// candidates in groups small enough to hold a store's writer for a few
// milliseconds, and the figures stats reports. The rules of what may go
// live in package conversation; a store finds the candidates and has its
// writer judge and change each one.
package compaction

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"liminald/conversation"
)

// Setting is the retention in force in a store, which may change while it
// runs; the zero Setting keeps everything.
type Setting struct {
	r    atomic.Pointer[conversation.Retention]
	wake chan struct{} // made on the first Set
	once sync.Once
}

// Set sets r from now on, and wakes Loop to apply it.
func (s *Setting) Set(r conversation.Retention) {
	s.r.Store(&r)
	select {
	case s.changed() <- struct{}{}:
	default:
	}
}

// Get returns the retention in force.
func (s *Setting) Get() conversation.Retention {
	if r := s.r.Load(); r != nil {
		return *r
	}
	return conversation.Retention{}
}

func (s *Setting) changed() chan struct{} {
	s.once.Do(func() { s.wake = make(chan struct{}, 1) })
	return s.wake
}

// Result is what one compaction pass did.
type Result struct {
	Compacted int64         // messages compacted into tombstones
	Dropped   int64         // tombstones dropped
	Took      time.Duration // the whole pass
}

// Stats are compaction's figures since the store opened.
type Stats struct {
	mu             sync.Mutex
	passes         int64
	total, longest time.Duration
	failures       int64
}

// Record counts pass r, failed when err is not nil.
func (c *Stats) Record(r Result, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.passes++
	c.total += r.Took
	c.longest = max(c.longest, r.Took)
	if err != nil {
		c.failures++
	}
}

// Read returns the passes, the failed ones, their total and longest time.
func (c *Stats) Read() (passes, failures int64, total, longest time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.passes, c.failures, c.total, c.longest
}

// Rows is how many candidates a pass reads at a time, and Budget how many
// seqs of the log one group of them may span: a group goes to the writer
// as one run of requests, which it writes in one batch beside the clients'
// writes, and the next group waits for that batch. Small groups spread a
// pass over many batches, each a little longer: with 64, compaction under
// a steady load left the clients' p99 as it was and their p99.9 within
// 1.2x (docs/BENCHMARKS.md, the soak); with 1,024 (a few milliseconds of
// deletes in one batch) p99.9 rose by 1.2-1.6x.
const (
	Rows   = 256
	Budget = 64
)

// Candidate is a message a pass may compact, or whose tombstone it may
// drop, with the seqs of the log it spans.
type Candidate struct {
	Conversation, MessageID string
	Width                   int64
}

// Scanner is a query's rows, of database/sql or of pgx.
type Scanner interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanCandidates reads the candidates of rows, each a conversation's
// name, a message id and the seqs it spans. The caller closes rows.
func ScanCandidates(rows Scanner) ([]Candidate, error) {
	var cands []Candidate
	for rows.Next() {
		var c Candidate
		if err := rows.Scan(&c.Conversation, &c.MessageID, &c.Width); err != nil {
			return nil, err
		}
		cands = append(cands, c)
	}
	return cands, rows.Err()
}

// Sweep hands apply every candidate that page finds (the oldest first, at
// most Rows of them), in groups that span at most Budget seqs (a group has
// at least one), and waits for each group to be done before it sends the
// next. apply returns how many of its group it changed. Returns how many
// were changed in all; an error of page or apply ends the sweep.
func Sweep(ctx context.Context, page func(ctx context.Context, limit int) ([]Candidate, error),
	apply func(ctx context.Context, group []Candidate) (int64, error)) (int64, error) {
	var done int64
	for {
		cands, err := page(ctx, Rows)
		if err != nil {
			return done, err
		}
		var changed int64
		n := len(cands)
		for len(cands) > 0 {
			g, span := 0, int64(0)
			for g < len(cands) && (g == 0 || span+cands[g].Width <= Budget) {
				span += cands[g].Width + 1
				g++
			}
			c, err := apply(ctx, cands[:g])
			changed += c
			if err != nil {
				return done + changed, err
			}
			cands = cands[g:]
		}
		done += changed
		// A short page was the last; a page of which nothing changed
		// holds what the writer left for the next pass.
		if n < Rows || changed == 0 {
			return done, nil
		}
	}
}

// Apply has each candidate of group judged and changed by the request
// that request makes of it (then answers it), hands the requests to
// enqueue, which answers every one, and waits for their answers. Returns
// how many of them changed something (appended, in the writer's terms),
// and the first error.
func Apply[R any](ctx context.Context, group []Candidate, request func(c Candidate, then func(conversation.Outcome, error)) R,
	enqueue func(ctx context.Context, reqs []R)) (int64, error) {
	outs, errs := make([]conversation.Outcome, len(group)), make([]error, len(group))
	reqs := make([]R, len(group))
	var wg sync.WaitGroup
	wg.Add(len(group))
	for i, c := range group {
		reqs[i] = request(c, func(out conversation.Outcome, err error) {
			outs[i], errs[i] = out, err
			wg.Done()
		})
	}
	enqueue(ctx, reqs)
	wg.Wait()
	var n int64
	for i := range group {
		if errs[i] != nil {
			return n, errs[i]
		}
		if outs[i].Append {
			n++
		}
	}
	return n, nil
}

// Loop runs pass while the retention in force (set) keeps less than
// everything, every Retention.Every, and at once when it changes, until
// stop is closed. It logs on log when passes begin to fail and when they
// work again.
func Loop(stop <-chan struct{}, set *Setting, pass func(context.Context) (Result, error), log *slog.Logger) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	failing := false
	for {
		select {
		case <-stop:
			return
		case <-set.changed():
		case <-t.C:
		}
		every := set.Get().Every()
		if every == 0 {
			continue
		}
		res, err := pass(context.Background())
		switch {
		case err != nil && !failing:
			log.Warn("compaction stopped; it tries again", "err", err, "every", every)
		case err == nil && failing:
			log.Info("compaction works again")
		}
		failing = err != nil
		if res.Compacted > 0 || res.Dropped > 0 {
			log.Debug("compaction", "compacted", res.Compacted, "dropped", res.Dropped, "took", res.Took)
		}
		t.Reset(every)
	}
}
