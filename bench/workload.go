package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// The workloads.
const (
	// modeLifecycle takes new messages through receive, start, three
	// steps and finish: six ops, six events per message.
	modeLifecycle = "lifecycle"
	// modeDecide asks decide of finished messages: read-only.
	modeDecide = "decide"
	// modeRedelivery receives finished messages again: each is a skip and
	// appends nothing.
	modeRedelivery = "redelivery"
)

var allModes = []string{modeLifecycle, modeDecide, modeRedelivery}

const (
	// lifecycleSteps is the steps each message of a lifecycle load
	// completes, each with an output (stepOutput but in the soak).
	lifecycleSteps = 3
	// lifecycleEvents is the events of one message's lifecycle: receive,
	// start, the steps and finish.
	lifecycleEvents = lifecycleSteps + 3
	// messagesPerConversation is how many messages a lifecycle client puts
	// in one conversation before it moves on to the next.
	messagesPerConversation = 100
	// knownConversations is how many conversations the finished messages
	// of the decide and redelivery loads are spread over.
	knownConversations = 20
)

// stepOutput is the output of every step of the sweep, the preload and
// the scale run: 100 bytes.
var stepOutput = []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz!?")

// point is one measurement: a workload at a number of clients.
type point struct {
	Mode    string `json:"mode"`
	Clients int    `json:"clients"`
	// Prefix starts the names of the lifecycle's conversations, unique to
	// the point so that points do not share conversations.
	Prefix   string        `json:"prefix"`
	Known    int           `json:"known"` // finished messages preloaded, for decide and redelivery
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
}

// window is the measured part of a point: ops that complete in
// [start, end) count. The clients run from the barrier until end, so the
// time before start is the warm-up.
type window struct{ start, end time.Time }

func (w window) contains(t time.Time) bool { return !t.Before(w.start) && t.Before(w.end) }

// knownMessage returns the conversation and id of the i-th finished
// message that the decide and redelivery loads use.
func knownMessage(i int) (conv, msg string) {
	return fmt.Sprintf("known-%d", i%knownConversations), fmt.Sprintf("k-%d", i)
}

// clientResult is what one client did in the window.
type clientResult struct {
	Ops       int64           `json:"ops"`
	Events    int64           `json:"events"` // events appended
	Latencies []time.Duration `json:"latencies_ns"`
	// CPUSeconds is the CPU time of the client's process in the window,
	// set by a worker process only.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
	PeakRSS    int64   `json:"-"`
}

// errUnexpected is an answer the workload did not expect: the run fails.
var errUnexpected = errors.New("unexpected answer")

// runClient runs client number idx of point p on c until w.end and returns
// the ops that completed in the window. Any error or unexpected decision
// ends it with an error.
func runClient(ctx context.Context, c Client, p point, idx int, w window) (clientResult, error) {
	var r clientResult
	record := func(start time.Time, events int64) {
		if end := time.Now(); w.contains(end) {
			r.Ops++
			r.Events += events
			r.Latencies = append(r.Latencies, end.Sub(start))
		}
	}
	switch p.Mode {
	case modeLifecycle:
		load := lifecycleLoad{prefix: p.Prefix, output: stepOutput, end: w.end,
			more: func() bool { return time.Now().Before(w.end) }, record: record}
		if err := load.run(ctx, c, idx); err != nil {
			return r, err
		}
	case modeDecide, modeRedelivery:
		if p.Known == 0 {
			return r, fmt.Errorf("%s: no finished messages to ask about", p.Mode)
		}
		rng := rand.New(rand.NewPCG(uint64(idx), uint64(time.Now().UnixNano())))
		for time.Now().Before(w.end) {
			conv, msg := knownMessage(rng.IntN(p.Known))
			start := time.Now()
			var d Decision
			var err error
			if p.Mode == modeDecide {
				d, err = c.Decide(ctx, conv, msg)
			} else {
				d, err = c.Receive(ctx, conv, msg, start.UnixMilli())
			}
			if err != nil {
				return r, fmt.Errorf("%s %s/%s: %w", p.Mode, conv, msg, err)
			}
			if d.Action != "skip" {
				return r, fmt.Errorf("%s %s/%s: %w: decision %q, want skip", p.Mode, conv, msg, errUnexpected, d.Action)
			}
			record(start, 0)
		}
	default:
		return r, fmt.Errorf("unknown mode %q", p.Mode)
	}
	return r, nil
}

// lifecycleOp is one write of a lifecycle after its receive.
type lifecycleOp struct {
	name string
	do   func() error
}

// lifecycleLoad is what one client of a lifecycle load does: new messages
// m-0, m-1, … through their lifecycles, while more holds.
type lifecycleLoad struct {
	// prefix starts the names of the client's conversations,
	// prefix-c<client>-<k>: the client moves to the next k every
	// messagesPerConversation messages.
	prefix string
	// convs, unless 0, is how many conversations each client has: after
	// the last it starts again at k = 0, with new messages, so that the
	// set of conversations stays fixed.
	convs  int
	output []byte    // of each step
	end    time.Time // no op starts at or after it, unless zero
	// pace, unless 0, is the time from the start of a client's message to
	// the start of its next: a client behind its pace starts the next at
	// once, and does not catch up.
	pace   time.Duration
	more   func() bool
	record func(start time.Time, events int64) // after each op, unless nil; may be called from every client at once
}

// run runs the load as client number idx on c, until more is false or an
// op fails.
func (l lifecycleLoad) run(ctx context.Context, c Client, idx int) error {
	next := time.Now()
	if l.pace > 0 {
		next = next.Add(rand.N(l.pace)) // the clients' starts spread over a pace
	}
	for n := 0; l.more(); n++ {
		if l.pace > 0 {
			if err := sleepUntil(ctx, next); err != nil {
				return err
			}
			if !l.more() {
				return nil
			}
			next = later(next, time.Now()).Add(l.pace)
		}
		k := n / messagesPerConversation
		if l.convs > 0 {
			k %= l.convs
		}
		conv := fmt.Sprintf("%s-c%d-%d", l.prefix, idx, k)
		if err := lifecycle(ctx, c, conv, fmt.Sprintf("m-%d", n), l.output, l.end, l.record); err != nil {
			return err
		}
	}
	return nil
}

// sleepUntil waits until t or until ctx ends, then returns ctx's error.
func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// drive runs the load on each of clients at once, calling tick every
// interval meanwhile, until every client stops. The first error of a
// client or of tick stops the others, and is returned.
func (l lifecycleLoad) drive(ctx context.Context, clients []Client, every time.Duration, tick func() error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(clients)+1)
	for i, c := range clients {
		wg.Go(func() {
			if errs[i] = l.run(ctx, c, i); errs[i] != nil {
				cancel()
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-done:
			return firstError(errs)
		case <-t.C:
			if errs[len(clients)] == nil {
				if errs[len(clients)] = tick(); errs[len(clients)] != nil {
					cancel()
				}
			}
		}
	}
}

// lifecycle takes a new message through receive, start, the steps (each
// with output) and finish, stopping early at end unless it is zero; it
// calls record, unless nil, after each op with the events it appended.
func lifecycle(ctx context.Context, c Client, conv, msg string, output []byte, end time.Time, record func(start time.Time, events int64)) error {
	if record == nil {
		record = func(time.Time, int64) {}
	}
	start := time.Now()
	d, err := c.Receive(ctx, conv, msg, start.UnixMilli())
	if err != nil {
		return fmt.Errorf("receive %s/%s: %w", conv, msg, err)
	}
	if d.Action != "start" {
		return fmt.Errorf("receive %s/%s: %w: decision %q, want start", conv, msg, errUnexpected, d.Action)
	}
	record(start, 1)
	ops := []lifecycleOp{{"start", func() error { return c.Start(ctx, conv, msg) }}}
	for i := range uint32(lifecycleSteps) {
		ops = append(ops, lifecycleOp{fmt.Sprintf("step %d", i), func() error { return c.Step(ctx, conv, msg, i, output) }})
	}
	ops = append(ops, lifecycleOp{"finish", func() error { return c.Finish(ctx, conv, msg) }})
	for _, op := range ops {
		if !end.IsZero() && !time.Now().Before(end) {
			return nil
		}
		start := time.Now()
		if err := op.do(); err != nil {
			return fmt.Errorf("%s %s/%s: %w", op.name, conv, msg, err)
		}
		record(start, 1)
	}
	return nil
}

// A pointRunner runs a point itself, with clients outside the harness's
// process: sqliteSystem runs each client as a process of its own.
type pointRunner interface {
	runPoint(ctx context.Context, p point) (pointResult, error)
}

// pointResult is a point's clients' results merged, and what the system
// used in the window.
type pointResult struct {
	Ops, Events int64
	Latencies   latencies // sorted
	CPUSeconds  float64
	PeakRSS     int64
}

// runPoint measures point p on the started system sys.
func runPoint(ctx context.Context, sys System, p point) (pointResult, error) {
	if r, ok := sys.(pointRunner); ok {
		return r.runPoint(ctx, p)
	}
	clients, err := dialAll(ctx, sys, p.Clients)
	if err != nil {
		return pointResult{}, err
	}
	defer closeAll(clients)
	return runClients(ctx, p, clients, sys.Usage)
}

// runClients runs a client goroutine on each of clients, all released
// together, and merges their results; usage, sampled at the window's start
// and end, gives the CPU time and peak memory of the point.
func runClients(ctx context.Context, p point, clients []Client, usage func() (Usage, error)) (pointResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gate := make(chan struct{})
	results := make([]clientResult, len(clients))
	errs := make([]error, len(clients))
	var wg sync.WaitGroup
	var w window
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-gate
			results[i], errs[i] = runClient(ctx, c, p, i, w)
			if errs[i] != nil {
				cancel() // the others stop at their next op
			}
		}()
	}
	now := time.Now()
	w = window{start: now.Add(p.Warmup), end: now.Add(p.Warmup + p.Duration)}
	sampled := sampleWindow(ctx, w, usage)
	close(gate)
	wg.Wait()
	if err := firstError(errs); err != nil {
		cancel()
		<-sampled // the sampler ends before the system may be stopped
		return pointResult{}, err
	}
	u, err := (<-sampled).get()
	if err != nil {
		return pointResult{}, err
	}
	r := merge(results)
	r.CPUSeconds, r.PeakRSS = u.CPUSeconds, u.PeakRSS
	return r, nil
}

// firstError is the first of errs that is not a context cancellation (the
// error that stopped the others), else the first one.
func firstError(errs []error) error {
	var first error
	for _, err := range errs {
		if err == nil {
			continue
		}
		if !errors.Is(err, context.Canceled) {
			return err
		}
		if first == nil {
			first = err
		}
	}
	return first
}

// merge adds up the clients' results and sorts their latencies.
func merge(results []clientResult) pointResult {
	var r pointResult
	for _, c := range results {
		r.Ops += c.Ops
		r.Events += c.Events
		r.Latencies = append(r.Latencies, c.Latencies...)
	}
	r.Latencies.sort()
	return r
}

// windowUsage is what a system used in a window, or why it is not known.
type windowUsage struct {
	usage Usage
	err   error
}

func (u windowUsage) get() (Usage, error) { return u.usage, u.err }

// sampleWindow samples usage at w.start and w.end and sends the CPU time
// between them and the peak memory at the end; it sends an error if ctx
// ends first. The goroutine ends once it has sent.
func sampleWindow(ctx context.Context, w window, usage func() (Usage, error)) <-chan windowUsage {
	out := make(chan windowUsage, 1)
	go func() {
		at := func(t time.Time) (Usage, error) {
			if err := sleepUntil(ctx, t); err != nil {
				return Usage{}, err
			}
			return usage()
		}
		u0, err := at(w.start)
		if err != nil {
			out <- windowUsage{err: err}
			return
		}
		u1, err := at(w.end)
		out <- windowUsage{usage: Usage{CPUSeconds: u1.CPUSeconds - u0.CPUSeconds, PeakRSS: u1.PeakRSS}, err: err}
	}()
	return out
}

// preload takes count messages (knownMessage(0..count-1)) through their
// whole lifecycle, with a few clients at once, so that the decide and
// redelivery loads find them finished.
func preload(ctx context.Context, sys System, count int) error {
	const workers = 16
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for k := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := sys.Dial(ctx)
			if err != nil {
				errs[k] = err
				return
			}
			defer c.Close()
			for i := k; i < count; i += workers {
				conv, msg := knownMessage(i)
				if err := lifecycle(ctx, c, conv, msg, stepOutput, time.Time{}, nil); err != nil {
					errs[k] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%s: preload: %w", sys.Name(), err)
	}
	return nil
}

// dialAll opens n clients of sys; on an error it closes those it opened.
func dialAll(ctx context.Context, sys System, n int) ([]Client, error) {
	clients := make([]Client, 0, n)
	for range n {
		c, err := sys.Dial(ctx)
		if err != nil {
			closeAll(clients)
			return nil, fmt.Errorf("%s: dial: %w", sys.Name(), err)
		}
		clients = append(clients, c)
	}
	return clients, nil
}

func closeAll(clients []Client) {
	for _, c := range clients {
		c.Close()
	}
}
