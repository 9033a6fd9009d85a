package pgstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"liminald/conversation"
)

// toVersion1 turns a database of schema version 2 back into what version
// 1's schema.sql made: retention's indexes on last_ts, no finished_ts, the
// default fillfactor.
const toVersion1 = `
ALTER TABLE messages DROP COLUMN finished_ts;
ALTER TABLE messages RESET (fillfactor);
CREATE INDEX finished_messages ON messages (last_ts) WHERE status = 4 AND NOT compacted;
CREATE INDEX tombstones ON messages (last_ts) WHERE compacted;
UPDATE liminald_schema SET version = 1 WHERE id = 1;`

func mustExec(tb testing.TB, url, sql string, args ...any) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		tb.Fatalf("%s: %v", sql, err)
	}
}

// TestOpen_MigratesVersion1 opens a database of schema version 1 holding a
// finished message, a tombstone and a message in progress: Open brings it
// to version 2 and what it holds stays, the offline tools refuse it until
// then, and retention finds its finished messages and tombstones by the
// new indexes.
func TestOpen_MigratesVersion1(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	clock := &offsetClock{}
	s, err := Open(ctx, db.url, Options{ClockOffset: clock.offset, manualCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	mustLifecycle(t, s, "c", "gone", 1)
	clock.advance(time.Hour)
	s.SetRetention(Retention{Finished: time.Minute})
	if r := mustCompact(t, s); r.Compacted != 1 {
		t.Fatalf("Compact = %+v, want gone compacted", r)
	}
	mustLifecycle(t, s, "c", "done", 2)
	mustWrite(t, s, cmd(conversation.OpReceive, "open"))
	before := mustEvents(t, s, "c")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mustExec(t, db.url, toVersion1)
	if _, err := Check(ctx, db.url, nil); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("Check on version 1 = %v, want it refused until a daemon migrates it", err)
	}

	s = mustOpen(t, db, Options{ClockOffset: clock.offset, manualCompaction: true})
	var version int
	finished := make(map[string]*int64)
	conn := s.pool
	if err := conn.QueryRow(ctx, `SELECT version FROM liminald_schema`).Scan(&version); err != nil || version != SchemaVersion {
		t.Fatalf("schema version %d, %v after Open; want %d", version, err, SchemaVersion)
	}
	rows, _ := conn.Query(ctx, `SELECT message_id, finished_ts, last_ts FROM messages`)
	var id string
	var ts *int64
	var last int64
	if _, err := pgx.ForEachRow(rows, []any{&id, &ts, &last}, func() error {
		finished[id] = ts
		if ts != nil && *ts != last {
			t.Errorf("%s: finished_ts %d, last_ts %d", id, *ts, last)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(finished) != 3 || finished["gone"] == nil || finished["done"] == nil || finished["open"] != nil {
		t.Fatalf("finished_ts after the migration: %v; want gone's and done's, none for open", finished)
	}
	if after := mustEvents(t, s, "c"); len(after) != len(before) {
		t.Fatalf("%d events after the migration, %d before", len(after), len(before))
	}

	clock.advance(time.Hour)
	s.SetRetention(Retention{Finished: time.Minute, Tombstones: 90 * time.Minute})
	if r := mustCompact(t, s); r.Compacted != 1 || r.Dropped != 1 {
		t.Fatalf("Compact after the migration = %+v, want done compacted and gone's tombstone dropped", r)
	}
	d, err := s.Decide(ctx, "c", "done", conversation.Delivery{})
	if err != nil || d.Action != conversation.Skip {
		t.Fatalf("decide done after compaction = %+v, %v; want skip", d, err)
	}
}

// TestStore_MessageUpdatesAreHOT writes a message's lifecycle and reads
// the messages table's page: every update before the finish (the start
// and each step) is a heap-only tuple, written beside the row it replaces
// without new index entries, so that the table and its indexes do not
// swell with dead rows under load (PostgreSQL's HOT).
func TestStore_MessageUpdatesAreHOT(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	s := mustOpen(t, db, Options{manualCompaction: true})
	mustLifecycle(t, s, "c", "m", 3)

	if _, err := s.pool.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pageinspect`); err != nil {
		t.Fatal(err)
	}
	// t_infomask2's HEAP_ONLY_TUPLE bit (0x8000) marks a HOT update's new
	// row; a line pointer of flag 2 redirects to one, once pruning
	// removed the row it replaced.
	var hot, rows int
	err := s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE t_infomask2 & 32768 <> 0), count(*)
		FROM heap_page_items(get_raw_page('messages', 0))`).Scan(&hot, &rows)
	if err != nil {
		t.Fatal(err)
	}
	// receive inserts; start and 3 steps update in place; finish sets
	// finished_ts, which an index covers.
	if hot < 4 {
		t.Fatalf("%d of the %d row versions of the message are heap-only; want at least 4 (its start and 3 steps)", hot, rows)
	}
}
