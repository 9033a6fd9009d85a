package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/ipc"
)

// Factory opens a new, empty store for test t that runs on clock, and
// closes it at t's cleanup. The suite calls it from parallel tests: each
// call must have a database of its own.
type Factory func(t testing.TB, clock *Clock) Harness

// Harness is a store under test: the ipc.Store the server serves, and what
// a test must control beside it.
type Harness interface {
	ipc.Store
	// SetMaxAttempts sets max_attempts (SPEC §7; 0: no limit) from the next
	// request on.
	SetMaxAttempts(n int64)
	// SetRetention sets retain_finished and retain_tombstones (SPEC §8; 0
	// keeps everything) from the next compaction pass on.
	SetRetention(finished, tombstones time.Duration)
	// Compact runs one compaction pass under the retention in force, at
	// the store's clock, and returns once it is done. The store compacts
	// only when Compact is called: its background compaction is off.
	Compact(ctx context.Context) error
	// Restart closes the store and opens a new one on the same database
	// and clock, with the default settings (no max_attempts, keep
	// everything), closed at the test's cleanup as the factory's is.
	Restart() Harness
	// Close closes the store: writes after it get conversation.ErrClosed.
	// It may be called more than once, and before the cleanup's.
	Close() error
}

// clockBase is where a Clock starts: 2023-11-14T22:13:20Z.
const clockBase = 1_700_000_000_000

// Clock is the time a store under test runs on, moved by the suite
// instead of sleeping. A store takes it in one of two ways: as its clock
// (Now: time stands still until the suite moves it), or as an offset added
// to a clock of its own (Offset: a database's clock, which goes on
// running). The suite judges times by the store's Moment and the ts of its
// events, so either way its checks hold.
type Clock struct {
	offset atomic.Int64 // nanoseconds
}

// Now returns the clock's time: a fixed start plus every Advance so far.
func (c *Clock) Now() time.Time { return time.UnixMilli(clockBase).Add(c.Offset()) }

// Offset returns how far the suite moved the clock so far.
func (c *Clock) Offset() time.Duration { return time.Duration(c.offset.Load()) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// Run runs the suite against the stores f opens, each test in parallel on
// a store and a clock of its own.
func Run(t *testing.T, f Factory) {
	for _, tt := range []struct {
		name string
		run  func(*testing.T, Factory)
	}{
		{"Write", testWrite},
		{"ConcurrentReceive", testConcurrentReceive},
		{"ConcurrentLifecycles", testConcurrentLifecycles},
		{"WriteAsync", testWriteAsync},
		{"EventsReadBack", testEventsReadBack},
		{"Reads", testReads},
		{"Steps", testSteps},
		{"MessageEvents", testMessageEvents},
		{"Subscribe", testSubscribe},
		{"LeaseRules", testLeaseRules},
		{"Leases", testLeases},
		{"Quarantine", testQuarantine},
		{"Fingerprint", testFingerprint},
		{"Compaction", testCompaction},
		{"ReadsPastGaps", testReadsPastGaps},
		{"Horizon", testHorizon},
		{"CompactionInterleaves", testCompactionInterleaves},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, f)
		})
	}
}

// slack is how far a time a store answers may stray from the one the test
// works out when the store's clock runs on its own (Clock.Offset): the
// time that passes between the store's reading and the test's.
const slack = 2000 // ms

// replyWithin is how long a write may take to be answered before the test
// gives up on it.
const replyWithin = 30 * time.Second

// env is one test's store and clock.
type env struct {
	t     *testing.T
	ctx   context.Context
	h     Harness
	clock *Clock
	// frozen is set when the store's clock is the Clock's own: time
	// stands still between two Advances, and times are checked exactly.
	frozen bool
}

// open opens a new store with f for t.
func open(t *testing.T, f Factory) *env {
	t.Helper()
	clock := &Clock{}
	h := f(t, clock)
	return &env{t: t, ctx: context.Background(), h: h, clock: clock, frozen: h.Moment().Now == clock.Now().UnixMilli()}
}

// now returns the store's clock, in epoch ms.
func (e *env) now() int64 { return e.h.Moment().Now }

// near reports whether got is the time (or duration) want, exactly on a
// frozen clock, or within slack of it on a running one.
func (e *env) near(got, want int64) bool {
	if e.frozen {
		return got == want
	}
	return got >= want-slack && got <= want+slack
}

// restart closes the store and opens it again on the same database.
func (e *env) restart() {
	e.t.Helper()
	e.h = e.h.Restart()
}

// write runs cmd through WriteAsync and waits for its outcome. It may be
// called from any goroutine: a write not answered in time is an error.
func (e *env) write(cmd conversation.Command) (conversation.Outcome, error) {
	type result struct {
		out conversation.Outcome
		err error
	}
	ch := make(chan result, 1)
	e.h.WriteAsync(e.ctx, cmd, func(out conversation.Outcome, err error) { ch <- result{out, err} })
	select {
	case r := <-ch:
		return r.out, r.err
	case <-time.After(replyWithin):
		return conversation.Outcome{}, fmt.Errorf("%v of %s/%s not answered within %v", cmd.Op, cmd.Conversation, cmd.MessageID, replyWithin)
	}
}

// mustWrite runs cmd and fails the test on an error.
func (e *env) mustWrite(cmd conversation.Command) conversation.Outcome {
	e.t.Helper()
	out, err := e.write(cmd)
	if err != nil {
		e.t.Fatalf("Write(%+v): %v", cmd, err)
	}
	return out
}

// events returns every remaining event of conversation conv.
func (e *env) events(conv string) []conversation.Event {
	e.t.Helper()
	events, err := e.h.Events(e.ctx, conv, 0, 1<<20)
	if err != nil {
		e.t.Fatalf("Events(%q): %v", conv, err)
	}
	return events
}

// event returns the event at seq of conversation conv.
func (e *env) event(conv string, seq int64) conversation.Event {
	e.t.Helper()
	events, err := e.h.Events(e.ctx, conv, seq, 1)
	if err != nil || len(events) != 1 || events[0].Seq != seq {
		e.t.Fatalf("Events(%q, %d, 1) = %+v, %v; want the event at seq %d", conv, seq, events, err, seq)
	}
	return events[0]
}

// message returns message id of conversation "c", failing the test if it
// is unknown.
func (e *env) message(id string) *conversation.Message {
	e.t.Helper()
	m, err := e.h.Message(e.ctx, "c", id)
	if err != nil || m == nil {
		e.t.Fatalf("Message(%q) = %+v, %v; want it", id, m, err)
	}
	return m
}

// stats returns the store's figures.
func (e *env) stats() ipc.StoreStats {
	e.t.Helper()
	st, err := e.h.Stats(e.ctx)
	if err != nil {
		e.t.Fatalf("Stats: %v", err)
	}
	return st
}

// compact runs a compaction pass and returns how many messages it compacted
// and how many tombstones it dropped, as the store's figures count them.
func (e *env) compact() (compacted, dropped int64) {
	e.t.Helper()
	before := e.stats()
	if err := e.h.Compact(e.ctx); err != nil {
		e.t.Fatalf("Compact: %v", err)
	}
	after := e.stats()
	return after.Compacted - before.Compacted, after.Dropped - before.Dropped
}

// lifecycle writes a whole lifecycle of message m of conversation conv:
// received, started, steps with outputs "m/i", finished.
func (e *env) lifecycle(conv, m string, steps int) error {
	for _, c := range Lifecycle(conv, m, steps) {
		if _, err := e.write(c); err != nil {
			return fmt.Errorf("%v of %s/%s: %w", c.Op, conv, m, err)
		}
	}
	return nil
}

func (e *env) mustLifecycle(conv, m string, steps int) {
	e.t.Helper()
	if err := e.lifecycle(conv, m, steps); err != nil {
		e.t.Fatal(err)
	}
}

func ids(list []conversation.Message) []string {
	var out []string
	for _, m := range list {
		out = append(out, m.ID)
	}
	return out
}
