package pgstore

import (
	"context"
	"reflect"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"liminald/conversation"
	"liminald/pgtest"
)

// testDB is a database on a throwaway server for one test.
type testDB struct {
	srv *pgtest.Server
	url string
}

// newTestDB starts a server for tb (pgtest.Start) and returns its database.
func newTestDB(tb testing.TB) *testDB {
	tb.Helper()
	srv := pgtest.Start(tb)
	return &testDB{srv: srv, url: srv.URL("postgres")}
}

// mustOpen opens a store on db, closed and checked at cleanup: every
// conversation's stored state equals the replay of its log, and Check
// finds no problem.
func mustOpen(tb testing.TB, db *testDB, opts Options) *Store {
	tb.Helper()
	s, err := Open(context.Background(), db.url, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", db.url, err)
	}
	tb.Cleanup(func() {
		mustCheck(tb, s)
		if r, err := Check(context.Background(), db.url, nil); err != nil || len(r.Problems) > 0 {
			tb.Errorf("Check: %v, %+v", err, r)
		}
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

// openStore opens a store on the database at url for a test that closes it itself (Close
// may be called again): cleanup closes it, without mustOpen's checks.
func openStore(tb testing.TB, url string, opts Options) *Store {
	tb.Helper()
	s, err := Open(context.Background(), url, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", url, err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// listenersSQL counts the connections listening for the stores'
// notifications.
const listenersSQL = `SELECT count(*) FROM pg_stat_activity WHERE query = 'LISTEN ` + notifyChannel + `'`

// waitCount waits until the count that query returns, on a connection of
// its own to db, is want; it fails tb if that takes over 10 s.
func (db *testDB) waitCount(tb testing.TB, query string, want int) {
	tb.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, query).Scan(&n); err != nil {
			tb.Fatal(err)
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s: %d, want %d", query, n, want)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
}

// mustCheck fails tb unless the state the store serves for every
// conversation without compacted messages equals the replay of its log,
// and the totals count what the tables hold.
func mustCheck(tb testing.TB, s *Store) {
	tb.Helper()
	ctx := context.Background()
	convs, err := s.Conversations(ctx, "", 1<<20)
	if err != nil {
		tb.Errorf("check: %v", err)
		return
	}
	for _, c := range convs {
		if c.Compacted > 0 {
			continue
		}
		events, err := s.Events(ctx, c.Name, 0, 1<<20)
		if err != nil {
			tb.Errorf("check: %v", err)
			return
		}
		replay, err := conversation.Replay(c.Name, events)
		if err != nil {
			tb.Errorf("check: conversation %q does not replay: %v", c.Name, err)
			continue
		}
		if replay.Next != c.Next || replay.Counts != c.Counts {
			tb.Errorf("check: conversation %q stores next %d, %+v; its replay %d, %+v", c.Name, c.Next, c.Counts, replay.Next, replay.Counts)
		}
		stored, err := s.Messages(ctx, c.Name, "", "", 1<<20, s.Moment())
		if err != nil {
			tb.Errorf("check: %v", err)
			return
		}
		if len(stored) != len(replay.Messages) {
			tb.Errorf("check: conversation %q stores %d messages, its replay %d", c.Name, len(stored), len(replay.Messages))
		}
		for _, m := range stored {
			if want := replay.Messages[m.ID]; want == nil || !reflect.DeepEqual(m, *want) {
				tb.Errorf("check: message %q of %q stored as %+v, replayed as %+v", m.ID, c.Name, m, want)
			}
		}
	}
	var st [3]int64
	err = s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM conversations) - conversations, (SELECT count(*) FROM messages) - messages,
		(SELECT count(*) FROM events) - events FROM positions`).Scan(&st[0], &st[1], &st[2])
	if err != nil {
		tb.Errorf("check: %v", err)
	} else if st != [3]int64{} {
		tb.Errorf("check: the tables hold more conversations, messages and events than the totals count by %v", st)
	}
}

// mustWrite runs c and fails tb on an error.
func mustWrite(tb testing.TB, s *Store, c conversation.Command) conversation.Outcome {
	tb.Helper()
	out, err := s.Write(context.Background(), c)
	if err != nil {
		tb.Fatalf("Write(%+v): %v", c, err)
	}
	return out
}

func mustEvents(tb testing.TB, s *Store, conv string) []conversation.Event {
	tb.Helper()
	events, err := s.Events(context.Background(), conv, 0, 1<<20)
	if err != nil {
		tb.Fatalf("Events(%q): %v", conv, err)
	}
	return events
}

// cmd builds a command of op for message m of conversation "c".
func cmd(op conversation.Op, m string) conversation.Command {
	return conversation.Command{Op: op, Conversation: "c", MessageID: m, ExpectedSeq: conversation.NoExpectedSeq}
}

func step(m string, index uint32, output string) conversation.Command {
	c := cmd(conversation.OpStep, m)
	c.StepIndex, c.Output = index, []byte(output)
	return c
}

func fail(m, text string) conversation.Command {
	c := cmd(conversation.OpFail, m)
	c.Error = text
	return c
}

func expect(c conversation.Command, seq int64) conversation.Command {
	c.ExpectedSeq = seq
	return c
}

func leasedStart(m, worker string, lease time.Duration) conversation.Command {
	c := cmd(conversation.OpStart, m)
	c.Worker, c.LeaseMS = worker, lease.Milliseconds()
	return c
}

func withToken(c conversation.Command, token int64) conversation.Command {
	c.Token, c.HasToken = token, true
	return c
}

// offsetClock moves the database's clock as the store sees it: Options'
// ClockOffset.
type offsetClock struct{ d atomic.Int64 }

func (c *offsetClock) offset() time.Duration   { return time.Duration(c.d.Load()) }
func (c *offsetClock) advance(d time.Duration) { c.d.Add(int64(d)) }
