package daemon

import (
	"context"

	"liminald/conversation"
	"liminald/internal/storestats"
	"liminald/ipc"
	"liminald/pgstore"
	"liminald/sqlitestore"
)

// runningStore is what the daemon needs of its store beside what the
// server needs: the live settings, the queue's depth for the metrics, and
// Close. The db setting picks the store: a SQLite file, or a PostgreSQL
// URL (IsPostgres).
type runningStore interface {
	ipc.Store
	SetMaxAttempts(int64)
	SetRetention(conversation.Retention)
	QueueDepth() int
	Close() error
}

// store adapts *sqlitestore.Store to the ipc.Store the server needs: the
// two differ only in the concrete types of a subscription and of the stats.
type store struct{ *sqlitestore.Store }

var _ runningStore = store{}

// Served returns s as the ipc.Store a server serves: what the daemon does
// with its store, for tests that serve one themselves.
func Served(s *sqlitestore.Store) ipc.Store { return store{s} }

func (s store) Subscribe(capacity int) ipc.Subscription { return s.Store.Subscribe(capacity) }

func (s store) Stats(ctx context.Context) (ipc.StoreStats, error) { return served(s.Store.Stats(ctx)) }

// served is a store's figures as the server reports them.
func served(st storestats.Stats, err error) (ipc.StoreStats, error) {
	return ipc.StoreStats{
		Conversations: st.Conversations, Messages: st.Messages, Events: st.Events, DBBytes: st.DBBytes,
		Commits: st.Commits, FailedBatches: st.FailedBatches, Requests: st.Requests, Appended: st.Appended,
		MaxBatch: st.MaxBatch, CommitTotal: st.CommitTotal, CommitMax: st.CommitMax,
		Compacted: st.Compacted, Tombstones: st.Tombstones, Dropped: st.Dropped, Horizon: st.Horizon,
		CompactionPasses: st.CompactionPasses, CompactionFailures: st.CompactionFailures,
		CompactionTotal: st.CompactionTotal, CompactionMax: st.CompactionMax,
	}, err
}

// pgStore adapts *pgstore.Store as store does *sqlitestore.Store.
type pgStore struct{ *pgstore.Store }

var _ runningStore = pgStore{}

// ServedPostgres returns s as the ipc.Store a server serves, as Served.
func ServedPostgres(s *pgstore.Store) ipc.Store { return pgStore{s} }

func (s pgStore) Subscribe(capacity int) ipc.Subscription { return s.Store.Subscribe(capacity) }

func (s pgStore) Stats(ctx context.Context) (ipc.StoreStats, error) {
	return served(s.Store.Stats(ctx))
}
