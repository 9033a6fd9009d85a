package sqlitestore

import (
	"context"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"liminald/conversation"
)

// commitStats are the writer's figures since the store opened.
type commitStats struct {
	mu          sync.Mutex
	commits     int64
	failures    int64
	requests    int64
	appended    int64
	maxBatch    int
	commitTotal time.Duration
	commitMax   time.Duration
	// unreported counts the batches OnBatch was not told of.
	unreported atomic.Int64
}

func (c *commitStats) record(requests, events int, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commits++
	c.requests += int64(requests)
	c.appended += int64(events)
	c.maxBatch = max(c.maxBatch, requests)
	c.commitTotal += d
	c.commitMax = max(c.commitMax, d)
}

func (c *commitStats) fail() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures++
}

// Stats are the figures of a store.
type Stats struct {
	Conversations int64 // in the database
	Messages      int64
	Events        int64
	DBBytes       int64 // the database file and its WAL
	Uptime        time.Duration

	// Since the store opened:
	Commits       int64         // transactions committed
	FailedBatches int64         // transactions rolled back
	Requests      int64         // write requests answered by committed batches
	Appended      int64         // events appended
	MaxBatch      int           // most requests in one transaction
	CommitTotal   time.Duration // time spent writing and committing batches
	CommitMax     time.Duration // longest batch
	// UnreportedBatches counts the batches not reported to Options.OnBatch
	// because it was too far behind.
	UnreportedBatches int64

	// Retention (SPEC §8), in the database:
	Compacted  int64                // messages ever compacted
	Tombstones int64                // tombstones kept
	Dropped    int64                // tombstones ever dropped
	Horizon    conversation.Horizon // the newest forgotten_before of any conversation
	// and since the store opened:
	CompactionPasses   int64
	CompactionFailures int64         // passes ended by an error
	CompactionTotal    time.Duration // time spent in passes
	CompactionMax      time.Duration // the longest pass
}

// Stats returns the store's figures.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.rdb.QueryRowContext(ctx, `SELECT conversations, messages, events, compacted, tombstones, dropped, forgotten_before
		FROM totals WHERE id = 1`).
		Scan(&st.Conversations, &st.Messages, &st.Events, &st.Compacted, &st.Tombstones, &st.Dropped, scanHorizon{&st.Horizon})
	if err != nil {
		return st, unavailable("read totals", err)
	}
	for _, suffix := range []string{"", "-wal"} {
		if fi, err := os.Stat(s.path + suffix); err == nil {
			st.DBBytes += fi.Size()
		}
	}
	st.Uptime = time.Since(s.opened)
	c := &s.stats
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Commits, st.FailedBatches, st.Requests, st.Appended = c.commits, c.failures, c.requests, c.appended
	st.MaxBatch, st.CommitTotal, st.CommitMax = c.maxBatch, c.commitTotal, c.commitMax
	st.UnreportedBatches = c.unreported.Load()
	st.CompactionPasses, st.CompactionFailures, st.CompactionTotal, st.CompactionMax = s.compacting.Read()
	return st, nil
}
