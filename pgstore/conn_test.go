package pgstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"liminald/conversation"
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
		s, err := Open(ctx, c.url, Options{manualCompaction: true})
		if err != nil {
			t.Fatal(err)
		}
		for name, want := range c.want {
			var got string
			if err := s.pool.QueryRow(ctx, "SHOW "+name).Scan(&got); err != nil || got != want {
				t.Errorf("%s: %s %q, %v; want %q", c.url, name, got, err, want)
			}
		}
		s.Close()
	}
}

// TestWriter_FindsRowsByTheirKeys: a batch reads the messages and steps
// its requests name by their whole keys, never by sequential scans, however
// many messages their conversation holds and whatever statistics the
// tables have (none here: no ANALYZE ran). Joined to the list of keys, the
// lookups were planned, on small tables, as scans of the conversation's
// every message and step, which grew with it.
func TestWriter_FindsRowsByTheirKeys(t *testing.T) {
	db := newTestDB(t)
	const existing, written = 300, 20
	ctx := context.Background()
	s, err := Open(ctx, db.url, Options{manualCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range existing {
		mustWrite(t, s, cmd(conversation.OpReceive, fmt.Sprint("m", i)))
		mustWrite(t, s, cmd(conversation.OpStart, fmt.Sprint("m", i)))
		mustWrite(t, s, step(fmt.Sprint("m", i), 0, "x"))
	}
	s.Close()
	before := scans(t, db)

	if s, err = Open(ctx, db.url, Options{manualCompaction: true}); err != nil {
		t.Fatal(err)
	}
	for i := range written {
		m := fmt.Sprint("m", i)
		mustWrite(t, s, step(m, 0, "x")) // a duplicate: reads the step
		mustWrite(t, s, step(m, 1, "y"))
		mustWrite(t, s, cmd(conversation.OpFinish, m))
	}
	s.Close()
	after := scans(t, db)

	for _, table := range []string{"messages", "steps", "events"} {
		if d := after[table].seq - before[table].seq; d != 0 {
			t.Errorf("%s: %d sequential scans", table, d)
		}
	}
	// Each write reads its message, and a step its step and its event:
	// about 3 × written rows fetched from each table; scans by the
	// conversation alone fetch existing rows for each.
	for _, table := range []string{"messages", "steps"} {
		if d := after[table].fetched - before[table].fetched; d > 10*written {
			t.Errorf("%s: %d rows fetched by index for %d writes of %d messages, of %d in the conversation", table, d, 3*written, written, existing)
		}
	}
}

type tableScans struct{ seq, fetched int64 }

// scans reads the statistics of the store's tables, from a connection of
// its own, once every other connection to the database ended: a server
// process flushes its statistics as it ends, before it leaves
// pg_stat_activity.
func scans(t *testing.T, db *testDB) map[string]tableScans {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for others := 1; others > 0; time.Sleep(time.Millisecond) {
		err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`).Scan(&others)
		if err != nil {
			t.Fatal(err)
		}
	}
	rows, _ := conn.Query(ctx, `SELECT relname, coalesce(seq_scan, 0), coalesce(idx_tup_fetch, 0) FROM pg_stat_user_tables`)
	got := make(map[string]tableScans)
	var name string
	var s tableScans
	_, err = pgx.ForEachRow(rows, []any{&name, &s.seq, &s.fetched}, func() error {
		got[name] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}
