package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/storetest"
)

// cmd builds a command of op for message m of conversation "c", and step
// a step of one: the commands the conformance suite builds on too.
var (
	cmd  = storetest.Cmd
	step = storetest.Step
)

func mustEvents(tb testing.TB, s *Store, conv string) []conversation.Event {
	tb.Helper()
	events, err := s.Events(context.Background(), conv, 0, 1<<20)
	if err != nil {
		tb.Fatalf("Events(%q): %v", conv, err)
	}
	return events
}

// TestStore_BatchSeesEarlierRequests queues a batch by hand, so that it is
// certain to be one transaction: later requests see earlier ones, and a
// rejected request fails alone while the rest commit.
func TestStore_BatchSeesEarlierRequests(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	s := mustOpenStore(t, Options{gather: func() { once.Do(func() { <-release }) }})
	cmds := []conversation.Command{
		cmd(conversation.OpReceive, "m"),
		cmd(conversation.OpReceive, "m"),
		cmd(conversation.OpStart, "m"),
		step("m", 0, "a"),
		step("m", 0, "b"), // step_conflict with the step before it
		step("m", 0, "a"), // duplicate of the step two before
		cmd(conversation.OpFinish, "m"),
		cmd(conversation.OpStart, "m"), // already_finished
	}
	reqs, wait := requestsFor(cmds...)
	// The writer holds the first request until all are queued, then
	// gathers the rest into the same batch.
	s.enqueue(context.Background(), reqs)
	close(release)
	wait()
	if st, _ := s.Stats(context.Background()); st.Commits != 1 || st.MaxBatch != len(reqs) {
		t.Fatalf("Stats: %d commits, largest batch %d; want one batch of %d", st.Commits, st.MaxBatch, len(reqs))
	}
	type result struct {
		seq       int64
		dup       bool
		action    conversation.Action
		errTarget error
	}
	want := []result{
		{seq: 0, action: conversation.Start},
		{action: conversation.Resume},
		{seq: 1},
		{seq: 2},
		{errTarget: conversation.ErrStepConflict},
		{seq: 2, dup: true},
		{seq: 3},
		{errTarget: conversation.ErrAlreadyFinished},
	}
	for i, r := range reqs {
		w := want[i]
		if w.errTarget != nil {
			if !errors.Is(r.err, w.errTarget) {
				t.Errorf("request %d (%+v): error %v, want %v", i, r.cmd, r.err, w.errTarget)
			}
			continue
		}
		if r.err != nil || r.out.Seq != w.seq || r.out.Duplicate != w.dup || r.out.Decision.Action != w.action {
			t.Errorf("request %d (%+v) = %+v, %v; want %+v", i, r.cmd, r.out, r.err, w)
		}
	}
	events := mustEvents(t, s, "c")
	if len(events) != 4 || !bytes.Equal(events[2].Output, []byte("a")) {
		t.Errorf("log = %+v, want 4 events with step output a", events)
	}
}

// TestStore_SyncFailure: when the fsync of a committed batch fails, its
// writers get unavailable, its events still reach subscribers (readers may
// see them), the store refuses writes from then on and keeps serving reads,
// and the database is sound when opened again.
func TestStore_SyncFailure(t *testing.T) {
	var fail atomic.Bool
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path, Options{syncFault: func() error {
		if fail.Load() {
			return errors.New("injected EIO")
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	sub := s.Subscribe(16)
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	fail.Store(true)
	if _, err := s.Write(context.Background(), cmd(conversation.OpStart, "m")); !errors.Is(err, conversation.ErrUnavailable) {
		t.Fatalf("Write with a failing sync: %v, want unavailable", err)
	}
	fail.Store(false)
	var pushed []conversation.Event
	for len(pushed) < 2 {
		pushed = append(pushed, <-sub.Events()...)
	}
	if pushed[1].Type != conversation.ProcessingStarted {
		t.Errorf("pushed %+v, want the committed start too", pushed)
	}
	if _, err := s.Write(context.Background(), cmd(conversation.OpFinish, "m")); !errors.Is(err, conversation.ErrUnavailable) {
		t.Errorf("Write after a failed sync: %v, want unavailable until reopened", err)
	}
	if d, err := s.Decide(context.Background(), "c", "m", conversation.Delivery{}); err != nil || d.Action != conversation.Resume {
		t.Errorf("Decide after a failed sync = %+v, %v; want reads to work", d, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpenPath(t, path, Options{})
	if o := mustWrite(t, s, cmd(conversation.OpStart, "m")); !o.Duplicate || o.Seq != 1 {
		t.Errorf("retried start after reopening = %+v, want a duplicate of seq 1", o)
	}
}

// TestStore_OneSyncPerBatch: a batch is one transaction and at most one
// fsync; a batch that appends nothing costs no fsync.
func TestStore_OneSyncPerBatch(t *testing.T) {
	var syncs atomic.Int64
	release := make(chan struct{})
	var once sync.Once
	s := mustOpenStore(t, Options{
		syncFault: func() error { syncs.Add(1); return nil },
		gather:    func() { once.Do(func() { <-release }) },
	})
	var cmds []conversation.Command
	for i := range 50 {
		cmds = append(cmds, cmd(conversation.OpReceive, fmt.Sprintf("m%d", i)))
	}
	reqs, wait := requestsFor(cmds...)
	s.enqueue(context.Background(), reqs)
	close(release)
	wait()
	if n := syncs.Load(); n != 1 {
		t.Errorf("%d fsyncs for one batch of 50 appends, want 1", n)
	}
	mustWrite(t, s, cmd(conversation.OpReceive, "m0")) // a resume: appends nothing
	if n := syncs.Load(); n != 1 {
		t.Errorf("%d fsyncs after a batch that appended nothing, want still 1", n)
	}
}

// TestStore_WritesBesideLongReader: a reader holding an old snapshot (a long
// check or export) while the WAL passes the size that makes the
// checkpointer restart it must not make writes fail or wait on it.
func TestStore_WritesBesideLongReader(t *testing.T) {
	s := mustOpenStore(t, Options{walRestartBytes: 64 << 10, Checkpoint: time.Millisecond})
	mustWrite(t, s, cmd(conversation.OpReceive, "first"))
	reader, err := sql.Open("sqlite", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	tx, err := reader.Begin()
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRow("SELECT count(*) FROM events").Scan(&n); err != nil || n != 1 {
		t.Fatalf("reader snapshot: %d events, %v", n, err)
	}
	big := bytes.Repeat([]byte("x"), 4096)
	for i := range 200 { // about 1 MiB of WAL, many restart attempts
		c := step("first", uint32(i), "")
		c.Output = big
		if i == 0 {
			mustWrite(t, s, cmd(conversation.OpStart, "first"))
		}
		if _, err := s.Write(context.Background(), c); err != nil {
			t.Fatalf("write %d beside a long reader: %v", i, err)
		}
	}
}

// TestStore_StagesWhileSyncing: while the syncer makes a batch durable, the
// writer writes the requests that arrive into the next batch's open
// transaction, a stage at a time, and commits them together once the sync
// ends. A stage builds on the stages before it, and nothing of the open
// transaction reaches the cache that readers share before it commits.
func TestStore_StagesWhileSyncing(t *testing.T) {
	syncing, release := make(chan struct{}), make(chan struct{})
	staged := make(chan int, 8)
	var once sync.Once
	s := mustOpenStore(t, Options{
		syncFault: func() error {
			once.Do(func() { close(syncing); <-release })
			return nil
		},
		staged: func(n int) { staged <- n },
	})
	unhold := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unhold) // before the store closes, should the test fail
	c := cmd(conversation.OpReceive, "first")
	c.Conversation = "conv"
	first, _ := requestsFor(c)
	s.enqueue(context.Background(), first)
	if n := receiveWithin(t, staged); n != 1 {
		t.Fatalf("first batch staged %d requests, want 1", n)
	}
	<-syncing // the first batch is committed; its sync is held
	var waits []func()
	queue := func(op conversation.Op) []*request {
		cmds := make([]conversation.Command, stageMin)
		for i := range cmds {
			cmds[i] = cmd(op, fmt.Sprintf("m%d", i))
			cmds[i].Conversation = "conv"
		}
		reqs, wait := requestsFor(cmds...)
		waits = append(waits, wait)
		s.enqueue(context.Background(), reqs)
		if n := receiveWithin(t, staged); n != len(reqs) {
			t.Fatalf("staged %d requests, want %d", n, len(reqs))
		}
		return reqs
	}
	notShared := func(when string) {
		t.Helper()
		if m, err := s.Message(context.Background(), "conv", "m0"); m != nil || err != nil {
			t.Fatalf("%s: Message = %+v, %v before the commit; want nil", when, m, err)
		}
	}
	receives := queue(conversation.OpReceive)
	notShared("after the receives")
	starts := queue(conversation.OpStart) // needs the messages the receives made
	notShared("after the starts")
	unhold()
	for _, wait := range waits {
		wait()
	}
	for i, r := range append(receives, starts...) {
		if r.err != nil || r.out.Seq != int64(i+1) {
			t.Errorf("request %d (%v): seq %d, %v; want seq %d", i, r.cmd.Op, r.out.Seq, r.err, i+1)
		}
	}
	if st, _ := s.Stats(context.Background()); st.Commits != 2 || st.MaxBatch != 2*stageMin {
		t.Errorf("Stats: %d commits, largest batch %d; want 2 commits, the second of %d", st.Commits, st.MaxBatch, 2*stageMin)
	}
	if m, err := s.Message(context.Background(), "conv", "m0"); err != nil || m == nil || m.Status != conversation.StatusInProgress {
		t.Errorf("after the commit: Message = %+v, %v; want in progress", m, err)
	}
}

// receiveWithin receives from ch, failing the test after 10 s.
func receiveWithin[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("nothing received within 10s")
		panic("unreachable")
	}
}

// TestStore_CloseWhileStaging: requests queued while a sync is in flight,
// too few to be staged yet, are still written and committed when the store
// closes, and answered only once durable.
func TestStore_CloseWhileStaging(t *testing.T) {
	path := filepath.Join(t.TempDir(), "test.db")
	syncing, release := make(chan struct{}), make(chan struct{})
	staged := make(chan int, 8)
	var once sync.Once
	s, err := Open(path, Options{
		syncFault: func() error {
			once.Do(func() { close(syncing); <-release })
			return nil
		},
		staged: func(n int) { staged <- n },
	})
	if err != nil {
		t.Fatal(err)
	}
	unhold := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unhold)
	outcomes := make(chan error, 3)
	answer := func(_ conversation.Outcome, err error) { outcomes <- err }
	s.WriteAsync(context.Background(), cmd(conversation.OpReceive, "first"), answer)
	receiveWithin(t, staged)
	<-syncing
	for _, m := range []string{"m1", "m2"} {
		s.WriteAsync(context.Background(), cmd(conversation.OpReceive, m), answer)
	}
	closed := make(chan error)
	go func() { closed <- s.Close() }()
	if n := receiveWithin(t, staged); n != 2 {
		t.Fatalf("staged %d requests at close, want 2", n)
	}
	unhold()
	for range 3 {
		if err := receiveWithin(t, outcomes); err != nil {
			t.Errorf("write answered %v, want success", err)
		}
	}
	if err := receiveWithin(t, closed); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = mustOpenPath(t, path, Options{})
	for _, m := range []string{"first", "m1", "m2"} {
		if msg, err := s.Message(context.Background(), "c", m); err != nil || msg == nil {
			t.Errorf("after reopening, message %s = %+v, %v; want it received", m, msg, err)
		}
	}
}

// TestStore_SlowBatchObserver: an OnBatch that does not return holds up
// no commit; once it returns it is told of the batches in order, and
// when it fell more than reportBacklog batches behind, Stats counts the
// ones it missed.
func TestStore_SlowBatchObserver(t *testing.T) {
	release := make(chan struct{})
	unhold := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unhold) // before the store closes, should the test fail
	reports := make(chan Batch, 64)
	s := mustOpenStore(t, Options{OnBatch: func(b Batch) {
		<-release
		reports <- b
	}})
	outcomes := make(chan error, 1)
	for i := range 20 {
		// One at a time: each is its own batch, and the next waits for it.
		s.WriteAsync(context.Background(), cmd(conversation.OpReceive, fmt.Sprintf("m%d", i)), func(_ conversation.Outcome, err error) { outcomes <- err })
		if err := receiveWithin(t, outcomes); err != nil {
			t.Fatalf("write %d while the observer is stuck: %v", i, err)
		}
	}
	unhold()
	for i := range 20 {
		if b := receiveWithin(t, reports); b.Requests != 1 || b.Events != 1 {
			t.Errorf("report %d = %+v, want one request and one event", i, b)
		}
	}
	if st, err := s.Stats(context.Background()); err != nil || st.UnreportedBatches != 0 {
		t.Errorf("Stats: %d unreported batches, %v; want 0", st.UnreportedBatches, err)
	}
}

// TestStore_RestartsOnlyAFullWAL: the checkpointer restarts the WAL (a
// RESTART checkpoint, which holds the writer off) only when a passive
// checkpoint found more than walRestartBytes of frames in it, not each
// time the file, which keeps its size after a restart, is that large.
func TestStore_RestartsOnlyAFullWAL(t *testing.T) {
	type run struct {
		mode   string
		frames int64
	}
	const limit = 256 << 10
	runs := make(chan run, 1024)
	s := mustOpenStore(t, Options{walRestartBytes: limit, Checkpoint: time.Millisecond,
		checkpointed: func(mode string, frames int64) {
			select {
			case runs <- run{mode, frames}:
			default:
			}
		}})
	next := func() run {
		select {
		case r := <-runs:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no checkpoint in 10s")
			return run{}
		}
	}
	// Past the limit: the file grows larger than it, and the WAL is
	// restarted.
	big := bytes.Repeat([]byte("x"), 4096)
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	mustWrite(t, s, cmd(conversation.OpStart, "m"))
	for i := range 100 {
		c := step("m", uint32(i), "")
		c.Output = big
		mustWrite(t, s, c)
	}
	for len(runs) > 0 {
		<-runs
	}
	// Small writes until a passive checkpoint finds the WAL started over.
	small := 0
	for settled := false; !settled; {
		mustWrite(t, s, cmd(conversation.OpReceive, fmt.Sprintf("small-%d", small)))
		small++
		for range 3 {
			if r := next(); r.mode == "PASSIVE" && r.frames*4120 <= limit/4 {
				settled = true
			}
		}
		if small > 100 {
			t.Fatal("the WAL was never started over")
		}
	}
	fi, err := os.Stat(s.Path() + "-wal")
	if err != nil || fi.Size() <= limit {
		t.Fatalf("the WAL file: %v, %v; want it larger than the limit, as the test assumes", fi, err)
	}
	// Now the file is over the limit, but what the WAL holds is not:
	// a few small writes, each followed by a few checkpoints, are never
	// restarted for.
	for i := range 8 {
		mustWrite(t, s, cmd(conversation.OpReceive, fmt.Sprintf("after-%d", i)))
		for range 3 {
			if r := next(); r.mode != "PASSIVE" {
				t.Fatalf("after small write %d: a %s checkpoint with %d frames in the WAL; want only passive ones below the limit", i, r.mode, r.frames)
			}
		}
	}
}
