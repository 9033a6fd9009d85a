//go:build linux

package powerloss

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/ipc"
)

// The load: workers clients, each running message lifecycles over convs
// conversations.
const workers, convs = 16, 3

// key names a message of a conversation.
type key struct{ conv, msg string }

// ack is one acknowledged write.
type ack struct {
	key
	typ       conversation.Type
	step      uint32
	output    string
	seq       int64
	duplicate bool
}

func (a ack) String() string {
	s := fmt.Sprintf("%v of %s/%s", a.typ, a.conv, a.msg)
	if a.typ == conversation.StepCompleted {
		s += fmt.Sprintf(" (step %d)", a.step)
	}
	if a.duplicate {
		s += " (a duplicate)"
	}
	return s + fmt.Sprintf(" acknowledged at seq %d", a.seq)
}

// message is what the clients sent for one message, and what of it was
// acknowledged.
type message struct {
	sentAt       int64 // when it was first produced (epoch ms), before its first delivery
	received     bool  // a receive was acknowledged (start or resume)
	lastStep     int64 // the highest acknowledged step, -1 for none
	finishSeq    int64 // the acknowledged finish's seq, -1 for none
	finishSentAt int64 // when its first finish was sent (epoch ms), 0 for none
}

// ledger is what the clients were told.
type ledger struct {
	mu   sync.Mutex
	acks []ack
	msgs map[key]*message
	n    atomic.Int64 // len(acks)
	// stop asks the workers to end between calls.
	stop atomic.Bool
	// failed holds the first error a worker ended with.
	failed atomic.Pointer[error]
}

func newLedger() *ledger { return &ledger{msgs: make(map[key]*message)} }

// msg returns the record of k, making it; l.mu is held.
func (l *ledger) msg(k key) *message {
	m := l.msgs[k]
	if m == nil {
		m = &message{sentAt: time.Now().UnixMilli(), lastStep: -1, finishSeq: -1}
		l.msgs[k] = m
	}
	return m
}

// with runs f on the record of k.
func (l *ledger) with(k key, f func(*message)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	f(l.msg(k))
}

func (l *ledger) record(a ack) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acks = append(l.acks, a)
	l.n.Add(1)
	m := l.msg(a.key)
	switch a.typ {
	case conversation.MessageReceived:
		m.received = true
	case conversation.StepCompleted:
		m.lastStep = max(m.lastStep, int64(a.step))
	case conversation.ProcessingFinished:
		m.finishSeq = a.seq
	}
}

// errStopped ends a lifecycle between two calls once the ledger's stop is
// set.
var errStopped = errors.New("stopped")

func output(k key, step uint32) string { return fmt.Sprintf("%s|%s|step-%d", k.conv, k.msg, step) }

// run starts the workers; wait waits for them to end (once the ledger's
// stop is set, or ctx ends) and returns the first error one of them met.
func run(ctx context.Context, r *rig, l *ledger) (wait func() error) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			if err := worker(ctx, r, l, w); err != nil {
				err = fmt.Errorf("worker %d: %w", w, err)
				l.failed.CompareAndSwap(nil, &err)
			}
		})
	}
	return func() error {
		wg.Wait()
		return l.err()
	}
}

// err returns the first error a worker ended with, or nil.
func (l *ledger) err() error {
	if err := l.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// worker runs message lifecycles: message n of worker w is "w<w>-m<n>" in
// conversation "c<n%convs>". A call that fails is of unknown outcome, and
// must have failed because the power went out: the worker waits for the
// daemon to restart and goes on with the same message.
func worker(ctx context.Context, r *rig, l *ledger, w int) error {
	var s session
	defer func() {
		if s.c != nil {
			s.c.Close()
		}
	}()
	for n := 0; ctx.Err() == nil && !l.stop.Load(); {
		k := key{fmt.Sprintf("c%d", n%convs), fmt.Sprintf("w%d-m%d", w, n)}
		if s.c == nil {
			var err error
			if s, err = r.connect(ctx); err != nil {
				return nil // ctx ended
			}
		}
		done, err := lifecycle(ctx, s.c, l, k)
		switch {
		case err == nil && done:
			n++
		case err == nil:
		case errors.Is(err, errStopped) || ctx.Err() != nil:
			return nil
		case errors.Is(err, errWrong):
			return fmt.Errorf("%v: %w", k, err)
		default:
			s.c.Close()
			s.c = nil
			if werr := r.awaitAfter(ctx, s); werr != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("%v: %v: %w", k, err, werr)
			}
		}
	}
	return nil
}

// errWrong is an answer that contradicts what was acknowledged before.
var errWrong = errors.New("wrong answer")

// lifecycle processes message k once through: receive (with its sent_at),
// then start, the steps from resume_from to 2 and finish. It reports
// whether the message is done.
func lifecycle(ctx context.Context, c *ipc.Client, l *ledger, k key) (bool, error) {
	if l.stop.Load() {
		return false, errStopped
	}
	var m message
	l.with(k, func(p *message) { m = *p })
	dec, err := c.Receive(ctx, k.conv, k.msg, ipc.SentAt(m.sentAt))
	if err != nil {
		return false, err
	}
	if dec.Action == conversation.Forgotten {
		switch {
		case m.finishSentAt > 0 && dec.Horizon.Before >= m.finishSentAt:
			return true, nil // finished, compacted, and its tombstone dropped
		case m.received:
			return false, fmt.Errorf("%w: receive answered forgotten before %d, but a receive was acknowledged and no finish sent before then", errWrong, dec.Horizon.Before)
		}
		// Its first delivery never landed, and the horizon passed its
		// sent_at meanwhile: process it all the same.
		if dec, err = c.Receive(ctx, k.conv, k.msg); err != nil {
			return false, err
		}
	}
	from := uint32(0)
	switch dec.Action {
	case conversation.Skip:
		if m.finishSentAt == 0 {
			return false, fmt.Errorf("%w: receive answered skip, but no finish was ever sent", errWrong)
		}
		return true, nil
	case conversation.Start:
		if m.received {
			return false, fmt.Errorf("%w: receive answered start at seq %d, but a receive was acknowledged before", errWrong, dec.Seq)
		}
		l.record(ack{key: k, typ: conversation.MessageReceived, seq: dec.Seq, duplicate: dec.Duplicate})
	case conversation.Resume:
		if dec.ResumeFrom < m.lastStep+1 {
			return false, fmt.Errorf("%w: receive resumes from %d, but step %d was acknowledged", errWrong, dec.ResumeFrom, m.lastStep)
		}
		l.with(k, func(p *message) { p.received = true })
		from = uint32(dec.ResumeFrom)
	default:
		return false, fmt.Errorf("%w: receive answered %v", errWrong, dec.Action)
	}
	if l.stop.Load() {
		return false, errStopped
	}
	a, err := c.Start(ctx, k.conv, k.msg)
	if err != nil {
		return false, err
	}
	l.record(ack{key: k, typ: conversation.ProcessingStarted, seq: a.Seq, duplicate: a.Duplicate})
	for s := from; s <= 2; s++ {
		if l.stop.Load() {
			return false, errStopped
		}
		out := output(k, s)
		a, err := c.Step(ctx, k.conv, k.msg, s, []byte(out))
		if err != nil {
			return false, err
		}
		l.record(ack{key: k, typ: conversation.StepCompleted, step: s, output: out, seq: a.Seq, duplicate: a.Duplicate})
	}
	if l.stop.Load() {
		return false, errStopped
	}
	l.with(k, func(p *message) {
		if p.finishSentAt == 0 {
			p.finishSentAt = time.Now().UnixMilli()
		}
	})
	a, err = c.Finish(ctx, k.conv, k.msg)
	if err != nil {
		return false, err
	}
	l.record(ack{key: k, typ: conversation.ProcessingFinished, seq: a.Seq, duplicate: a.Duplicate})
	return true, nil
}

// waitAcks waits until the ledger holds at least n acknowledgements, or
// fails the test after a minute.
func waitAcks(t *testing.T, l *ledger, n int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for l.n.Load() < n {
		if err := l.err(); err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d acknowledgements after a minute", l.n.Load(), n)
		}
		time.Sleep(time.Millisecond) // polling a counter, with a deadline
	}
}

// verdict is what verify found.
type verdict struct {
	acks, events, messages int
	compacted, forgotten   int      // messages decide answered so of
	lostAcks               int      // acknowledged writes the log contradicts
	lost                   []string // what the log contradicts: acknowledged writes, decisions
}

// verify checks the log of the daemon against every acknowledgement, and
// decide against every message's acknowledged history. It also checks, if
// keep is not nil, that the conversations named in it hold exactly those
// events.
func verify(t *testing.T, r *rig, l *ledger, keep map[string][]conversation.Event) verdict {
	t.Helper()
	ctx, c, done := r.dialCheck()
	defer done()
	l.mu.Lock()
	defer l.mu.Unlock()
	var v verdict
	lose := func(format string, args ...any) { v.lost = append(v.lost, fmt.Sprintf(format, args...)) }

	logs := make(map[string]map[int64]conversation.Event)
	for conv, want := range keep {
		got := readAll(t, ctx, c, conv)
		// Compaction takes the events of a finished message.
		gone := make(map[string]bool)
		for _, e := range want {
			if e.Type != conversation.MessageReceived {
				continue
			}
			dec, err := c.Decide(ctx, conv, e.MessageID, ipc.SentAt(e.ReceivedAt))
			if err != nil {
				t.Fatalf("decide %s/%s: %v", conv, e.MessageID, err)
			}
			gone[e.MessageID] = dec.Compacted || dec.Action == conversation.Forgotten
		}
		kept := func(e conversation.Event) bool { return !gone[e.MessageID] }
		if g, w := filter(got, kept), filter(want, kept); fmt.Sprint(g) != fmt.Sprint(w) {
			lose("%s holds %d events of the messages not compacted, not the %d a migration without a cut leaves:\n%v\nwant\n%v", conv, len(g), len(w), g, w)
		}
	}
	for i := range convs {
		conv := fmt.Sprintf("c%d", i)
		events := readAll(t, ctx, c, conv)
		logs[conv] = make(map[int64]conversation.Event, len(events))
		for j, e := range events {
			if j > 0 && e.Seq <= events[j-1].Seq {
				t.Fatalf("%s: seq %d after seq %d", conv, e.Seq, events[j-1].Seq)
			}
			logs[conv][e.Seq] = e
		}
		v.events += len(events)
	}

	// Every acknowledged write is at its seq, or its message is gone by
	// compaction.
	decisions := decideAll(t, ctx, c, l)
	type at struct {
		conv string
		seq  int64
	}
	owner := make(map[at]ack) // the append acknowledged at a seq
	for _, a := range l.acks {
		v.acks++
		if !a.duplicate {
			if b, ok := owner[at{a.conv, a.seq}]; ok {
				v.lostAcks++
				lose("two appends acknowledged at one seq: %v, and %v", b, a)
			}
			owner[at{a.conv, a.seq}] = a
		}
		e, ok := logs[a.conv][a.seq]
		switch {
		case ok && (e.Type != a.typ || e.MessageID != a.msg ||
			(a.typ == conversation.StepCompleted && (e.StepIndex != a.step || string(e.Output) != a.output))):
			v.lostAcks++
			lose("%v, but the log has %v of %s (step %d) there", a, e.Type, e.MessageID, e.StepIndex)
		case ok:
		case decisions[a.key].Action == conversation.Forgotten, decisions[a.key].Compacted:
			// Checked with the message's decision below.
		default:
			v.lostAcks++
			lose("%v, but the log has no event there, and decide answers %v, not compacted", a, decisions[a.key].Action)
		}
	}

	// decide agrees with every message's acknowledged history.
	for k, m := range l.msgs {
		v.messages++
		dec := decisions[k]
		switch {
		case dec.Compacted:
			v.compacted++
		case dec.Action == conversation.Forgotten:
			v.forgotten++
		}
		switch {
		case dec.Action == conversation.Forgotten:
			if m.received && (m.finishSentAt == 0 || dec.Horizon.Before < m.finishSentAt) {
				lose("%v: decide answers forgotten before %d; receive acknowledged %v, finish sent at %d", k, dec.Horizon.Before, m.received, m.finishSentAt)
			}
		case m.finishSeq >= 0 && dec.Action != conversation.Skip:
			lose("%v: finish acknowledged at seq %d, decide answers %v", k, m.finishSeq, dec.Action)
		case dec.Action == conversation.Skip && m.finishSentAt == 0:
			lose("%v: decide answers skip, but no finish was sent", k)
		case dec.Action == conversation.Start && m.received:
			lose("%v: a receive was acknowledged, decide answers start", k)
		case dec.Action == conversation.Resume && dec.ResumeFrom < m.lastStep+1:
			lose("%v: step %d acknowledged, decide resumes from %d", k, m.lastStep, dec.ResumeFrom)
		}
		// A compacted message's finish is a duplicate at the seq its
		// finish was acknowledged at.
		if dec.Compacted && m.finishSeq >= 0 {
			a, err := c.Finish(ctx, k.conv, k.msg)
			var e *ipc.Error
			if errors.As(err, &e) && e.Code == ipc.CodeUnknownMessage {
				// Its tombstone was dropped since decide.
				again, derr := c.Decide(ctx, k.conv, k.msg, ipc.SentAt(m.sentAt))
				if derr == nil && again.Action == conversation.Forgotten && again.Horizon.Before >= m.finishSentAt {
					continue
				}
			}
			if err != nil || !a.Duplicate || a.Seq != m.finishSeq {
				lose("%v: compacted; finish again answers %+v, %v; want a duplicate at seq %d", k, a, err, m.finishSeq)
			}
		}
	}
	return v
}

func filter(events []conversation.Event, keep func(conversation.Event) bool) []conversation.Event {
	var out []conversation.Event
	for _, e := range events {
		if keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// readAll reads every event of conv.
func readAll(t *testing.T, ctx context.Context, c *ipc.Client, conv string) []conversation.Event {
	t.Helper()
	var events []conversation.Event
	for from := int64(0); ; {
		evs, next, err := c.Read(ctx, conv, from, 10000)
		if err != nil {
			t.Fatalf("read %s from %d: %v", conv, from, err)
		}
		if len(evs) == 0 {
			return events
		}
		events = append(events, evs...)
		from = next
	}
}

// decideAll decides every message of the ledger, with its sent_at; l.mu
// is held.
func decideAll(t *testing.T, ctx context.Context, c *ipc.Client, l *ledger) map[key]ipc.Decision {
	t.Helper()
	var mu sync.Mutex
	decisions := make(map[key]ipc.Decision, len(l.msgs))
	todo := make(chan key)
	var failed atomic.Pointer[error]
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for k := range todo {
				dec, err := c.Decide(ctx, k.conv, k.msg, ipc.SentAt(l.msgs[k].sentAt))
				if err != nil {
					err = fmt.Errorf("decide %v: %w", k, err)
					failed.CompareAndSwap(nil, &err)
					continue
				}
				mu.Lock()
				decisions[k] = dec
				mu.Unlock()
			}
		})
	}
	for k := range l.msgs {
		todo <- k
	}
	close(todo)
	wg.Wait()
	if err := failed.Load(); err != nil {
		t.Fatal(*err)
	}
	return decisions
}
