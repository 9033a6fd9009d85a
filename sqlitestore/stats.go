package sqlitestore

import (
	"context"
	"os"
	"time"

	"liminald/internal/storestats"
)

// Stats are the figures of a store.
type Stats = storestats.Stats

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
	s.stats.Fill(&st)
	st.UnreportedBatches = s.unreported.Load()
	st.CompactionPasses, st.CompactionFailures, st.CompactionTotal, st.CompactionMax = s.compacting.Read()
	return st, nil
}
