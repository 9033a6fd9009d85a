package pgstore

import (
	"context"
	"time"

	"liminald/internal/storestats"
)

// Stats are the figures of a store.
type Stats = storestats.Stats

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
	s.stats.Fill(&st)
	st.CompactionPasses, st.CompactionFailures, st.CompactionTotal, st.CompactionMax = s.compacting.Read()
	return st, nil
}
