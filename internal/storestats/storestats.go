// Package storestats holds the figures every store reports for the stats
// op and the metrics (SPEC §3, §8), and the writer's part of them, the same
// for every store, so that the daemon reads them one way.
package storestats

import (
	"sync"
	"time"

	"liminald/conversation"
)

// Stats are the figures of a store: those of its database, and those of
// the store since it opened.
type Stats struct {
	Conversations int64 // in the database
	Messages      int64
	Events        int64
	DBBytes       int64 // the database's size: the SQLite file and its WAL, or PostgreSQL's pg_database_size
	Uptime        time.Duration

	// Since the store opened:
	Commits       int64         // transactions committed
	FailedBatches int64         // batches answered with an error
	Requests      int64         // write requests answered by committed batches
	Appended      int64         // events appended
	MaxBatch      int           // most requests in one transaction
	CommitTotal   time.Duration // time spent writing and committing batches
	CommitMax     time.Duration // longest batch
	// UnreportedBatches counts the batches not reported to the SQLite
	// store's Options.OnBatch because it was too far behind.
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

// Commits are a writer's figures since the store opened.
type Commits struct {
	mu          sync.Mutex
	commits     int64
	failures    int64
	requests    int64
	appended    int64
	maxBatch    int
	commitTotal time.Duration
	commitMax   time.Duration
}

// Record counts a committed batch of requests that appended events and
// took d.
func (c *Commits) Record(requests, events int, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commits++
	c.requests += int64(requests)
	c.appended += int64(events)
	c.maxBatch = max(c.maxBatch, requests)
	c.commitTotal += d
	c.commitMax = max(c.commitMax, d)
}

// Fail counts a batch answered with an error.
func (c *Commits) Fail() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures++
}

// Fill sets the writer's figures of st.
func (c *Commits) Fill(st *Stats) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st.Commits, st.FailedBatches, st.Requests, st.Appended = c.commits, c.failures, c.requests, c.appended
	st.MaxBatch, st.CommitTotal, st.CommitMax = c.maxBatch, c.commitTotal, c.commitMax
}
