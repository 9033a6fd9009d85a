package reliability

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/ipc"
)

// ack is one acknowledged write; token is a start's.
type ack struct {
	conv, msg string
	typ       conversation.Type
	step      uint32
	output    string
	seq       int64
	duplicate bool
	token     int64
}

// msgKey names a message of a conversation.
type msgKey struct{ conv, msg string }

// ledger is what the clients were told: every acknowledged write, and per
// message what was attempted.
type ledger struct {
	mu    sync.Mutex
	acks  []ack
	tried map[msgKey]*tried
	// tokens holds the highest token a start answered for each message;
	// no later start, nor the state after a restart, may answer a lower.
	tokens map[msgKey]int64
	n      atomic.Int64 // len(acks)
	busy   atomic.Int64 // deliveries busy with their worker's own lease
	// stop asks the workers to end between calls, so that no reply is
	// abandoned at the end.
	stop atomic.Bool
	// retained is set when the daemon compacts (SPEC §8): deliveries carry
	// the message's sent_at, a finished message may be compacted into a
	// tombstone or forgotten once its tombstone is dropped, and the log
	// skips the seqs of compacted messages.
	retained bool
	// forgotten counts the deliveries answered forgotten, compacted the
	// skips of a tombstone.
	forgotten, compacted atomic.Int64
}

// newLedger returns an empty ledger; retained as in ledger.
func newLedger(retained bool) *ledger {
	return &ledger{tried: make(map[msgKey]*tried), tokens: make(map[msgKey]int64), retained: retained}
}

// errStopped ends a lifecycle between two calls once the ledger's stop is
// set.
var errStopped = errors.New("stopped")

// tried is what the clients sent for one message, acknowledged or not.
type tried struct {
	worker         string // the worker that starts it with a lease; "" for none
	received       bool   // a receive was acknowledged (start or resume)
	lastAckedStep  int64
	finishAcked    bool
	finishAttempts bool   // a finish was sent, whatever its outcome
	lastUnknown    string // the error of the latest call of unknown outcome
	// sentAt is when the message was first produced (epoch ms, before its
	// first delivery). finishedAfter is when the write before its first
	// finish was sent: the batch of any finish of it began after that
	// write's batch ended, so its finished_at (the ts of its batch) is
	// later, and so is the horizon of a conversation that forgot it.
	sentAt, finishedAfter int64
}

// record adds a to the ledger. Returns an error for a start whose token
// is not its seq, or is lower than one a start of its message answered
// before.
func (l *ledger) record(a ack) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.acks = append(l.acks, a)
	l.n.Add(1)
	k := msgKey{a.conv, a.msg}
	m := l.msg(k)
	switch a.typ {
	case conversation.MessageReceived:
		m.received = true
	case conversation.ProcessingStarted:
		if a.token != a.seq {
			return fmt.Errorf("start of %v answered seq %d and token %d", k, a.seq, a.token)
		}
		if a.token < l.tokens[k] {
			return fmt.Errorf("start of %v answered token %d after token %d: a token went backwards", k, a.token, l.tokens[k])
		}
		l.tokens[k] = a.token
	case conversation.StepCompleted:
		m.lastAckedStep = max(m.lastAckedStep, int64(a.step))
	case conversation.ProcessingFinished:
		m.finishAcked = true
	}
	return nil
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

// whenForgotten judges a delivery of k that was answered forgotten (SPEC
// §8). It is right for a message a finish was sent for, whose tombstone
// may have been dropped: then the horizon is no earlier than that finish,
// and the message is done. It is right too for a message whose first
// delivery never landed (the horizon passed its sent_at meanwhile): then
// it reports false, and the client processes it anyway. It is wrong for a
// message received and never finished, which the daemon must know.
func (l *ledger) whenForgotten(k msgKey, dec ipc.Decision) (done bool, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.msg(k)
	switch {
	case !l.retained:
		return false, fmt.Errorf("forgotten before %d, but the daemon keeps everything", dec.Horizon.Before)
	case m.finishAttempts && dec.Horizon.Before < m.finishedAfter:
		return false, fmt.Errorf("forgotten before %d, but it finished after %d: the horizon is older than the tombstone it dropped", dec.Horizon.Before, m.finishedAfter)
	case m.finishAttempts:
		l.forgotten.Add(1)
		return true, nil
	case m.received:
		return false, fmt.Errorf("forgotten before %d, but its receive was acknowledged and no finish was ever sent", dec.Horizon.Before)
	}
	return false, nil
}

func stepOutput(conv, msg string, step uint32) string {
	return fmt.Sprintf("%s|%s|step-%d", conv, msg, step)
}

// holding is how a worker of the crash tests holds its messages: by name,
// with a lease of that length, renewed now and then, and its token on
// every write.
type holding struct {
	worker string
	lease  time.Duration
}

// holdingOf is the holding of worker w: none for even workers (protocol
// 1), a lease for odd ones, short enough for some to lapse while the
// daemon restarts (then the next start takes the message over with a new
// token) and long enough for others to be held across a restart (then
// the next delivery is busy, and the worker's start a duplicate).
func holdingOf(w int) *holding {
	switch w % 4 {
	case 1:
		return &holding{worker: fmt.Sprintf("w%d", w), lease: 25 * time.Millisecond}
	case 3:
		return &holding{worker: fmt.Sprintf("w%d", w), lease: time.Minute}
	}
	return nil
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
	h := holdingOf(w)
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
		done, err := lifecycle(ctx, c, l, k, h)
		switch {
		case err == nil && done:
			n++
		case err == nil:
		case errors.Is(err, errStopped), ctx.Err() != nil:
			return nil
		case d.unavailable && unavailableReply(err):
			// PostgreSQL is down under the daemon: the write may have
			// committed. Go on through receive once it is back.
			l.note(k, func(m *tried) { m.lastUnknown = err.Error() })
			time.Sleep(10 * time.Millisecond)
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
// steps from resume_from to 2 and finish. With a holding h, the start
// takes a lease, a renew precedes a step now and then, and every write
// carries the start's token; no other worker touches k, so a busy
// decision names h's worker, and the start then answers its token again.
// It reports whether the message is finished.
func lifecycle(ctx context.Context, c *ipc.Client, l *ledger, k msgKey, h *holding) (bool, error) {
	if l.stop.Load() {
		return false, errStopped
	}
	var delivery []ipc.Option
	l.note(k, func(m *tried) {
		if h != nil {
			m.worker = h.worker
		}
		if m.sentAt == 0 {
			m.sentAt = time.Now().UnixMilli()
		}
		delivery = l.delivery(m)
	})
	dec, err := c.Receive(ctx, k.conv, k.msg, delivery...)
	if err == nil && dec.Action == conversation.Forgotten {
		var done bool
		if done, err = l.whenForgotten(k, dec); err == nil && !done {
			// Its first delivery never landed, and the horizon passed its
			// sent_at meanwhile: the client chooses to process it.
			dec, err = c.Receive(ctx, k.conv, k.msg)
		}
	}
	if err != nil {
		return false, fmt.Errorf("receive: %w", err)
	}
	from := uint32(0)
	switch dec.Action {
	case conversation.Skip:
		if dec.Compacted {
			l.compacted.Add(1)
		}
		return true, nil
	case conversation.Forgotten:
		return true, nil
	case conversation.Start:
		var again bool
		l.note(k, func(m *tried) { again = m.received })
		if again {
			return false, fmt.Errorf("receive: start at seq %d, but a receive of the message was acknowledged before", dec.Seq)
		}
		if err := l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.MessageReceived, seq: dec.Seq, duplicate: dec.Duplicate}); err != nil {
			return false, err
		}
	case conversation.Resume:
		l.note(k, func(m *tried) { m.received = true })
		from = uint32(dec.ResumeFrom)
	case conversation.Busy:
		if h == nil || dec.Worker != h.worker {
			return false, fmt.Errorf("receive: busy, held by %q with token %d, but only %+v handles the message", dec.Worker, dec.Token, h)
		}
		// Its own lease outlived a restart: resume after the steps it knows.
		l.busy.Add(1)
		l.note(k, func(m *tried) { m.received, from = true, uint32(m.lastAckedStep+1) })
	default:
		return false, fmt.Errorf("receive: decision %v", dec.Action)
	}
	if l.stop.Load() {
		return false, errStopped
	}
	var startOpts, tokenOpts []ipc.Option
	if h != nil {
		startOpts = []ipc.Option{ipc.Worker(h.worker), ipc.Lease(h.lease)}
	}
	lastSent := time.Now().UnixMilli() // of the last write before finish
	a, err := c.Start(ctx, k.conv, k.msg, startOpts...)
	if err != nil {
		return false, fmt.Errorf("start: %w", err)
	}
	if err := l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.ProcessingStarted, seq: a.Seq, duplicate: a.Duplicate, token: a.Token}); err != nil {
		return false, err
	}
	if h != nil {
		tokenOpts = []ipc.Option{ipc.Token(a.Token)}
	}
	for s := from; s <= 2; s++ {
		if l.stop.Load() {
			return false, errStopped
		}
		if h != nil && rand.IntN(3) == 0 {
			r, err := c.Renew(ctx, k.conv, k.msg, a.Token, h.lease)
			if err != nil {
				return false, fmt.Errorf("renew token %d: %w", a.Token, err)
			}
			if r.LeaseExpiresAt <= 0 {
				return false, fmt.Errorf("renew token %d: %+v, without lease_expires_at", a.Token, r)
			}
			if err := l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.LeaseRenewed, seq: r.Seq, duplicate: r.Duplicate}); err != nil {
				return false, err
			}
		}
		out := stepOutput(k.conv, k.msg, s)
		lastSent = time.Now().UnixMilli()
		a, err := c.Step(ctx, k.conv, k.msg, s, []byte(out), tokenOpts...)
		if err != nil {
			return false, fmt.Errorf("step %d: %w", s, err)
		}
		if err := l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.StepCompleted, step: s, output: out, seq: a.Seq, duplicate: a.Duplicate}); err != nil {
			return false, err
		}
	}
	if l.stop.Load() {
		return false, errStopped
	}
	l.note(k, func(m *tried) {
		if !m.finishAttempts {
			m.finishedAfter = lastSent
		}
		m.finishAttempts = true
	})
	a, err = c.Finish(ctx, k.conv, k.msg, tokenOpts...)
	if err != nil {
		return false, fmt.Errorf("finish: %w", err)
	}
	return true, l.record(ack{conv: k.conv, msg: k.msg, typ: conversation.ProcessingFinished, seq: a.Seq, duplicate: a.Duplicate})
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
	l := newLedger(false)
	ld := startLoad(d, l, workers, convs)
	defer ld.cancel()
	spread := int64(600)
	if long() {
		spread = 2000
	}
	tokenChecks := 0
	for range stops {
		waitAcks(t, l, l.n.Load()+50+rand.Int64N(spread), ld.errs)
		d.restart(sig)
		tokenChecks += checkTokens(t, d, l)
	}
	// Let the workers carry their messages on past the last restart.
	waitAcks(t, l, l.n.Load()+100, ld.errs)
	ld.stop(t)
	v := verifyLedger(t, d, l, convs)
	out := d.runCheck()
	t.Logf("%v: %d stops survived, %d acknowledged writes verified against %d events (%d appended without an acknowledgement), %d messages decided; %s; %d tokens checked after restarts, none went back; check: %s; %v",
		sig, stops, len(l.acks), v.total, len(v.unacked), len(l.tried), leaseCounts(l), tokenChecks, out, time.Since(began).Round(time.Millisecond))
	checkUnacked(t, l, v.unacked, sig)
}

// load is the workers of a crash test at work.
type load struct {
	errs   chan error
	wg     sync.WaitGroup
	l      *ledger
	cancel context.CancelFunc
}

// startLoad starts `workers` workers on d over convs conversations, which
// record what they are told in l.
func startLoad(d *daemon, l *ledger, workers, convs int) *load {
	return startLoadOn([]*daemon{d}, l, workers, convs)
}

// startLoadOn is startLoad with the workers spread over the daemons ds in
// turn, which share one database.
func startLoadOn(ds []*daemon, l *ledger, workers, convs int) *load {
	ctx, cancel := context.WithCancel(context.Background())
	ld := &load{errs: make(chan error, workers), l: l, cancel: cancel}
	for w := range workers {
		ld.wg.Go(func() {
			if err := worker(ctx, ds[w%len(ds)], l, w, convs); err != nil {
				ld.errs <- err
			}
		})
	}
	return ld
}

// stop asks the workers to end between two calls, waits for them, and
// fails t if one of them failed.
func (ld *load) stop(t *testing.T) {
	t.Helper()
	ld.l.stop.Store(true)
	ld.wg.Wait()
	ld.cancel()
	close(ld.errs)
	for err := range ld.errs {
		t.Fatalf("worker: %v", err)
	}
}

// checkUnacked checks the events no reply acknowledged. SIGTERM answers
// every request in flight: each appended event was acknowledged. After
// SIGKILL, an event without an acknowledgement must belong to a message
// one of whose calls broke.
func checkUnacked(t *testing.T, l *ledger, unacked []conversation.Event, sig syscall.Signal) {
	t.Helper()
	for _, e := range unacked {
		m := l.tried[msgKey{e.Conversation, e.MessageID}]
		switch {
		case m == nil || m.lastUnknown == "":
			t.Errorf("%s seq %d (%v %s) was appended, but no call for that message was sent without its reply", e.Conversation, e.Seq, e.Type, e.MessageID)
		case sig == syscall.SIGTERM:
			t.Errorf("after SIGTERM: %s seq %d (%v %s) was appended, but the client's call failed with: %s", e.Conversation, e.Seq, e.Type, e.MessageID, m.lastUnknown)
		}
	}
}

// checkTokens checks, after a restart, that the state of every message a
// start acknowledged answers a token no lower than the highest start
// answered (a message compacted or forgotten keeps no token). It returns
// the number of messages checked.
func checkTokens(t *testing.T, d *daemon, l *ledger) int {
	t.Helper()
	l.mu.Lock()
	tokens := maps.Clone(l.tokens)
	l.mu.Unlock()
	ctx, c, done := d.dialCheck()
	defer done()
	states, err := messageStates(ctx, c, slices.Collect(maps.Keys(tokens)))
	if err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	for k, token := range tokens {
		if st := states[k]; st.Token < token && !l.gone(k, st) {
			t.Errorf("after a restart, state of %v answers token %d; a start answered %d before: a token went backwards", k, st.Token, token)
		}
	}
	return len(tokens)
}

// gone reports whether state st of message k says that it was compacted
// or forgotten, and the ledger allows it: the daemon compacts, and a
// finish of k was sent. Its events and its token are gone then. Call it
// after reading st, so that a finish sent before the compaction counts.
func (l *ledger) gone(k msgKey, st ipc.MessageState) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	m := l.tried[k]
	return l.retained && m != nil && m.finishAttempts && (st.Compacted || st.Status == conversation.StatusUnknown)
}

// delivery is the options of a delivery of m: its sent_at when the daemon
// compacts.
func (l *ledger) delivery(m *tried) []ipc.Option {
	if !l.retained {
		return nil
	}
	return []ipc.Option{ipc.SentAt(m.sentAt)}
}

// forEach calls f for every key of keys, 32 at a time over c's one
// connection (pipelined): there are thousands after a long run. It
// returns the first error of f.
func forEach(keys []msgKey, f func(msgKey) error) error {
	todo := make(chan msgKey)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for k := range todo {
				if err := f(k); err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	for _, k := range keys {
		todo <- k
	}
	close(todo)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// messageStates returns what state answers for each message of keys.
func messageStates(ctx context.Context, c *ipc.Client, keys []msgKey) (map[msgKey]ipc.MessageState, error) {
	var mu sync.Mutex
	states := make(map[msgKey]ipc.MessageState, len(keys))
	err := forEach(keys, func(k msgKey) error {
		st, err := c.MessageState(ctx, k.conv, k.msg)
		if err != nil {
			return fmt.Errorf("state %v: %w", k, err)
		}
		mu.Lock()
		states[k] = st
		mu.Unlock()
		return nil
	})
	return states, err
}

// leaseCounts says how many messages were leased, how many renewals and
// takeovers (a start that appended after another start of its message)
// were acknowledged, and how many deliveries were busy.
func leaseCounts(l *ledger) string {
	leased := 0
	for _, m := range l.tried {
		if m.worker != "" {
			leased++
		}
	}
	renewals, takeovers := 0, 0
	starts := make(map[msgKey]int)
	for _, a := range l.acks {
		switch {
		case a.typ == conversation.LeaseRenewed && !a.duplicate:
			renewals++
		case a.typ == conversation.ProcessingStarted && !a.duplicate:
			k := msgKey{a.conv, a.msg}
			if starts[k]++; starts[k] > 1 {
				takeovers++
			}
		}
	}
	return fmt.Sprintf("%d messages leased, %d renewals and %d takeovers acknowledged, %d deliveries busy with their worker's lease",
		leased, renewals, takeovers, l.busy.Load())
}

// verified is what verifyLedger read: the remaining log of each
// conversation in seq order, and what state answers for each message the
// clients tried; and what check found in them.
type verified struct {
	logs   map[string][]conversation.Event
	states map[msgKey]ipc.MessageState

	total   int
	unacked []conversation.Event // the events no reply acknowledged
	latest  map[msgKey]int64     // the seq of each message's latest processing_started
}

// readLogs reads the log of conversations c0.. c<convs-1> in seq order, and
// fails t unless its seqs are contiguous from 0 or, when some may have
// been compacted (gaps), increasing.
func readLogs(t *testing.T, ctx context.Context, c *ipc.Client, convs int, gaps bool) map[string][]conversation.Event {
	t.Helper()
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
			if !gaps && e.Seq != int64(j) {
				t.Fatalf("%s: event %d has seq %d: seqs are not contiguous", conv, j, e.Seq)
			}
			if j > 0 && e.Seq <= events[j-1].Seq {
				t.Fatalf("%s: event %d has seq %d, after seq %d: seqs do not increase", conv, j, e.Seq, events[j-1].Seq)
			}
		}
		logs[conv] = events
	}
	return logs
}

// check returns what is wrong with the log and the states of v against
// the ledger, and fills in the rest of v. Every acknowledged event must be
// in the log at its seq, but for a message gone (compacted or forgotten,
// see ledger.gone), of which no event may be left: a partial compaction.
// No two appends may be acknowledged at one seq, and the token of each
// message left is the seq of its latest start, never below one a start
// answered.
func (v *verified) check(l *ledger) (problems []string) {
	at := make(map[msgKey]conversation.Event) // by conversation and seq
	left := make(map[msgKey]int)              // events left, by message
	v.total, v.unacked, v.latest = 0, nil, make(map[msgKey]int64)
	for conv, events := range v.logs {
		for _, e := range events {
			at[msgKey{conv, fmt.Sprint(e.Seq)}] = e
			left[msgKey{conv, e.MessageID}]++
			if e.Type == conversation.ProcessingStarted {
				v.latest[msgKey{conv, e.MessageID}] = e.Seq
			}
		}
		v.total += len(events)
	}
	for _, a := range l.acks {
		k := msgKey{a.conv, a.msg}
		e, ok := at[msgKey{a.conv, fmt.Sprint(a.seq)}]
		switch {
		case !ok && l.gone(k, v.states[k]):
		case !ok:
			problems = append(problems, fmt.Sprintf("acknowledged %+v: %s has no event at seq %d (%d events left), and its message is %v: an acknowledged write was lost",
				a, a.conv, a.seq, len(v.logs[a.conv]), v.states[k].Status))
		case e.Type != a.typ || e.MessageID != a.msg || (a.typ == conversation.StepCompleted && (e.StepIndex != a.step || string(e.Output) != a.output)):
			problems = append(problems, fmt.Sprintf("acknowledged %+v, but seq %d of %s is %+v", a, a.seq, a.conv, e))
		}
	}
	for k, st := range v.states {
		if n := left[k]; n > 0 && l.gone(k, st) {
			problems = append(problems, fmt.Sprintf("%v is %v (compacted: %v), but %d of its events are left: a partial compaction", k, st.Status, st.Compacted, n))
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
			problems = append(problems, fmt.Sprintf("two appends acknowledged at one seq: %+v and %+v", a, b))
		}
		seen[k] = a
	}
	// Events that no reply acknowledged: their replies were lost with the
	// connection.
	for k, e := range at {
		if _, ok := seen[k]; !ok {
			v.unacked = append(v.unacked, e)
		}
	}
	for k, token := range l.tokens {
		st := v.states[k]
		if !l.gone(k, st) && (st.Token != v.latest[k] || st.Token < token) {
			problems = append(problems, fmt.Sprintf("%v: state answers token %d; its latest processing_started is at seq %d, and a start answered token %d", k, st.Token, v.latest[k], token))
		}
	}
	return problems
}

// verifyLedger checks the log against every acknowledgement (verified's
// check) and decide against every message's acknowledged history. When
// the daemon compacts, verifyRetained checks the messages gone.
func verifyLedger(t *testing.T, d *daemon, l *ledger, convs int) *verified {
	t.Helper()
	ctx, c, done := d.dialCheck()
	defer done()
	v := &verified{}
	var err error
	if v.states, err = messageStates(ctx, c, slices.Collect(maps.Keys(l.tried))); err != nil {
		t.Fatal(err)
	}
	v.logs = readLogs(t, ctx, c, convs, l.retained)
	if problems := v.check(l); len(problems) > 0 {
		t.Fatalf("%d problems, among them:\n%s", len(problems), strings.Join(problems[:min(len(problems), 20)], "\n"))
	}
	for k, m := range l.tried {
		if l.gone(k, v.states[k]) {
			continue
		}
		dec, err := c.Decide(ctx, k.conv, k.msg, l.delivery(m)...)
		if err != nil {
			t.Fatalf("decide %v: %v", k, err)
		}
		switch {
		case dec.Action == conversation.Busy:
			if m.worker == "" || dec.Worker != m.worker || dec.Token != v.latest[k] {
				t.Fatalf("%v: decide says busy, held by %q with token %d; its worker is %q, its latest start at seq %d", k, dec.Worker, dec.Token, m.worker, v.latest[k])
			}
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
		case dec.Action != conversation.Resume:
			t.Fatalf("%v: decide says %+v, and no finish was ever sent", k, dec)
		default:
			if dec.ResumeFrom < m.lastAckedStep+1 {
				t.Fatalf("%v: step %d acknowledged, decide resumes from %d", k, m.lastAckedStep, dec.ResumeFrom)
			}
		}
	}
	return v
}
