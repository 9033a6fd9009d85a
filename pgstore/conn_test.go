package pgstore

import (
	"context"
	"testing"
)

// TestOpen_PlanSettings: the store's connections plan each statement once,
// without sequential scans or hash and merge joins (planSettings, set once
// connected, as a pooler refuses them as startup parameters), except for
// a setting the URL gives.
func TestOpen_PlanSettings(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	for _, c := range []struct {
		url  string
		want map[string]string
	}{
		{db.url, map[string]string{"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off",
			"enable_hashjoin": "off", "enable_mergejoin": "off"}},
		{db.url + "&plan_cache_mode=auto", map[string]string{"plan_cache_mode": "auto", "enable_seqscan": "off"}},
	} {
		s := openStore(t, c.url, Options{manualCompaction: true})
		for name, want := range c.want {
			var got string
			if err := s.pool.QueryRow(ctx, "SHOW "+name).Scan(&got); err != nil || got != want {
				t.Errorf("%s: %s %q, %v; want %q", c.url, name, got, err, want)
			}
		}
		s.Close()
	}
}
