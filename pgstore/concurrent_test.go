package pgstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"liminald/conversation"
	"liminald/pgtest"
)

// TestStores_OneStart delivers each new message through two stores on
// one database (two daemons) at once, many times: exactly one receive is
// answered start, the others resume, and every conversation's seqs stay
// contiguous (mustCheck).
func TestStores_OneStart(t *testing.T) {
	db := newTestDB(t)
	stores := []*Store{mustOpen(t, db, Options{}), mustOpen(t, db, Options{})}
	const rounds, deliveries = 40, 8
	for round := range rounds {
		conv := fmt.Sprintf("c%d", round%5) // new conversations, then existing ones
		var wg sync.WaitGroup
		var mu sync.Mutex
		starts, resumes := 0, 0
		begin := make(chan struct{})
		for i := range deliveries {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-begin
				r := cmd(conversation.OpReceive, fmt.Sprintf("m%d", round))
				r.Conversation = conv
				o, err := stores[i%2].Write(context.Background(), r)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err != nil:
					t.Errorf("receive: %v", err)
				case o.Decision.Action == conversation.Start:
					starts++
				case o.Decision.Action == conversation.Resume && o.Decision.ResumeFrom == 0:
					resumes++
				default:
					t.Errorf("receive = %+v, want start or resume from 0", o)
				}
			}()
		}
		close(begin)
		wg.Wait()
		if starts != 1 || resumes != deliveries-1 {
			t.Fatalf("round %d: %d starts and %d resumes, want 1 and %d", round, starts, resumes, deliveries-1)
		}
	}
}

// TestStores_Contiguous writes whole lifecycles through two stores into a
// few shared conversations at once: each conversation's seqs are
// contiguous (mustCheck), and its events' positions grow with their seqs.
func TestStores_Contiguous(t *testing.T) {
	db := newTestDB(t)
	stores := []*Store{mustOpen(t, db, Options{}), mustOpen(t, db, Options{})}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				mustLifecycle(t, stores[w%2], fmt.Sprintf("c%d", w%3), fmt.Sprintf("w%d-m%d", w, i), 2)
			}
		}()
	}
	wg.Wait()
	for c := range 3 {
		events := mustEvents(t, stores[0], fmt.Sprintf("c%d", c))
		for i := 1; i < len(events); i++ {
			if events[i].Pos <= events[i-1].Pos {
				t.Fatalf("c%d: seq %d at pos %d after seq %d at pos %d", c, events[i].Seq, events[i].Pos, events[i-1].Seq, events[i-1].Pos)
			}
		}
	}
}

// TestStores_CommitOrder makes two batches commit out of the order they
// began in: the first holds its transaction open (its conversation locked,
// its rules applied) while the second, through another store, commits. The
// second gets the lower position, since positions are given at the tail;
// and a batch cannot take positions while another batch holds the
// positions row, so that one commits first.
func TestStores_CommitOrder(t *testing.T) {
	db := newTestDB(t)
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	first := mustOpen(t, db, Options{beforeTail: func() {
		once.Do(func() { close(held); <-release })
	}})
	second := mustOpen(t, db, Options{})
	ctx := context.Background()

	firstDone := make(chan conversation.Outcome)
	go func() {
		r := cmd(conversation.OpReceive, "m")
		r.Conversation = "a"
		firstDone <- mustWrite(t, first, r)
	}()
	<-held
	r := cmd(conversation.OpReceive, "m")
	r.Conversation = "b"
	mustWrite(t, second, r) // commits while the first is open
	close(release)
	<-firstDone
	events, err := second.EventsFrom(ctx, 0, 10)
	if err != nil || len(events) != 2 || events[0].Conversation != "b" || events[1].Conversation != "a" || events[0].Pos >= events[1].Pos {
		t.Fatalf("EventsFrom(0) = %+v, %v; want b's event, committed first, before a's", events, err)
	}

	// While a transaction holds the positions row, no batch commits.
	conn, err := pgx.Connect(ctx, db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `UPDATE positions SET next = next WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		r := cmd(conversation.OpReceive, "n")
		r.Conversation = "b"
		_, err := second.Write(ctx, r)
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("a write committed (%v) while another transaction held the positions row", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("write after the positions row was released: %v", err)
	}
}

// TestStores_NoMissedEvents writes through two stores at once while a
// reader polls EventsFrom and a subscription of a third store follows the
// feed: each sees every event exactly once, in pos order, though batches
// of the two stores commit in any order.
func TestStores_NoMissedEvents(t *testing.T) {
	db := newTestDB(t)
	writers := []*Store{mustOpen(t, db, Options{}), mustOpen(t, db, Options{})}
	reader := mustOpen(t, db, Options{Poll: 5 * time.Millisecond})
	ctx := context.Background()
	sub := reader.Subscribe(1 << 16)
	defer sub.Close()

	stop := make(chan struct{})
	polled := make(chan []conversation.Event)
	go func() {
		var seen []conversation.Event
		next := int64(0)
		for {
			select {
			case <-stop:
				// One last look: everything committed by now.
				for {
					events, err := reader.EventsFrom(ctx, next, 1000)
					if err != nil || len(events) == 0 {
						polled <- seen
						return
					}
					seen = append(seen, events...)
					next = events[len(events)-1].Pos + 1
				}
			default:
			}
			events, err := reader.EventsFrom(ctx, next, 1000)
			if err != nil {
				t.Errorf("EventsFrom: %v", err)
			}
			if len(events) > 0 {
				seen = append(seen, events...)
				next = events[len(events)-1].Pos + 1
			}
		}
	}()
	var wg sync.WaitGroup
	for w := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4 {
				mustLifecycle(t, writers[w%2], fmt.Sprintf("c%d", w), fmt.Sprintf("m%d", i), 1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	seen := <-polled
	all, err := reader.EventsFrom(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if want := 12 * 4 * 4; len(all) != want {
		t.Fatalf("%d events in the log, want %d", len(all), want)
	}
	samePositions := func(who string, got []conversation.Event) {
		t.Helper()
		if len(got) != len(all) {
			t.Errorf("%s saw %d events of %d", who, len(got), len(all))
		}
		for i := range min(len(got), len(all)) {
			if got[i].Pos != all[i].Pos {
				t.Errorf("%s: event %d at pos %d, want pos %d: it missed one", who, i, got[i].Pos, all[i].Pos)
				return
			}
		}
	}
	samePositions("the reader of EventsFrom", seen)
	var fed []conversation.Event
	deadline := time.After(10 * time.Second)
	for len(fed) < len(all) {
		select {
		case batch, ok := <-sub.Events():
			if !ok {
				t.Fatalf("subscription ended (lagged %v) after %d events", sub.Lagged(), len(fed))
			}
			fed = append(fed, batch...)
		case <-deadline:
			t.Fatalf("the subscription got %d events of %d", len(fed), len(all))
		}
	}
	samePositions("the subscription", fed)
}

// TestStores_SubscriptionWakesOnNotify: an event written through one
// store reaches a subscription of another that does not poll (its poll is
// an hour): PostgreSQL's notification wakes it.
func TestStores_SubscriptionWakesOnNotify(t *testing.T) {
	db := newTestDB(t)
	writer := mustOpen(t, db, Options{})
	follower := mustOpen(t, db, Options{Poll: time.Hour})
	sub := follower.Subscribe(16)
	defer sub.Close()
	db.waitCount(t, listenersSQL, 1) // the follower listens; the writer, without subscriptions, does not
	mustWrite(t, writer, cmd(conversation.OpReceive, "m"))
	select {
	case batch := <-sub.Events():
		if len(batch) != 1 || batch[0].MessageID != "m" {
			t.Fatalf("subscription got %+v, want the receive of m", batch)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the event written through another store never reached the subscription")
	}
}

// TestStore_ServerRestart: while PostgreSQL is down, writes and reads
// answer unavailable; once it is back (an immediate-mode restart, as after
// a crash), the store works again by itself, and every acknowledged write
// is there.
func TestStore_ServerRestart(t *testing.T) {
	db := newTestDB(t)
	s := mustOpen(t, db, Options{WriteTimeout: 2 * time.Second})
	ctx := context.Background()
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	db.srv.Crash()
	if _, err := s.Write(ctx, cmd(conversation.OpStart, "m")); !errors.Is(err, conversation.ErrUnavailable) {
		t.Errorf("write while PostgreSQL is down: %v, want ErrUnavailable", err)
	}
	if _, err := s.Message(ctx, "c", "m"); !errors.Is(err, conversation.ErrUnavailable) {
		t.Errorf("read while PostgreSQL is down: %v, want ErrUnavailable", err)
	}
	db.srv.Start()
	var err error
	for range 100 {
		if _, err = s.Write(ctx, cmd(conversation.OpStart, "m")); err == nil || !errors.Is(err, conversation.ErrUnavailable) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("write after PostgreSQL came back: %v", err)
	}
	if events := mustEvents(t, s, "c"); len(events) != 2 {
		t.Fatalf("after the restart the log holds %d events, want 2", len(events))
	}
}

// TestStore_AcknowledgedWritesSurviveServerCrash: a write is answered only
// once its batch's commit is flushed to the WAL. With the WAL writer slowed
// to its longest delay, nothing but the commits themselves flushes the WAL
// (a tail that committed asynchronously, without a flush after it, lost
// 5 to 16 of these 20 writes): every acknowledged write must survive a
// crash of the server.
func TestStore_AcknowledgedWritesSurviveServerCrash(t *testing.T) {
	srv := pgtest.Start(t, "wal_writer_delay=10000ms")
	db := &testDB{srv: srv, url: srv.URL("postgres")}
	s, err := Open(context.Background(), db.url, Options{manualCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		mustWrite(t, s, cmd(conversation.OpReceive, fmt.Sprintf("m%d", i)))
	}
	srv.Crash()
	s.Close()
	srv.Start()
	s = mustOpen(t, db, Options{manualCompaction: true})
	if events := mustEvents(t, s, "c"); len(events) != n {
		t.Fatalf("%d events after a crash of the server, want the %d acknowledged", len(events), n)
	}
}

// TestStore_ListensOnlyForSubscriptions: a store listens for the other
// stores' notifications only while it has subscriptions, and stops at the
// first notification once it has none (every notification wakes each
// listener's server process), and again at its next subscription.
func TestStore_ListensOnlyForSubscriptions(t *testing.T) {
	db := newTestDB(t)
	s := mustOpen(t, db, Options{})
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	db.waitCount(t, listenersSQL, 0)
	sub := s.Subscribe(16)
	db.waitCount(t, listenersSQL, 1)
	sub.Close()
	mustWrite(t, s, cmd(conversation.OpStart, "m"))
	db.waitCount(t, listenersSQL, 0)
	// Having stopped, it listens again for a new subscription.
	sub = s.Subscribe(16)
	defer sub.Close()
	db.waitCount(t, listenersSQL, 1)
}
