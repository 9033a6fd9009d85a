package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/jackc/pgx/v5"

	"liminald/pgstore"
	"liminald/pgtest"
)

// TestPostgresAcrossDaemons runs three daemons on one PostgreSQL database
// (three hosts' sidecars, SPEC §10), with clients spread over their
// sockets: linearizability clients on one conversation and crash-test
// workers on three more. A third of the way through one daemon is killed
// with SIGKILL and restarted; two thirds of the way PostgreSQL is stopped
// as pg_ctl stop -m immediate does and started again, under the running
// daemons, which must reconnect by themselves (writes answer unavailable
// meanwhile: an unknown outcome). At the end the history must be
// linearizable across the daemons, every acknowledged write be in the log
// (verifyLedger), and the database hold, for every conversation, the
// state its log replays to, with positions contiguous and in seq order.
// The short variant records 800 calls (those answered unavailable while
// PostgreSQL was down among them), the long one 4 histories of 1500.
func TestPostgresAcrossDaemons(t *testing.T) {
	histories, total := 1, 800
	if long() {
		histories, total = 4, 1500
	}
	for i := range histories {
		t.Run(fmt.Sprintf("history%d", i), func(t *testing.T) { pgRun(t, total) })
	}
}

func pgRun(t *testing.T, total int) {
	began := time.Now()
	const daemons, clients, workers, convs = 3, 9, 6, 3
	seed := uint64(time.Now().UnixNano())
	srv := pgtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { admin.Close(context.Background()) }()

	ds := make([]*daemon, daemons)
	for i := range ds {
		app := fmt.Sprintf("liminald-d%d", i)
		ds[i] = newDaemonOn(t, srv.URL("postgres")+"&application_name="+app, began, "--max-attempts", strconv.Itoa(maxAttempts))
		ds[i].unavailable = true
		ds[i].drain = func() { waitBackendsGone(t, srv, app) }
	}

	rec := &recorder{}
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for id := range clients {
		wg.Go(func() {
			if err := linClient(ctx, ds[id%daemons], rec, "lin", id, total, seed); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	l := newLedger(false)
	ld := startLoadOn(ds, l, workers, convs)
	defer ld.cancel()

	waitCalls := func(n int) {
		deadline := time.Now().Add(60 * time.Second)
		for rec.len() < n && ctx.Err() == nil {
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d calls after 60 s", rec.len(), n)
			}
			time.Sleep(time.Millisecond) // polling a condition, with a deadline
		}
	}
	third := total / 3
	waitCalls(third/2 + rand.IntN(third))
	killed := rand.IntN(daemons)
	ds[killed].restart(syscall.SIGKILL)
	tokenChecks := checkTokens(t, ds[(killed+1)%daemons], l)

	waitCalls(third + third/2 + rand.IntN(third))
	var crashed int64
	unavailableBefore := rec.len()
	srv.Crash()
	crashed = ds[0].now() // no transaction commits after this
	time.Sleep(100 * time.Millisecond)
	srv.Start()

	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("seed %d: %v", seed, err)
	}
	tokenChecks += checkTokens(t, ds[killed], l)
	waitAcks(t, l, l.n.Load()+50, ld.errs)
	ld.stop(t)

	history, unknown, unavailable := settleAcross(t, ds, rec, crashed)
	checkHistory(t, history, fmt.Sprintf("seed %d, daemon %d killed, PostgreSQL crashed after %d calls", seed, killed, unavailableBefore))
	mutated := mustReject(t, history)
	v := verifyLedger(t, ds[0], l, convs)
	checkUnacked(t, l, v.unacked, syscall.SIGKILL)
	events := checkPostgres(t, srv.URL("postgres"))
	t.Logf("3 daemons, 1 SIGKILL, 1 immediate restart of PostgreSQL survived: %d operations (%d of unknown outcome, %d of them answered unavailable) by %d clients linearizable (%s); a corrupted copy rejected: %v; %d acknowledged writes of %d workers verified against %d events (%d appended without an acknowledgement); %s; %d tokens checked after the restarts; pgstore.Check passes on the database's %d events, positions contiguous; %v",
		len(history), unknown, unavailable, clients, outcomes(history), mutated, len(l.acks), workers, v.total, len(v.unacked), leaseCounts(l), tokenChecks, events, time.Since(began).Round(time.Millisecond))
}

// waitBackendsGone waits until PostgreSQL serves no connection of the
// application app: a daemon's backends outlive it until they notice that
// it went away, and one may commit the transaction it was given meanwhile.
func waitBackendsGone(t *testing.T, srv *pgtest.Server, app string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, srv.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, app).Scan(&n); err != nil {
			t.Fatalf("waiting for the backends of %s to end: %v", app, err)
		}
		if n == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with ctx's deadline
	}
}

// settleAcross is settle for the clients of several daemons (client id
// runs on ds[id%len(ds)]), some of whose calls were answered unavailable
// while PostgreSQL was down. Such a call, sent before PostgreSQL stopped
// at crashed, took effect before then (its COMMIT may have been written
// and its answer lost) or never; sent after, it took none, and it is
// dropped: one that did would make the history fail the check. It returns the history, the
// number of calls of unknown outcome left in it, and how many of them were
// answered unavailable.
func settleAcross(t *testing.T, ds []*daemon, rec *recorder, crashed int64) ([]porcupine.Operation, int, int) {
	t.Helper()
	stopped := make([][]int64, len(ds))
	for i, d := range ds {
		d.mu.Lock()
		stopped[i] = append([]int64(nil), d.stopped...)
		d.mu.Unlock()
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	drop := make(map[int]bool)
	unavailable := 0
	for _, i := range rec.unknown {
		op := &rec.ops[i]
		meta := op.Metadata.(callMeta)
		if meta.unavailable {
			unavailable++
			if op.Call >= crashed {
				// Its batch began after the crash: it can only have been
				// refused, on a connection to the server that was gone.
				drop[i] = true
				continue
			}
			op.Return = max(op.Return, crashed)
			continue
		}
		st := stopped[op.ClientId%len(ds)]
		if meta.gen >= len(st) {
			t.Fatalf("call %v of daemon %d, generation %d, broke while that daemon ran", op.Input, op.ClientId%len(ds), meta.gen)
		}
		if op.Call >= st[meta.gen] {
			drop[i] = true
			continue
		}
		op.Return = max(op.Return, st[meta.gen])
	}
	var h []porcupine.Operation
	for i, op := range rec.ops {
		if !drop[i] {
			op.Metadata = nil
			h = append(h, op)
		}
	}
	return h, len(rec.unknown) - len(drop), unavailable
}

// checkPostgres checks the database at url with the store's own check
// (pgstore.Check: seqs, write rules, state rows equal to the replay of the
// log, totals), and that the events in pos order have contiguous
// positions, with each conversation's seqs increasing: positions were
// given in commit order across the daemons, through the crash. It returns
// the number of events.
func checkPostgres(t *testing.T, url string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := pgstore.Check(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) > 0 {
		t.Fatalf("pgstore.Check: %d problems, among them:\n%s", len(r.Problems), strings.Join(r.Problems[:min(len(r.Problems), 20)], "\n"))
	}
	s, err := pgstore.Open(ctx, url, pgstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	all, err := s.EventsFrom(ctx, 0, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(all)) != r.Events {
		t.Fatalf("pgstore.Check counted %d events, the log in pos order holds %d", r.Events, len(all))
	}
	last := make(map[string]int64)
	for i, e := range all {
		if i > 0 && e.Pos != all[i-1].Pos+1 {
			t.Fatalf("positions %d then %d: a gap, or out of order", all[i-1].Pos, e.Pos)
		}
		if s, ok := last[e.Conversation]; ok && e.Seq <= s {
			t.Fatalf("%s: seq %d at pos %d, after seq %d: positions are not in commit order", e.Conversation, e.Seq, e.Pos, s)
		}
		last[e.Conversation] = e.Seq
	}
	return len(all)
}
