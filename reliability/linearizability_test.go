package reliability

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"liminald/conversation"
	"liminald/ipc"
)

// recorder collects the operations of a history.
type recorder struct {
	mu  sync.Mutex
	ops []porcupine.Operation
	// unknown holds the calls whose connection broke, by index in ops;
	// their Return is settled once the daemon they ran on has stopped.
	unknown []int
}

func (r *recorder) add(op porcupine.Operation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if op.Output.(lOutput).Unknown {
		r.unknown = append(r.unknown, len(r.ops))
	}
	r.ops = append(r.ops, op)
}

func (r *recorder) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.ops)
}

// call sends in on c and returns what it returned. It checks what the
// model leaves out, for it depends on the clock: that busy's retry_after_ms
// is within the lease, and that a start that took a lease and a renew
// answer lease_expires_at.
func call(ctx context.Context, c *ipc.Client, conv string, in lInput) (lOutput, error) {
	msg := fmt.Sprintf("m%d", in.Msg)
	var opts []ipc.Option
	if in.ExpectedSeq >= 0 {
		opts = append(opts, ipc.ExpectedSeq(in.ExpectedSeq))
	}
	if in.HasToken && in.Op != opRenew {
		opts = append(opts, ipc.Token(in.Token))
	}
	if in.Fingerprint != 0 {
		opts = append(opts, ipc.Fingerprint(fingerprints[in.Fingerprint]))
	}
	if in.Worker != 0 {
		opts = append(opts, ipc.Worker(workerName(in.Worker)))
	}
	lease := time.Duration(leaseMS[in.Lease]) * time.Millisecond
	if in.Lease != 0 && in.Op == opStart {
		opts = append(opts, ipc.Lease(lease))
	}
	var dec ipc.Decision
	var a ipc.Ack
	var err error
	isDecision := false
	switch in.Op {
	case opReceive:
		dec, err = c.Receive(ctx, conv, msg, append(opts, ipc.ReceivedAt(1))...)
		isDecision = true
	case opDecide:
		dec, err = c.Decide(ctx, conv, msg, opts...)
		isDecision = true
	case opStart:
		a, err = c.Start(ctx, conv, msg, opts...)
	case opStep:
		a, err = c.Step(ctx, conv, msg, uint32(in.Step), []byte(in.Output), opts...)
	case opFinish:
		a, err = c.Finish(ctx, conv, msg, opts...)
	case opFail:
		a, err = c.Fail(ctx, conv, msg, errTexts[in.Error], opts...)
	case opRenew:
		a, err = c.Renew(ctx, conv, msg, in.Token, lease, opts...)
	case opRelease:
		a, err = c.Release(ctx, conv, msg, reasons[in.Reason], opts...)
	}
	if err != nil {
		return failure(in, err)
	}
	if isDecision {
		return decisionOutput(in, dec)
	}
	out := lOutput{Seq: a.Seq, Duplicate: a.Duplicate}
	switch {
	case in.Op == opStart:
		out.Token = a.Token
		if !a.Duplicate && in.Lease != 0 && a.LeaseExpiresAt <= 0 {
			return out, fmt.Errorf("%s -> %+v: a start that took a lease answers no lease_expires_at", describeInput(in), a)
		}
	case in.Op == opRenew && !a.Duplicate && a.LeaseExpiresAt <= 0:
		return out, fmt.Errorf("%s -> %+v: a renew answers no lease_expires_at", describeInput(in), a)
	}
	return out, nil
}

// failure is the output of a call that failed with err: unknown when the
// connection broke, else its code and the details the model predicts.
func failure(in lInput, err error) (lOutput, error) {
	if outcomeUnknown(err) {
		return lOutput{Unknown: true}, err
	}
	e, ok := isReply(err)
	if !ok {
		return lOutput{}, err
	}
	out := lOutput{Code: string(e.Code), Seq: -1}
	var sc *conversation.SequenceConflictError
	var be *conversation.BusyError
	var fe *conversation.FencedError
	var fm *conversation.FingerprintMismatchError
	switch {
	case errors.As(err, &sc):
		out.Actual = sc.Actual
	case errors.As(err, &be):
		out.Worker, out.Token = workerIndex(be.Worker), be.Token
		if err := checkRetryAfter(in, be.RetryAfterMS); err != nil {
			return out, err
		}
	case errors.As(err, &fe):
		out.Token, out.Current = fe.Token, fe.CurrentToken
	case errors.As(err, &fm):
		out.Stored = slices.Index(fingerprints[:], fm.Stored)
	}
	return out, nil
}

// decisionOutput is the output of a receive or decide that answered dec.
func decisionOutput(in lInput, dec ipc.Decision) (lOutput, error) {
	out := lOutput{Decision: dec.Action.String(), Seq: -1, Duplicate: dec.Duplicate}
	switch dec.Action {
	case conversation.Start:
		if in.Op == opReceive {
			out.Seq = dec.Seq
		}
	case conversation.Resume:
		out.ResumeFrom = dec.ResumeFrom
	case conversation.Busy:
		out.Worker, out.Token = workerIndex(dec.Worker), dec.Token
		return out, checkRetryAfter(in, dec.RetryAfterMS)
	case conversation.Quarantined:
		out.Attempts, out.Error = dec.Attempts, slices.Index(errTexts[:], dec.Error)
	}
	return out, nil
}

// workerIndex is the index of the worker named name ("": 0).
func workerIndex(name string) int {
	if name == "" {
		return 0
	}
	w, err := strconv.Atoi(strings.TrimPrefix(name, "w"))
	if err != nil {
		return -1
	}
	return w
}

// checkRetryAfter checks busy's retry_after_ms: at least 1, and no longer
// than the longest lease a history takes.
func checkRetryAfter(in lInput, ms int64) error {
	if ms < 1 || ms > slices.Max(leaseMS[:]) {
		return fmt.Errorf("%s: busy with retry_after_ms %d", describeInput(in), ms)
	}
	return nil
}

// memory is what a client of a linearizability history remembers: the
// tokens it learned, its writes that were acknowledged (to retry them by
// expected_seq), and the highest seq it saw.
type memory struct {
	tokens  map[int][]int64 // by message, in the order they came
	acked   []lInput        // each with ExpectedSeq at its seq
	lastSeq int64
}

// learn remembers what in answered: a start's token, and the current
// token that busy and fenced tell (a client that learns it writes as the
// holder would, so that fencing lets some writes through).
func (mem *memory) learn(in lInput, out lOutput) {
	switch {
	case out.Code == "sequence_conflict":
		mem.lastSeq = max(mem.lastSeq, out.Actual-1)
	case out.Code == "busy" || out.Decision == "busy":
		mem.tokens[in.Msg] = append(mem.tokens[in.Msg], out.Token)
	case out.Code == "fenced" && out.Current > 0:
		mem.tokens[in.Msg] = append(mem.tokens[in.Msg], out.Current)
	}
	if out.Unknown || out.Code != "" || out.Seq < 0 {
		return
	}
	mem.lastSeq = max(mem.lastSeq, out.Seq)
	if in.Op == opStart {
		mem.tokens[in.Msg] = append(mem.tokens[in.Msg], out.Token)
	}
	in.ExpectedSeq = out.Seq
	if mem.acked = append(mem.acked, in); len(mem.acked) > 64 {
		mem.acked = mem.acked[1:]
	}
}

// token picks a token for a write to msg: mostly the latest this client
// learned, now and then an older one or a recent seq, and otherwise none
// (a renew always has one).
func (mem *memory) token(r *rand.Rand, msg int, required bool) (int64, bool) {
	known := mem.tokens[msg]
	switch p := r.IntN(20); {
	case p < 12 && len(known) > 0:
		return known[len(known)-1], true
	case p < 14 && len(known) > 0:
		return known[r.IntN(len(known))], true
	case p < 15 || required:
		return 1 + r.Int64N(mem.lastSeq+1), true
	}
	return 0, false
}

// randomInput picks a call for client me: mostly writes that contend on
// maxMsgs messages, step outputs from two values so that duplicates and
// conflicts both happen, starts with and without a worker and a lease,
// writes with the tokens the client got, and retries of its acknowledged
// writes by expected_seq. The four contended messages slide over the
// maxMsgs ids as the history grows (progress from 0 to 1), so that fresh
// messages keep arriving.
func randomInput(r *rand.Rand, progress float64, me int, mem *memory) lInput {
	if len(mem.acked) > 0 && r.IntN(100) < 6 {
		in := mem.acked[r.IntN(len(mem.acked))]
		if r.IntN(3) == 0 { // a retry may leave out what it need not give
			in.Fingerprint, in.Worker, in.Reason = 0, 0, 0
			if in.Op == opStart {
				in.Lease = 0
			}
		}
		return in
	}
	base := min(int(progress*float64(maxMsgs-3)), maxMsgs-4)
	in := lInput{Msg: base + r.IntN(4), ExpectedSeq: -1}
	fingerprint := func() int { return [...]int{0, 0, 0, 0, 0, 0, 0, 1, 1, 2}[r.IntN(10)] }
	switch p := r.IntN(100); {
	case p < 16:
		in.Op, in.Fingerprint = opReceive, fingerprint()
	case p < 24:
		in.Op, in.Fingerprint = opDecide, fingerprint()
	case p < 42:
		in.Op = opStart
		switch q := r.IntN(10); {
		case q < 7:
			in.Worker = me + 1
		case q < 9:
			in.Worker = 1 + r.IntN(8)
		}
		in.Lease = [...]int{0, 0, 0, 0, 0, 0, 1, 1, 1, 2}[r.IntN(10)]
	case p < 67:
		in.Op = opStep
		in.Step = r.IntN(maxSteps)
		in.Output = []string{"x", "y"}[r.IntN(2)]
	case p < 70:
		in.Op = opFinish
	case p < 81:
		in.Op, in.Error = opFail, 1+r.IntN(2)
	case p < 91:
		in.Op, in.Lease = opRenew, 1+r.IntN(2)
	default:
		in.Op, in.Reason = opRelease, r.IntN(2)
	}
	switch in.Op {
	case opStep, opFinish, opFail, opRenew:
		in.Token, in.HasToken = mem.token(r, in.Msg, in.Op == opRenew)
	}
	if in.Op != opDecide && r.IntN(100) < 8 {
		in.ExpectedSeq = mem.lastSeq + 1 // next, unless someone else wrote
	}
	return in
}

// linClient sends random calls until the recorder holds total operations.
func linClient(ctx context.Context, d *daemon, rec *recorder, conv string, id, total int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, uint64(id)))
	mem := &memory{tokens: make(map[int][]int64)}
	var c *ipc.Client
	var gen int
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for rec.len() < total {
		if c == nil {
			var err error
			if c, gen, err = d.connect(ctx); err != nil {
				return err
			}
		}
		in := randomInput(r, float64(rec.len())/float64(total), id, mem)
		callAt := d.now()
		out, err := call(ctx, c, conv, in)
		returnAt := d.now()
		unavailable := d.unavailable && out.Code == string(ipc.CodeUnavailable)
		if unavailable {
			out = lOutput{Unknown: true}
		}
		if err != nil && !out.Unknown {
			return fmt.Errorf("client %d: %v", id, err)
		}
		mem.learn(in, out)
		rec.add(porcupine.Operation{ClientId: id, Input: in, Output: out, Call: callAt, Return: returnAt, Metadata: callMeta{gen, unavailable}})
		if unavailable {
			// The daemon is up, PostgreSQL is not: try again soon.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if out.Unknown {
			c.Close()
			c = nil
			if err := d.awaitAfter(ctx, gen); err != nil {
				return fmt.Errorf("client %d after %v: %v", id, describeInput(in), err)
			}
		}
	}
	return nil
}

// callMeta is what a recorded call keeps for settling its outcome: the
// generation of the daemon it ran on, and whether it was answered
// unavailable (rather than broken with its connection).
type callMeta struct {
	gen         int
	unavailable bool
}

// TestModelMatchesDaemon sends the model's own sequential histories to a
// real daemon, each to a conversation of its own: every reply must be the
// one the history holds.
func TestModelMatchesDaemon(t *testing.T) {
	d := newDaemon(t, "--max-attempts", strconv.Itoa(maxAttempts))
	ctx, c, done := d.dialCheck()
	defer done()
	for name, h := range map[string][]seqOp{"docs": docsHistory(), "lease": leaseHistory()} {
		for i, op := range h {
			out, err := call(ctx, c, name, op.in)
			if err != nil || out != op.out {
				t.Errorf("%s history, call %d: %s -> %s, %v; want %s", name, i, describeInput(op.in), describeOutput(out), err, describeOutput(op.out))
			}
		}
	}
}

func TestLinearizable(t *testing.T) {
	linRun(t, 0, 500)
}

// TestLinearizableAcrossKills checks one history of 600 calls across one
// SIGKILL and restart; the long variant checks 8 histories of 1000, each
// across 3.
func TestLinearizableAcrossKills(t *testing.T) {
	histories, kills, total := 1, 1, 600
	if long() {
		histories, kills, total = 8, 3, 1000
	}
	for i := range histories {
		t.Run(fmt.Sprintf("history%d", i), func(t *testing.T) { linRun(t, kills, total) })
	}
}

// linRun records a history of total calls by 8 clients on one
// conversation, SIGKILLing and restarting the daemon `kills` times at
// random points, and checks it with porcupine.
func linRun(t *testing.T, kills, total int) {
	began := time.Now()
	const clients = 8
	seed := uint64(time.Now().UnixNano())
	d := newDaemon(t, "--max-attempts", strconv.Itoa(maxAttempts))
	rec := &recorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for id := range clients {
		wg.Go(func() {
			if err := linClient(ctx, d, rec, "lin", id, total, seed); err != nil {
				errs <- err
				cancel()
			}
		})
	}
	// Kill at random points spread over the run.
	for k := range kills {
		at := (k*total)/(kills+1) + rand.IntN(total/(kills+1))
		deadline := time.Now().Add(60 * time.Second)
		for rec.len() < at && ctx.Err() == nil {
			if time.Now().After(deadline) {
				t.Fatalf("only %d of %d calls after 60 s", rec.len(), at)
			}
			time.Sleep(time.Millisecond) // polling a condition, with a deadline
		}
		if ctx.Err() != nil {
			break
		}
		d.restart(syscall.SIGKILL)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("seed %d: %v", seed, err)
	}
	history, unknown := settle(t, d, rec)
	checkHistory(t, history, fmt.Sprintf("seed %d, %d kills", seed, kills))
	checked := time.Since(began)
	mutated := mustReject(t, history)
	t.Logf("%d kills survived, %d operations (%d of unknown outcome) by %d clients on %d message ids linearizable (%s); a corrupted copy rejected: %v; %v",
		kills, len(history), unknown, clients, maxMsgs, outcomes(history), mutated, checked.Round(time.Millisecond))
}

// settle gives each call of unknown outcome the moment its daemon was seen
// stopped as its return: it took effect before then or never. A call sent
// after that moment (to a daemon already gone) cannot have taken effect
// and is dropped.
func settle(t *testing.T, d *daemon, rec *recorder) ([]porcupine.Operation, int) {
	t.Helper()
	d.mu.Lock()
	stopped := append([]int64(nil), d.stopped...)
	d.mu.Unlock()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	drop := make(map[int]bool)
	for _, i := range rec.unknown {
		op := &rec.ops[i]
		gen := op.Metadata.(callMeta).gen
		if gen >= len(stopped) {
			t.Fatalf("call %v of generation %d broke while that daemon ran", op.Input, gen)
		}
		if op.Call >= stopped[gen] {
			drop[i] = true
			continue
		}
		op.Return = max(op.Return, stopped[gen])
	}
	var h []porcupine.Operation
	for i, op := range rec.ops {
		if !drop[i] {
			op.Metadata = nil
			h = append(h, op)
		}
	}
	return h, len(rec.unknown) - len(drop)
}

// checkHistory checks h against the model; on failure it writes the
// visualization and fails with its path.
func checkHistory(t *testing.T, h []porcupine.Operation, what string) {
	t.Helper()
	m := model.ToModel()
	res, info := porcupine.CheckOperationsVerbose(m, h, 60*time.Second)
	switch res {
	case porcupine.Ok:
		return
	case porcupine.Unknown:
		t.Fatalf("%s: linearizability check of %d operations timed out", what, len(h))
	}
	t.Fatalf("%s: history of %d operations is not linearizable; visualization: %s", what, len(h), visualize(t, m, info))
}

// visualize writes the visualization of info to
// $LIMINALD_LINEARIZABILITY_OUT, or to a new directory under os.TempDir()
// (not t.TempDir(): the file must outlive the failed test), and returns
// its path, or what went wrong.
func visualize(t *testing.T, m porcupine.Model, info porcupine.LinearizationInfo) string {
	dir := os.Getenv("LIMINALD_LINEARIZABILITY_OUT")
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "liminald-linearizability-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return fmt.Sprintf("(not written: %v)", err)
	}
	path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".html")
	if err := porcupine.VisualizePath(m, info, path); err != nil {
		return fmt.Sprintf("(not written: %v)", err)
	}
	return path
}

// outcomes counts the replies of h by kind.
func outcomes(h []porcupine.Operation) string {
	n := make(map[string]int)
	for _, op := range h {
		out := op.Output.(lOutput)
		in := op.Input.(lInput)
		k := opNames[in.Op] + ":"
		switch {
		case out.Unknown:
			k += "unknown"
		case out.Code != "":
			k += out.Code
		case out.Decision != "":
			k += out.Decision
		case out.Duplicate:
			k += "duplicate"
		default:
			k += "appended"
		}
		n[k]++
	}
	keys := make([]string, 0, len(n))
	for k := range n {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%s=%d", k, n[k])
	}
	return b.String()
}

// mustReject checks that the checker catches a wrong reply in a real
// history: it gives the second acknowledged append the seq of the first,
// which no linearization allows (each append takes the next seq, so two
// appends never share one), and the history must become Illegal (or the
// check time out, which is reported but not failed: proving illegality
// can be slow).
func mustReject(t *testing.T, h []porcupine.Operation) porcupine.CheckResult {
	t.Helper()
	bad := append([]porcupine.Operation(nil), h...)
	first := -1
	for i := range bad {
		out := bad[i].Output.(lOutput)
		if out.Unknown || out.Code != "" || out.Seq < 0 || out.Duplicate {
			continue
		}
		if first < 0 {
			first = i
			continue
		}
		was := out.Seq
		out.Seq = bad[first].Output.(lOutput).Seq
		bad[i].Output = out
		res := porcupine.CheckOperationsTimeout(model.ToModel(), bad, 5*time.Second)
		if res == porcupine.Ok {
			t.Fatalf("a history where %s moved from seq %d to the seq of %s still checks as linearizable: the check cannot fail",
				describeInput(bad[i].Input.(lInput)), was, describeInput(bad[first].Input.(lInput)))
		}
		return res
	}
	t.Fatal("fewer than two appending writes in the history")
	return ""
}
