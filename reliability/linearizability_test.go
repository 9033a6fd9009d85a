package reliability

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
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

// call sends in on c and returns what it returned.
func call(ctx context.Context, c *ipc.Client, conv string, in lInput) (lOutput, error) {
	msg := fmt.Sprintf("m%d", in.Msg)
	var dec ipc.Decision
	var a ipc.Ack
	var err error
	isDecision := false
	switch in.Op {
	case opReceive:
		dec, err = c.Receive(ctx, conv, msg, ipc.ReceivedAt(1))
		isDecision = true
	case opDecide:
		dec, err = c.Decide(ctx, conv, msg)
		isDecision = true
	case opStart:
		a, err = c.Start(ctx, conv, msg)
	case opStep:
		a, err = c.Step(ctx, conv, msg, uint32(in.Step), []byte(in.Output))
	case opFinish:
		a, err = c.Finish(ctx, conv, msg)
	}
	if err != nil {
		if outcomeUnknown(err) {
			return lOutput{Unknown: true}, err
		}
		if e, ok := isReply(err); ok {
			return lOutput{Code: string(e.Code), Seq: -1}, nil
		}
		return lOutput{}, err
	}
	if !isDecision {
		return lOutput{Seq: a.Seq, Duplicate: a.Duplicate}, nil
	}
	out := lOutput{Decision: dec.Action.String(), Seq: -1, Duplicate: dec.Duplicate}
	switch dec.Action {
	case conversation.Start:
		if in.Op == opReceive {
			out.Seq = dec.Seq
		}
	case conversation.Resume:
		out.ResumeFrom = dec.ResumeFrom
	}
	return out, nil
}

// randomInput picks a call: mostly writes that contend on maxMsgs
// messages, step outputs from two values so that duplicates and conflicts
// both happen, and finish rarely enough that messages live a while.
// The four contended messages slide over the maxMsgs ids as the history
// grows (progress from 0 to 1), so that fresh messages keep arriving.
func randomInput(r *rand.Rand, progress float64) lInput {
	base := min(int(progress*float64(maxMsgs-3)), maxMsgs-4)
	in := lInput{Msg: base + r.IntN(4)}
	switch p := r.IntN(100); {
	case p < 25:
		in.Op = opReceive
	case p < 40:
		in.Op = opDecide
	case p < 60:
		in.Op = opStart
	case p < 97:
		in.Op = opStep
		in.Step = r.IntN(maxSteps)
		in.Output = []string{"x", "y"}[r.IntN(2)]
	default:
		in.Op = opFinish
	}
	return in
}

// linClient sends random calls until the recorder holds total operations.
func linClient(ctx context.Context, d *daemon, rec *recorder, conv string, id, total int, seed uint64) error {
	r := rand.New(rand.NewPCG(seed, uint64(id)))
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
		in := randomInput(r, float64(rec.len())/float64(total))
		callAt := d.now()
		out, err := call(ctx, c, conv, in)
		returnAt := d.now()
		if err != nil && !out.Unknown {
			return fmt.Errorf("client %d: %v", id, err)
		}
		rec.add(porcupine.Operation{ClientId: id, Input: in, Output: out, Call: callAt, Return: returnAt, Metadata: gen})
		if out.Unknown {
			c.Close()
			c = nil
			if err := d.awaitAfter(ctx, gen); err != nil {
				return fmt.Errorf("client %d after %v: %v", id, in, err)
			}
		}
	}
	return nil
}

func TestLinearizable(t *testing.T) {
	linRun(t, 0, 300)
}

// TestLinearizableAcrossKills checks one history across one SIGKILL and
// restart; the long variant checks 8 histories, each across 3.
func TestLinearizableAcrossKills(t *testing.T) {
	histories, kills := 1, 1
	if long() {
		histories, kills = 8, 3
	}
	for i := range histories {
		t.Run(fmt.Sprintf("history%d", i), func(t *testing.T) { linRun(t, kills, 400) })
	}
}

// linRun records a history of total calls by 8 clients on one
// conversation, SIGKILLing and restarting the daemon `kills` times at
// random points, and checks it with porcupine.
func linRun(t *testing.T, kills, total int) {
	began := time.Now()
	const clients = 8
	seed := uint64(time.Now().UnixNano())
	d := newDaemon(t)
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
		gen := op.Metadata.(int)
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
	// Not t.TempDir(): the file must outlive the failed test.
	dir := os.Getenv("LIMINALD_LINEARIZABILITY_OUT")
	var err error
	if dir == "" {
		dir, err = os.MkdirTemp("", "liminald-linearizability-")
	} else {
		err = os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".html")
	if err := porcupine.VisualizePath(m, info, path); err != nil {
		t.Fatalf("%s: history of %d operations is not linearizable; writing the visualization: %v", what, len(h), err)
	}
	t.Fatalf("%s: history of %d operations is not linearizable; visualization: %s", what, len(h), path)
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
// history: it moves the seq of the first appending write one further, and
// the history must become Illegal (or the check time out, which is
// reported but not failed: proving illegality can be slow).
func mustReject(t *testing.T, h []porcupine.Operation) porcupine.CheckResult {
	t.Helper()
	bad := append([]porcupine.Operation(nil), h...)
	for i := range bad {
		out := bad[i].Output.(lOutput)
		if !out.Unknown && out.Code == "" && out.Seq >= 0 && !out.Duplicate {
			out.Seq++
			bad[i].Output = out
			res := porcupine.CheckOperationsTimeout(model.ToModel(), bad, 5*time.Second)
			if res == porcupine.Ok {
				t.Fatalf("a history with seq %d moved to %d still checks as linearizable: the check cannot fail", out.Seq-1, out.Seq)
			}
			return res
		}
	}
	t.Fatal("no appending write in the history")
	return ""
}
