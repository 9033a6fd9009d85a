package reliability

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/ipc"
)

// The retention of the retention crash test: small enough that compaction
// and drops run all the time under the load. The daemon looks for work
// every passEvery: half of max(1 s, a tenth of the shorter setting), so
// that what became eligible goes within that bound (SPEC §8).
const (
	retainFinished   = 50 * time.Millisecond
	retainTombstones = time.Second
	passEvery        = 500 * time.Millisecond
)

// TestRetentionCrashSIGKILL runs the crash test's workers against a daemon
// that compacts finished messages 50 ms after they finish and drops their
// tombstones a second later, and kills it with SIGKILL at random moments,
// half of them aimed at the start of a compaction pass. Each kill waits
// until compaction has made tombstones in the running daemon (and, after
// the first, dropped some). While the daemon is down, liminald check must
// pass on the database as the kill left it. After each restart, tokens
// never went back (checkTokens), next_seq of no conversation went down,
// and every message whose finish was acknowledged is still finished
// (checkFinished). At the end the daemon is restarted without retention,
// so that nothing changes under the final verification: verifyLedger, and
// verifyRetained for the messages compaction took; check must prove the
// database once more.
func TestRetentionCrashSIGKILL(t *testing.T) {
	kills := 3
	if long() {
		kills = 30
	}
	began := time.Now()
	const workers, convs = 12, 3
	d := newDaemon(t, "--retain-finished", retainFinished.String(), "--retain-tombstones", retainTombstones.String())
	l := newLedger(true)
	ld := startLoad(d, l, workers, convs)
	defer ld.cancel()
	nexts := make(map[string]int64) // the highest next_seq state answered, by conversation
	judged := make(map[msgKey]bool) // by checkFinished
	aimed, finishedChecks := 0, 0
	var passes int64
	var passMax, passTotal float64
	for i := range kills {
		waitAcks(t, l, l.n.Load()+50+rand.Int64N(300), ld.errs)
		ctx, c, done := d.dialCheck()
		st := awaitStats(t, ctx, c, ld.errs, fmt.Sprintf("compaction passes and tombstones before kill %d", i+1), func(st ipc.Stats) bool {
			return st.Compaction.Passes > 0 && st.Tombstones > 0 && (i == 0 || st.TombstonesDropped > 0)
		})
		checkNext(t, ctx, c, convs, nexts)
		if i%2 == 0 {
			st = aimAtPass(t, ctx, c, ld.errs)
			aimed++
		}
		passes, passTotal, passMax = passes+st.Compaction.Passes, passTotal+st.Compaction.MsTotal, max(passMax, st.Compaction.MsMax)
		done()
		d.restartWith(syscall.SIGKILL, func() { d.runCheck() })
		checkTokens(t, d, l)
		finishedChecks += checkFinished(t, d, l, convs, nexts, judged)
	}
	// Let the workers carry their messages on past the last kill.
	waitAcks(t, l, l.n.Load()+100, ld.errs)
	ld.stop(t)
	d.args = nil
	d.restart(syscall.SIGTERM)
	v := verifyLedger(t, d, l, convs)
	compacted, forgotten := verifyRetained(t, d, l, v, convs, nexts)
	if compacted == 0 || forgotten == 0 {
		t.Fatalf("of the messages the clients finished, %d are compacted and %d forgotten: the run did not exercise both", compacted, forgotten)
	}
	selfCheck(t, l, v)
	out := d.runCheck()
	t.Logf("%d SIGKILLs survived (%d aimed at a compaction pass; %d passes before the kills took %.1f ms on average, the longest %.1f ms), %d liminald checks passed; %d acknowledged writes verified against %d events left (%d appended without an acknowledgement); %d messages decided, %d of them compacted and %d forgotten at the end; %d judgements of finished messages after restarts; deliveries answered skip of a tombstone %d times and forgotten %d times; %s; check: %s; %v",
		kills, aimed, passes, passTotal/float64(max(passes, 1)), passMax, kills+1, len(l.acks), v.total, len(v.unacked), len(l.tried), compacted, forgotten, finishedChecks,
		l.compacted.Load(), l.forgotten.Load(), leaseCounts(l), out, time.Since(began).Round(time.Millisecond))
	checkUnacked(t, l, v.unacked, syscall.SIGKILL)
}

// awaitStats polls stats until cond holds, and fails t after 30 s or when
// a worker fails (errs may be nil).
func awaitStats(t *testing.T, ctx context.Context, c *ipc.Client, errs <-chan error, what string, cond func(ipc.Stats) bool) ipc.Stats {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if cond(st) {
			return st
		}
		select {
		case err := <-errs:
			t.Fatalf("worker: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30 s: stats %+v", what, st)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, with a deadline
	}
}

// aimAtPass returns when the daemon's next compaction pass begins, as
// nearly as can be seen from outside: it waits for a pass to end (stats
// counts it), then sleeps the interval the daemon waits between passes,
// less a millisecond, plus a random part of the average pass so far; a
// kill then lands just before the pass, or in it. It returns the stats
// that counted the pass.
func aimAtPass(t *testing.T, ctx context.Context, c *ipc.Client, errs <-chan error) ipc.Stats {
	t.Helper()
	st, err := c.Stats(ctx)
	if err != nil {
		t.Fatalf("stats: %v", err)
	}
	passes := st.Compaction.Passes
	st = awaitStats(t, ctx, c, errs, "end of a compaction pass", func(st ipc.Stats) bool { return st.Compaction.Passes > passes })
	ended := time.Now()
	spread := time.Duration(st.Compaction.MsTotal/float64(st.Compaction.Passes)*float64(time.Millisecond)) + 2*time.Millisecond
	time.Sleep(time.Until(ended.Add(passEvery - time.Millisecond + rand.N(spread))))
	return st
}

// checkNext checks that next_seq of no conversation went down since nexts
// was last updated (seqs are never reused, SPEC §8), and updates it.
func checkNext(t *testing.T, ctx context.Context, c *ipc.Client, convs int, nexts map[string]int64) {
	t.Helper()
	for i := range convs {
		conv := fmt.Sprintf("c%d", i)
		st, err := c.State(ctx, conv)
		if err != nil {
			t.Fatalf("state %s: %v", conv, err)
		}
		if st.Next < nexts[conv] {
			t.Fatalf("%s: next_seq is %d, after %d: it went down, and a seq may be reused", conv, st.Next, nexts[conv])
		}
		nexts[conv] = st.Next
	}
}

// finished is what the ledger says of a message a finish was sent for:
// the seq its finish was acknowledged at (-1 if none was), the highest
// seq any of its writes was acknowledged at, and its times.
type finished struct {
	k                     msgKey
	finishSeq, highest    int64
	sentAt, finishedAfter int64
}

// finishedMessages returns what the ledger says of each message a finish
// was sent for (acked: only those whose finish was acknowledged).
func finishedMessages(l *ledger, acked bool) map[msgKey]finished {
	l.mu.Lock()
	defer l.mu.Unlock()
	fs := make(map[msgKey]finished)
	for k, m := range l.tried {
		if m.finishAttempts && (m.finishAcked || !acked) {
			fs[k] = finished{k: k, finishSeq: -1, highest: -1, sentAt: m.sentAt, finishedAfter: m.finishedAfter}
		}
	}
	for _, a := range l.acks {
		k := msgKey{a.conv, a.msg}
		if f, ok := fs[k]; ok {
			f.highest = max(f.highest, a.seq)
			if a.typ == conversation.ProcessingFinished {
				f.finishSeq = a.seq
			}
			fs[k] = f
		}
	}
	return fs
}

// judgeFinished checks what SPEC §8 lets compaction change of a message a
// finish was sent for, and that nothing else changed; it may run while
// compaction goes on. A delivery with its sent_at is skip, compacted or
// not, or forgotten once its tombstone was dropped. Skip: finish again is
// a duplicate at the seq its finish was acknowledged at (at a seq after
// every acknowledged one when its reply was lost). Forgotten: the horizon
// is no older than its finish, a delivery without sent_at starts it and
// carries that horizon, and finish answers unknown_message. It returns
// the decision judged.
func judgeFinished(ctx context.Context, c *ipc.Client, f finished) (ipc.Decision, error) {
	dec, err := c.Decide(ctx, f.k.conv, f.k.msg, ipc.SentAt(f.sentAt))
	if err != nil {
		return dec, fmt.Errorf("decide %v: %w", f.k, err)
	}
	switch dec.Action {
	case conversation.Skip:
		a, err := c.Finish(ctx, f.k.conv, f.k.msg)
		if errors.Is(err, ipc.CodeUnknownMessage) {
			// Its tombstone was dropped since decide answered.
			return judgeFinished(ctx, c, f)
		}
		switch {
		case err != nil:
			return dec, fmt.Errorf("finish again of %v, decided %+v: %w", f.k, dec, err)
		case !a.Duplicate || (f.finishSeq >= 0 && a.Seq != f.finishSeq) || (f.finishSeq < 0 && a.Seq <= f.highest):
			return dec, fmt.Errorf("finish again of %v, decided %+v, answered %+v; its finish was acknowledged at seq %d, its writes up to seq %d", f.k, dec, a, f.finishSeq, f.highest)
		}
	case conversation.Forgotten:
		if dec.Horizon.Before < f.finishedAfter {
			return dec, fmt.Errorf("%v: forgotten before %d, but it finished after %d", f.k, dec.Horizon.Before, f.finishedAfter)
		}
		fresh, err := c.Decide(ctx, f.k.conv, f.k.msg)
		if err != nil {
			return dec, fmt.Errorf("decide %v without sent_at: %w", f.k, err)
		}
		if fresh.Action != conversation.Start || !fresh.Horizon.Set || fresh.Horizon.Before < f.finishedAfter {
			return dec, fmt.Errorf("%v: forgotten, yet decide without sent_at says %+v, not a start carrying a horizon no older than its finish, after %d", f.k, fresh, f.finishedAfter)
		}
		if _, err := c.Finish(ctx, f.k.conv, f.k.msg); !errors.Is(err, ipc.CodeUnknownMessage) {
			return dec, fmt.Errorf("%v: forgotten, yet finish answers %v, not unknown_message", f.k, err)
		}
	default:
		return dec, fmt.Errorf("%v: a finish was acknowledged at seq %d, yet decide says %+v", f.k, f.finishSeq, dec)
	}
	return dec, nil
}

// checkFinished runs checkNext, and judgeFinished on the messages whose
// finish was acknowledged, after a restart while the workers and
// compaction go on: on those it did not judge before (judged), and on
// up to resampled of the others, at random (a long run finishes tens of
// thousands). It returns the number of messages judged.
func checkFinished(t *testing.T, d *daemon, l *ledger, convs int, nexts map[string]int64, judged map[msgKey]bool) int {
	t.Helper()
	const resampled = 1000
	fs := finishedMessages(l, true)
	var keys, again []msgKey
	for k := range fs {
		if judged[k] {
			again = append(again, k)
		} else {
			keys, judged[k] = append(keys, k), true
		}
	}
	rand.Shuffle(len(again), func(i, j int) { again[i], again[j] = again[j], again[i] })
	keys = append(keys, again[:min(len(again), resampled)]...)
	ctx, c, done := d.dialCheck()
	defer done()
	checkNext(t, ctx, c, convs, nexts)
	if err := forEach(keys, func(k msgKey) error {
		_, err := judgeFinished(ctx, c, fs[k])
		return err
	}); err != nil {
		t.Fatalf("after a restart: %v", err)
	}
	return len(keys)
}

// verifyRetained checks, on a daemon that no longer compacts, every
// message a finish was sent for: judgeFinished, and its decision agrees
// with its state; a tombstone is finished with no steps, its attempts no
// fewer than the starts acknowledged; a forgotten message's conversation
// keeps a horizon no older than its finish. next_seq of every conversation
// did not go down, and is above every seq acknowledged or left in the log.
// It returns the number of messages compacted and forgotten.
func verifyRetained(t *testing.T, d *daemon, l *ledger, v *verified, convs int, nexts map[string]int64) (compacted, forgotten int) {
	t.Helper()
	ctx, c, done := d.dialCheck()
	defer done()
	checkNext(t, ctx, c, convs, nexts)
	starts := make(map[msgKey]int64)
	for _, a := range l.acks {
		if a.seq >= nexts[a.conv] {
			t.Fatalf("acknowledged %+v, but next_seq of %s is %d", a, a.conv, nexts[a.conv])
		}
		if a.typ == conversation.ProcessingStarted && !a.duplicate {
			starts[msgKey{a.conv, a.msg}]++
		}
	}
	for conv, events := range v.logs {
		if n := len(events); n > 0 && events[n-1].Seq >= nexts[conv] {
			t.Fatalf("%s holds seq %d, but its next_seq is %d", conv, events[n-1].Seq, nexts[conv])
		}
	}
	horizons := make(map[string]conversation.Horizon)
	for i := range convs {
		conv := fmt.Sprintf("c%d", i)
		st, err := c.State(ctx, conv)
		if err != nil {
			t.Fatalf("state %s: %v", conv, err)
		}
		horizons[conv] = st.Horizon
	}
	var mu sync.Mutex
	fs := finishedMessages(l, false)
	err := forEach(slices.Collect(maps.Keys(fs)), func(k msgKey) error {
		st, f := v.states[k], fs[k]
		if !st.Compacted && st.Status != conversation.StatusUnknown && !(st.Status == conversation.StatusFinished && f.finishSeq >= 0) {
			return nil // its finish did not land, or it is not acknowledged: verifyLedger judged it
		}
		dec, err := judgeFinished(ctx, c, f)
		if err != nil {
			return err
		}
		switch {
		case st.Compacted != (dec.Action == conversation.Skip && dec.Compacted),
			(st.Status == conversation.StatusUnknown) != (dec.Action == conversation.Forgotten):
			return fmt.Errorf("%v: state %+v, decide %+v", k, st, dec)
		case st.Compacted && (st.Status != conversation.StatusFinished || len(st.Steps) > 0 || st.Attempts < starts[k]):
			return fmt.Errorf("%v: a tombstone, state %+v; %d starts were acknowledged", k, st, starts[k])
		case st.Status == conversation.StatusUnknown && (!horizons[k.conv].Set || horizons[k.conv].Before < f.finishedAfter):
			return fmt.Errorf("%v: forgotten, but %s keeps the horizon %+v; it finished after %d", k, k.conv, horizons[k.conv], f.finishedAfter)
		}
		mu.Lock()
		defer mu.Unlock()
		if st.Compacted {
			compacted++
		} else if st.Status == conversation.StatusUnknown {
			forgotten++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return compacted, forgotten
}

// selfCheck shows that verified's check can fail: on copies of the logs
// of v, it must find an acknowledged event removed from the log of a
// message not compacted (a lost write), an acknowledged event of a
// compacted message put back in the log (a partial compaction), and an
// event of a new message at the acknowledged seq of a compacted one (a
// seq reused).
func selfCheck(t *testing.T, l *ledger, v *verified) {
	t.Helper()
	var live, gone *ack
	for i := range l.acks {
		a := &l.acks[i]
		k := msgKey{a.conv, a.msg}
		switch st := v.states[k]; {
		case gone == nil && st.Compacted:
			gone = a
		case live == nil && !l.gone(k, st) && !a.duplicate:
			live = a
		}
	}
	if live == nil || gone == nil {
		t.Fatalf("no acknowledged write of a message left (%v) or of a compacted one (%v) to change", live, gone)
	}
	event := func(a *ack, msg string) conversation.Event {
		return conversation.Event{Conversation: a.conv, Seq: a.seq, Type: a.typ, MessageID: msg, StepIndex: a.step, Output: []byte(a.output)}
	}
	for _, tt := range []struct {
		name   string
		change func([]conversation.Event) []conversation.Event
		conv   string
	}{
		{"a lost write", func(evs []conversation.Event) []conversation.Event {
			return slices.DeleteFunc(evs, func(e conversation.Event) bool { return e.Seq == live.seq })
		}, live.conv},
		{"a partial compaction", func(evs []conversation.Event) []conversation.Event {
			return append(evs, event(gone, gone.msg))
		}, gone.conv},
		{"a reused seq", func(evs []conversation.Event) []conversation.Event {
			return append(evs, event(gone, "a-new-message"))
		}, gone.conv},
	} {
		w := &verified{logs: maps.Clone(v.logs), states: v.states}
		w.logs[tt.conv] = tt.change(slices.Clone(v.logs[tt.conv]))
		if problems := w.check(l); len(problems) == 0 {
			t.Errorf("the check does not find %s", tt.name)
		}
	}
}
