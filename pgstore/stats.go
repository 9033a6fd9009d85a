package pgstore

import (
	"context"
	"sync"
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

// Stats are the figures of a store: those of the database, which every
// daemon on it shares, and those of this store since it opened.
type Stats struct {
	Conversations int64 // in the database
	Messages      int64
	Events        int64
	DBBytes       int64 // pg_database_size of the database
	Uptime        time.Duration

	// Since the store opened:
	Commits       int64         // transactions committed
	FailedBatches int64         // batches answered with an error
	Requests      int64         // write requests answered by committed batches
	Appended      int64         // events appended
	MaxBatch      int           // most requests in one transaction
	CommitTotal   time.Duration // time spent writing and committing batches
	CommitMax     time.Duration // longest batch

	// Retention (SPEC §8), in the database:
	Compacted  int64
	Tombstones int64
	Dropped    int64
	Horizon    conversation.Horizon
	// and since the store opened:
	CompactionPasses   int64
	CompactionFailures int64
	CompactionTotal    time.Duration
	CompactionMax      time.Duration
}

// Stats returns the store's figures.
func (s *Store) Stats(ctx context.Context) (Stats, error) {
	var st Stats
	err := s.pool.QueryRow(ctx, `SELECT conversations, messages, events, compacted, tombstones, dropped, forgotten_before,
		pg_database_size(current_database()) FROM positions WHERE id = 1`).
		Scan(&st.Conversations, &st.Messages, &st.Events, &st.Compacted, &st.Tombstones, &st.Dropped, scanHorizon{&st.Horizon}, &st.DBBytes)
	if err != nil {
		return st, unavailable("read totals", err)
	}
	st.Uptime = time.Since(s.opened)
	c := &s.stats
	c.mu.Lock()
	st.Commits, st.FailedBatches, st.Requests, st.Appended = c.commits, c.failures, c.requests, c.appended
	st.MaxBatch, st.CommitTotal, st.CommitMax = c.maxBatch, c.commitTotal, c.commitMax
	c.mu.Unlock()
	st.CompactionPasses, st.CompactionFailures, st.CompactionTotal, st.CompactionMax = s.compacting.Read()
	return st, nil
}
