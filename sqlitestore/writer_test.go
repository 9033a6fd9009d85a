package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
)

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

// TestStore_Write runs every write rule of SPEC §2 through the store: each
// case writes its setup, then checks the outcome of its last command.
func TestStore_Write(t *testing.T) {
	receive := cmd(conversation.OpReceive, "m")
	start := cmd(conversation.OpStart, "m")
	finish := cmd(conversation.OpFinish, "m")
	type want struct {
		seq       int64
		append    bool
		duplicate bool
		action    conversation.Action
		resume    int64
		err       error
	}
	tests := []struct {
		name  string
		setup []conversation.Command
		cmd   conversation.Command
		want  want
	}{
		{"ReceiveNewStarts", nil, receive, want{seq: 0, append: true, action: conversation.Start}},
		{"ReceiveSeenResumesFromZero", []conversation.Command{receive}, receive, want{action: conversation.Resume, resume: 0}},
		{"ReceiveResumesAfterHighestStep", []conversation.Command{receive, start, step("m", 0, "a"), step("m", 5, "b"), step("m", 2, "c")}, receive, want{action: conversation.Resume, resume: 6}},
		{"ReceiveFinishedSkips", []conversation.Command{receive, start, finish}, receive, want{action: conversation.Skip}},
		{"ExpectedSeqMatches", []conversation.Command{receive}, expect(start, 1), want{seq: 1, append: true}},
		{"ExpectedSeqTooHigh", []conversation.Command{receive}, expect(start, 5), want{err: &conversation.SequenceConflictError{Expected: 5, Actual: 1}}},
		{"ExpectedSeqLowerOtherEvent", []conversation.Command{receive, start}, expect(finish, 1), want{err: &conversation.SequenceConflictError{Expected: 1, Actual: 2}}},
		{"ExpectedSeqRetryOfLandedWrite", []conversation.Command{receive, start, step("m", 0, "out")}, expect(step("m", 0, "out"), 2), want{seq: 2, duplicate: true}},
		{"ExpectedSeqRetryOtherOutput", []conversation.Command{receive, start, step("m", 0, "out")}, expect(step("m", 0, "other"), 2), want{err: &conversation.SequenceConflictError{Expected: 2, Actual: 3}}},
		{"ExpectedSeqRetryOfReceive", []conversation.Command{receive}, expect(receive, 0), want{seq: 0, duplicate: true, action: conversation.Start}},
		{"SequenceConflictBeforeUnknownMessage", nil, expect(cmd(conversation.OpStart, "x"), 3), want{err: &conversation.SequenceConflictError{Expected: 3, Actual: 0}}},
		{"StartUnknownMessage", nil, cmd(conversation.OpStart, "x"), want{err: conversation.ErrUnknownMessage}},
		{"StepUnknownMessage", []conversation.Command{receive}, step("x", 0, ""), want{err: conversation.ErrUnknownMessage}},
		{"FinishUnknownMessage", []conversation.Command{receive}, cmd(conversation.OpFinish, "x"), want{err: conversation.ErrUnknownMessage}},
		{"FailUnknownMessage", []conversation.Command{receive}, fail("x", "boom"), want{err: conversation.ErrUnknownMessage}},
		{"FinishAgainIsDuplicate", []conversation.Command{receive, start, finish}, finish, want{seq: 2, duplicate: true}},
		{"StartAfterFinish", []conversation.Command{receive, start, finish}, start, want{err: conversation.ErrAlreadyFinished}},
		{"StepAfterFinish", []conversation.Command{receive, start, finish}, step("m", 0, ""), want{err: conversation.ErrAlreadyFinished}},
		{"FailAfterFinish", []conversation.Command{receive, start, finish}, fail("m", "late"), want{err: conversation.ErrAlreadyFinished}},
		{"StartWhileInProgressIsDuplicate", []conversation.Command{receive, start, step("m", 0, "a")}, start, want{seq: 1, duplicate: true}},
		{"StepSameOutputIsDuplicate", []conversation.Command{receive, start, step("m", 0, "a"), step("m", 1, "b")}, step("m", 0, "a"), want{seq: 2, duplicate: true}},
		{"StepEmptyOutputIsDuplicate", []conversation.Command{receive, start, step("m", 0, "")}, step("m", 0, ""), want{seq: 2, duplicate: true}},
		{"StepOtherOutputConflicts", []conversation.Command{receive, start, step("m", 0, "a")}, step("m", 0, "b"), want{err: conversation.ErrStepConflict}},
		{"StepIndexesNeedNotBeContiguous", []conversation.Command{receive, start}, step("m", 7, "x"), want{seq: 2, append: true}},
		{"FailSameTextIsDuplicate", []conversation.Command{receive, start, fail("m", "boom")}, fail("m", "boom"), want{seq: 2, duplicate: true}},
		{"FailOtherTextAppends", []conversation.Command{receive, start, fail("m", "boom")}, fail("m", "bang"), want{seq: 3, append: true}},
		{"FailAfterStepAppends", []conversation.Command{receive, start, fail("m", "boom"), step("m", 0, "a")}, fail("m", "boom"), want{seq: 4, append: true}},
		{"StartAfterErrorIsRetry", []conversation.Command{receive, start, fail("m", "boom")}, start, want{seq: 3, append: true}},
		{"FinishWithoutStart", []conversation.Command{receive}, finish, want{seq: 1, append: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenStore(t, Options{})
			for _, c := range tt.setup {
				mustWrite(t, s, c)
			}
			before := mustEvents(t, s, "c")
			got, err := s.Write(context.Background(), tt.cmd)
			after := mustEvents(t, s, "c")
			if tt.want.err != nil {
				var sc *conversation.SequenceConflictError
				if want, ok := tt.want.err.(*conversation.SequenceConflictError); ok {
					if !errors.As(err, &sc) || *sc != *want {
						t.Fatalf("Write(%+v) error = %v, want %v", tt.cmd, err, want)
					}
				} else if !errors.Is(err, tt.want.err) {
					t.Fatalf("Write(%+v) error = %v, want %v", tt.cmd, err, tt.want.err)
				}
				if len(after) != len(before) {
					t.Errorf("rejected Write appended %d events", len(after)-len(before))
				}
				return
			}
			if err != nil {
				t.Fatalf("Write(%+v) error = %v", tt.cmd, err)
			}
			if got.Append != tt.want.append || got.Duplicate != tt.want.duplicate || got.Decision.Action != tt.want.action || got.Decision.ResumeFrom != tt.want.resume {
				t.Errorf("Write(%+v) = %+v, want %+v", tt.cmd, got, tt.want)
			}
			if (got.Append || got.Duplicate) && got.Seq != tt.want.seq {
				t.Errorf("Write(%+v) seq = %d, want %d", tt.cmd, got.Seq, tt.want.seq)
			}
			wantLen := len(before)
			if tt.want.append {
				wantLen++
			}
			if len(after) != wantLen {
				t.Errorf("log has %d events after Write, want %d", len(after), wantLen)
			}
		})
	}
}

func mustEvents(tb testing.TB, s *Store, conv string) []conversation.Event {
	tb.Helper()
	events, err := s.Events(context.Background(), conv, 0, 1<<20)
	if err != nil {
		tb.Fatalf("Events(%q): %v", conv, err)
	}
	return events
}

// TestStore_GroupCommit drives 64 goroutines through message lifecycles at
// once: batches hold many requests, every answer matches the log, and the
// cleanup's check proves state == replay.
func TestStore_GroupCommit(t *testing.T) {
	s := mustOpenStore(t, Options{})
	const writers, messages = 64, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conv := fmt.Sprintf("conv-%d", w%8) // eight writers share each conversation
			for i := range messages {
				m := fmt.Sprintf("w%d-m%d", w, i)
				for _, c := range []conversation.Command{
					{Op: conversation.OpReceive, Conversation: conv, MessageID: m, ExpectedSeq: -1},
					{Op: conversation.OpStart, Conversation: conv, MessageID: m, ExpectedSeq: -1},
					{Op: conversation.OpStep, Conversation: conv, MessageID: m, Output: []byte(m), ExpectedSeq: -1},
					{Op: conversation.OpFinish, Conversation: conv, MessageID: m, ExpectedSeq: -1},
				} {
					out, err := s.Write(context.Background(), c)
					if err != nil || !out.Append {
						errs <- fmt.Errorf("Write(%+v) = %+v, %v; want an append", c, out, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(writers * messages * 4); st.Events != want || st.Appended != want {
		t.Errorf("Stats events = %d, appended = %d; want %d", st.Events, st.Appended, want)
	}
	if st.Commits >= st.Requests {
		t.Errorf("Stats: %d commits for %d requests; want batches of more than one request", st.Commits, st.Requests)
	}
	t.Logf("%d requests in %d commits (largest batch %d)", st.Requests, st.Commits, st.MaxBatch)
}

// TestStore_ConcurrentReceive: of many concurrent receives of one new
// message exactly one starts it; the others resume it from 0.
func TestStore_ConcurrentReceive(t *testing.T) {
	s := mustOpenStore(t, Options{})
	const n = 64
	var wg sync.WaitGroup
	var mu sync.Mutex
	actions := map[conversation.Action]int{}
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := s.Write(context.Background(), cmd(conversation.OpReceive, "m"))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			actions[out.Decision.Action]++
			mu.Unlock()
			if out.Decision.Action == conversation.Resume && out.Decision.ResumeFrom != 0 {
				t.Errorf("resume from %d, want 0", out.Decision.ResumeFrom)
			}
		}()
	}
	wg.Wait()
	if actions[conversation.Start] != 1 || actions[conversation.Resume] != n-1 {
		t.Errorf("decisions = %v, want 1 start and %d resume", actions, n-1)
	}
	if events := mustEvents(t, s, "c"); len(events) != 1 {
		t.Errorf("log has %d events, want 1", len(events))
	}
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

// TestStore_WriteAsync: the callback gets what Write would return, once;
// a write refused before it is queued is answered on the caller's
// goroutine, before WriteAsync returns.
func TestStore_WriteAsync(t *testing.T) {
	s := mustOpenStore(t, Options{})
	ctx := context.Background()
	type result struct {
		out conversation.Outcome
		err error
	}
	write := func(c conversation.Command) result {
		ch := make(chan result, 2)
		s.WriteAsync(ctx, c, func(o conversation.Outcome, err error) { ch <- result{o, err} })
		r := receiveWithin(t, ch)
		select {
		case extra := <-ch:
			t.Fatalf("%v answered twice: %+v then %+v", c.Op, r, extra)
		default:
		}
		return r
	}
	if r := write(cmd(conversation.OpReceive, "m")); r.err != nil || r.out.Decision.Action != conversation.Start || r.out.Seq != 0 {
		t.Errorf("receive = %+v, want start at seq 0", r)
	}
	if r := write(cmd(conversation.OpStart, "unknown")); !errors.Is(r.err, conversation.ErrUnknownMessage) {
		t.Errorf("start of an unknown message = %+v, want ErrUnknownMessage", r)
	}
	refused := func(c conversation.Command, want error) {
		t.Helper()
		var got error
		called := false
		s.WriteAsync(ctx, c, func(_ conversation.Outcome, err error) { got, called = err, true })
		if !called || !errors.Is(got, want) {
			t.Errorf("WriteAsync(%v) returned with called=%v, err %v; want %v at once", c.Op, called, got, want)
		}
	}
	bad := cmd(conversation.OpReceive, "")
	var fe *conversation.FieldError
	s.WriteAsync(ctx, bad, func(_ conversation.Outcome, err error) {
		if !errors.As(err, &fe) {
			t.Errorf("receive without a message id: %v, want a FieldError", err)
		}
	})
	if fe == nil {
		t.Error("a receive without a message id was not refused at once")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	refused(cmd(conversation.OpReceive, "late"), conversation.ErrClosed)
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
