package pgstore

import (
	"context"
	"testing"
)

// TestOpen_CustomPlans: the store's connections plan every statement for
// its arguments (plan_cache_mode force_custom_plan, set once connected, as
// a pooler refuses it as a startup parameter), unless the URL says
// otherwise.
func TestOpen_CustomPlans(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	for _, c := range []struct{ url, want string }{
		{db.url, "force_custom_plan"},
		{db.url + "&plan_cache_mode=auto", "auto"},
	} {
		s, err := Open(ctx, c.url, Options{manualCompaction: true})
		if err != nil {
			t.Fatal(err)
		}
		var mode string
		err = s.pool.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&mode)
		s.Close()
		if err != nil || mode != c.want {
			t.Errorf("%s: plan_cache_mode %q, %v; want %q", c.url, mode, err, c.want)
		}
	}
}
