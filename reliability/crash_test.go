package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/ipc"
)

// ack is one acknowledged write.
type ack struct {
	conv, msg string
	typ       conversation.Type
	step      uint32
	output    string
	seq       int64
	duplicate bool
}

// msgKey names a message of a conversation.
type msgKey struct{ conv, msg string }

// ledger is what the clients were told: every acknowledged write, and per
// message what was attempted.
type ledger struct {
	mu    sync.Mutex
	acks  []ack
	tried map[msgKey]*tried
	n     atomic.Int64 // len(acks)
	// stop asks the workers to end between calls, so that no reply is
	// abandoned at the end.
	stop atomic.Bool
}

// errStopped ends a lifecycle between two calls once the ledger's stop is
// set.
var errStopped = errors.New("stopped")

// tried is what the clients sent for one message, acknowledged or not.
type tried struct {
	received       bool // a receive was acknowledged (start or resume)
	lastAckedStep  int64
	finishAcked    bool
	finishAttempts bool   // a finish was sent, whatever its outcome
	lastUnknown    string // the error of the latest call of unknown outcome
}

func (l *ledger) record(a ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acks = append(l.acks, a)
	l.n.Add(1)
	m := l.msg(msgKey{a.conv, a.msg})
	switch a.typ {
	case conversation.MessageReceived:
		m.received = true
	case conversation.StepCompleted:
		m.lastAckedStep = max(m.lastAckedStep, int64(a.step))
	case conversation.ProcessingFinished:
		m.finishAcked = true
	}
}

// msg returns the record of k; l.mu is held.
func (l *ledger) msg(k msgKey) *tried {
	m := l.tried[k]
	if m == nil {
		m = &tried{lastAckedStep: -1}
		l.tried[k] = m
	}
	return m
}

func (l *ledger) note(k msgKey, f func(*tried)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(l.msg(k))
}

func stepOutput(conv, msg string, step uint32) string {
	return fmt.Sprintf("%s|%s|step-%d", conv, msg, step)
}

// worker runs message lifecycles until ctx ends: message n of worker w is
// "w<w>-m<n>" in conversation "c<n%convs>". A broken connection is an
// unknown outcome: the worker reconnects once the daemon is back and goes
// on with the same message through receive and resume_from.
func worker(ctx context.Context, d *daemon, l *ledger, w, convs int) error {
	var c *ipc.Client
	var gen int
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	n := 0
	for ctx.Err() == nil && !l.stop.Load() {
		conv, msg := fmt.Sprintf("c%d", n%convs), fmt.Sprintf("w%d-m%d", w, n)
		k := msgKey{conv, msg}
		if c == nil {
			var err error
			if c, gen, err = d.connect(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		}
		done, err := lifecycle(ctx, c, l, k)
		switch {
		case err == nil && done:
			n++
		case err == nil:
		case errors.Is(err, errStopped), ctx.Err() != nil:
			return nil
		case outcomeUnknown(err):
			l.note(k, func(m *tried) { m.lastUnknown = err.Error() })
			c.Close()
			c = nil
			if err := d.awaitAfter(ctx, gen); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("worker %d, %s/%s: %v", w, conv, msg, err)
			}
		default:
			return fmt.Errorf("worker %d, %s/%s: %w", w, conv, msg, err)
		}
	}
	return nil
}

// lifecycle processes message k once through: receive, then start, the
// steps from resume_from to 2 and finish. It reports whether the message
// is finished.
func lifecycle(ctx context.Context, c *ipc.Client, l *ledger, k msgKey) (bool, error) {
	if l.stop.Load() {
		return false, errStopped
	}
	l.note(k, func(*tried) {})
	dec, err := c.Receive(ctx, k.conv, k.msg)
	if err != nil {
		return false, fmt.Errorf("receive: %w", err)
	}
	from := uint32(0)
	switch dec.Action {
	case conversation.Skip:
		return true, nil
	case conversation.Start:
		l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.MessageReceived, seq: dec.Seq, duplicate: dec.Duplicate})
	case conversation.Resume:
		l.note(k, func(m *tried) { m.received = true })
		from = uint32(dec.ResumeFrom)
	}
	if l.stop.Load() {
		return false, errStopped
	}
	a, err := c.Start(ctx, k.conv, k.msg)
	if err != nil {
		return false, fmt.Errorf("start: %w", err)
	}
	l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.ProcessingStarted, seq: a.Seq, duplicate: a.Duplicate})
	for s := from; s <= 2; s++ {
		if l.stop.Load() {
			return false, errStopped
		}
		out := stepOutput(k.conv, k.msg, s)
		a, err := c.Step(ctx, k.conv, k.msg, s, []byte(out))
		if err != nil {
			return false, fmt.Errorf("step %d: %w", s, err)
		}
		l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.StepCompleted, step: s, output: out, seq: a.Seq, duplicate: a.Duplicate})
	}
	if l.stop.Load() {
		return false, errStopped
	}
	l.note(k, func(m *tried) { m.finishAttempts = true })
	a, err = c.Finish(ctx, k.conv, k.msg)
	if err != nil {
		return false, fmt.Errorf("finish: %w", err)
	}
	l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.ProcessingFinished, seq: a.Seq, duplicate: a.Duplicate})
	return true, nil
}

// waitAcks polls until the ledger holds at least n acknowledgements.
func waitAcks(t *testing.T, l *ledger, n int64, errs <-chan error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for l.n.Load() < n {
		select {
		case err := <-errs:
			t.Fatalf("worker: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d acknowledgements after 60 s", l.n.Load(), n)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
}

func TestCrashSIGKILL(t *testing.T) {
	kills := 3
	if long() {
		kills = 20
	}
	crashRun(t, syscall.SIGKILL, kills)
}

func TestCrashSIGTERM(t *testing.T) {
	stops := 1
	if long() {
		stops = 5
	}
	crashRun(t, syscall.SIGTERM, stops)
}

// crashRun runs 16 workers over 3 conversations, stops the daemon with sig
// `stops` times after a random number of acknowledgements, restarting it
// each time, and then verifies the log against the ledger.
func crashRun(t *testing.T, sig syscall.Signal, stops int) {
	began := time.Now()
	const workers, convs = 16, 3
	d := newDaemon(t)
	l := &ledger{tried: make(map[msgKey]*tried)}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			if err := worker(ctx, d, l, w, convs); err != nil {
				errs <- err
			}
		})
	}
	spread := int64(600)
	if long() {
		spread = 2000
	}
	for range stops {
		waitAcks(t, l, l.n.Load()+50+rand.Int64N(spread), errs)
		d.restart(sig)
	}
	// Let the workers carry their messages on past the last restart.
	waitAcks(t, l, l.n.Load()+100, errs)
	l.stop.Store(true)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("worker: %v", err)
	}
	checked, unacked, sample := verifyLedger(t, d, l, convs)
	out := d.runCheck()
	t.Logf("%v: %d stops survived, %d acknowledged writes verified against %d events (%d appended without an acknowledgement), %d messages decided; check: %s; %v",
		sig, stops, len(l.acks), checked, unacked, len(l.tried), out, time.Since(began).Round(time.Millisecond))
	// SIGTERM answers every request in flight: each appended event was
	// acknowledged. After SIGKILL, an event without an acknowledgement
	// must belong to a message one of whose calls broke.
	for _, e := range sample {
		m := l.tried[msgKey{e.Conversation, e.MessageID}]
		switch {
		case m == nil || m.lastUnknown == "":
			t.Errorf("%s seq %d (%v %s) was appended, but no call for that message was sent without its reply", e.Conversation, e.Seq, e.Type, e.MessageID)
		case sig == syscall.SIGTERM:
			t.Errorf("after SIGTERM: %s seq %d (%v %s) was appended, but the client's call failed with: %s", e.Conversation, e.Seq, e.Type, e.MessageID, m.lastUnknown)
		}
	}
}

// verifyLedger checks the log against every acknowledgement and decide
// against every message's acknowledged history. It returns the number of
// events read.
func verifyLedger(t *testing.T, d *daemon, l *ledger, convs int) (total, unacked int, unackedEvents []conversation.Event) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, _, err := d.connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	logs := make(map[string][]conversation.Event)
	for i := range convs {
		conv := fmt.Sprintf("c%d", i)
		var events []conversation.Event
		for from := int64(0); ; {
			evs, next, err := c.Read(ctx, conv, from, 10000)
			if err != nil {
				t.Fatalf("read %s from %d: %v", conv, from, err)
			}
			if len(evs) == 0 {
				break
			}
			events = append(events, evs...)
			from = next
		}
		for j, e := range events {
			if e.Seq != int64(j) {
				t.Fatalf("%s: event %d has seq %d: seqs are not contiguous", conv, j, e.Seq)
			}
		}
		logs[conv] = events
		total += len(events)
	}
	for _, a := range l.acks {
		events := logs[a.conv]
		if a.seq < 0 || a.seq >= int64(len(events)) {
			t.Fatalf("acknowledged %+v: %s has only %d events: an acknowledged write was lost", a, a.conv, len(events))
		}
		e := events[a.seq]
		if e.Type != a.typ || e.MessageID != a.msg ||
			(a.typ == conversation.StepCompleted && (e.StepIndex != a.step || string(e.Output) != a.output)) {
			t.Fatalf("acknowledged %+v, but seq %d of %s is %+v", a, a.seq, a.conv, e)
		}
	}
	// Every non-duplicate acknowledgement has its own seq.
	seen := make(map[msgKey]ack)
	for _, a := range l.acks {
		if a.duplicate {
			continue
		}
		k := msgKey{a.conv, fmt.Sprint(a.seq)}
		if b, ok := seen[k]; ok {
			t.Fatalf("two appends acknowledged at one seq: %+v and %+v", a, b)
		}
		seen[k] = a
	}
	// Events that no reply acknowledged: their replies were lost with the
	// connection.
	unacked = 0
	for conv, events := range logs {
		for _, e := range events {
			if _, ok := seen[msgKey{conv, fmt.Sprint(e.Seq)}]; !ok {
				unacked++
				unackedEvents = append(unackedEvents, e)
			}
		}
	}
	for k, m := range l.tried {
		dec, err := c.Decide(ctx, k.conv, k.msg)
		if err != nil {
			t.Fatalf("decide %v: %v", k, err)
		}
		switch {
		case m.finishAcked:
			if dec.Action != conversation.Skip {
				t.Fatalf("%v: finish acknowledged, decide says %v", k, dec)
			}
		case dec.Action == conversation.Skip:
			if !m.finishAttempts {
				t.Fatalf("%v: decide says skip, but no finish was ever sent", k)
			}
		case dec.Action == conversation.Start:
			if m.received {
				t.Fatalf("%v: receive acknowledged, decide says start", k)
			}
		default:
			if dec.ResumeFrom < m.lastAckedStep+1 {
				t.Fatalf("%v: step %d acknowledged, decide resumes from %d", k, m.lastAckedStep, dec.ResumeFrom)
			}
		}
	}
	return total, unacked, unackedEvents
}
