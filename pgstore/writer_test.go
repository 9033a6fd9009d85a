package pgstore

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"liminald/conversation"
)

// TestWriter_KnownConversationGone: a batch skips the insert of the
// conversations the store knows; when one of them is gone all the same (a
// database restored under the daemon), the batch is written again and
// creates it.
func TestWriter_KnownConversationGone(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	s := openStore(t, db.url, Options{manualCompaction: true})
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	if got := s.known.unknown([]string{"c"}); len(got) != 0 {
		t.Fatalf("after a write to c, unknown conversations %q", got)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM events; DELETE FROM messages; DELETE FROM conversations`); err != nil {
		t.Fatal(err)
	}
	out := mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	if out.Decision.Action != conversation.Start || out.Seq != 0 {
		t.Errorf("receive after the conversation was deleted: %+v; want a start at seq 0", out)
	}
	if c, err := s.Conversation(ctx, "c"); err != nil || c.Next != 1 {
		t.Errorf("conversation c: %+v, %v; want next 1", c, err)
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
	s := openStore(t, db.url, Options{manualCompaction: true})
	for i := range existing {
		mustWrite(t, s, cmd(conversation.OpReceive, fmt.Sprint("m", i)))
		mustWrite(t, s, cmd(conversation.OpStart, fmt.Sprint("m", i)))
		mustWrite(t, s, step(fmt.Sprint("m", i), 0, "x"))
	}
	s.Close()
	before := scans(t, db)

	s = openStore(t, db.url, Options{manualCompaction: true})
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
	db.waitCount(t, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'`, 0)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
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
