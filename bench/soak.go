package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"liminald/ipc"
)

// soakConversations is how many conversations each client of the soak
// has, used in turn: the set of conversations stays fixed and only the
// messages come and go, which is what retention has to bound (a
// conversation's row stays, with its horizon, SPEC §8).
const soakConversations = 4

// soakConfig is the command line of bench/run --soak.
type soakConfig struct {
	duration         time.Duration // of the soak
	every            time.Duration // between samples
	retainFinished   time.Duration
	retainTombstones time.Duration
	clients          int
	rate             float64       // events/s the clients aim at together; 0: each as fast as it goes
	stepBytes        int           // of each step's output
	compare          time.Duration // measured window of each run of the comparison; 0: none
	pairs            int           // runs of the comparison, retention off then on
}

// warmup is how long the load runs before its figures count: until the
// first messages have been compacted and their tombstones dropped, each
// within its deadline, max(1 s, a tenth of its setting) (SPEC §8).
func (c soakConfig) warmup() time.Duration {
	var d time.Duration
	for _, r := range []time.Duration{c.retainFinished, c.retainTombstones} {
		if r > 0 {
			d += r + max(time.Second, r/10)
		}
	}
	return d
}

// pace is the time from the start of a client's message to the start of
// its next that makes the rate, or 0.
func (c soakConfig) pace() time.Duration {
	if c.rate <= 0 {
		return 0
	}
	return time.Duration(float64(time.Second) * lifecycleEvents * float64(c.clients) / c.rate)
}

func (c soakConfig) settings() SoakSettings {
	return SoakSettings{
		Clients: c.clients, RatePerSec: c.rate, StepBytes: c.stepBytes, ConversationsPerClient: soakConversations,
		RetainFinished: c.retainFinished.String(), RetainTombstones: c.retainTombstones.String(),
		Seconds: c.duration.Seconds(), SampleSeconds: c.every.Seconds(), WarmupSeconds: c.warmup().Seconds(),
		CompareSeconds: c.compare.Seconds(), ComparePairs: c.pairs,
	}
}

// SoakResult is what bench/run --soak measured: soak.json, from which
// BENCHMARKS.md's soak section and soak.png are drawn.
type SoakResult struct {
	Generated time.Time    `json:"generated"`
	Command   string       `json:"command"` // the bench/run command that reproduces it
	Machine   Machine      `json:"machine"`
	Settings  SoakSettings `json:"settings"`
	Soak      SoakRun      `json:"soak"`
	// Compare are the runs of the comparison: retention off, then on, in
	// turn, each on a fresh daemon.
	Compare []SoakRun `json:"compare,omitempty"`
	// Pooled are the latencies of the comparison's windows merged, those
	// with retention off and those with it on.
	Pooled *SoakPooled `json:"pooled,omitempty"`
}

// SoakSettings are the soak's parameters.
type SoakSettings struct {
	Clients                int     `json:"clients"`
	RatePerSec             float64 `json:"rate_per_sec"` // the clients aim at together; 0: each as fast as it goes
	StepBytes              int     `json:"step_bytes"`   // of each step's output
	ConversationsPerClient int     `json:"conversations_per_client"`
	RetainFinished         string  `json:"retain_finished"`
	RetainTombstones       string  `json:"retain_tombstones"`
	Seconds                float64 `json:"seconds"` // of the soak
	SampleSeconds          float64 `json:"sample_seconds"`
	WarmupSeconds          float64 `json:"warmup_seconds"`
	CompareSeconds         float64 `json:"compare_seconds"` // measured window of each run of the comparison
	ComparePairs           int     `json:"compare_pairs"`
}

// SoakRun is one run of the soak's load on a fresh daemon: its samples and
// its figures after the warm-up.
type SoakRun struct {
	Retention bool         `json:"retention"`
	Window    SoakWindow   `json:"window"`
	Samples   []SoakSample `json:"samples"`
}

// SoakLatency are the percentiles of the ops of a window.
type SoakLatency struct {
	Ops    int64   `json:"ops"`
	P50Ms  float64 `json:"p50_ms"`
	P99Ms  float64 `json:"p99_ms"`
	P999Ms float64 `json:"p999_ms"`
}

// SoakWindow is a run after its warm-up: from the first sample at or after
// the warm-up to the end of the load.
type SoakWindow struct {
	StartSeconds float64 `json:"start_s"`
	Seconds      float64 `json:"seconds"`
	SoakLatency
	EventsPerSec float64 `json:"events_per_sec"`
	Compacted    int64   `json:"compacted"` // messages compacted in the window
	Dropped      int64   `json:"dropped"`   // tombstones dropped in the window
}

// SoakPooled are the comparison's latencies, merged by retention.
type SoakPooled struct {
	Off SoakLatency `json:"off"`
	On  SoakLatency `json:"on"`
}

// SoakSample is one sample of a run. Latencies and rates are those of the
// interval since the sample before; the counters are the stats op's.
type SoakSample struct {
	ElapsedSeconds float64 `json:"elapsed_s"`
	DBBytes        int64   `json:"db_bytes"`  // the database file
	WALBytes       int64   `json:"wal_bytes"` // its WAL
	// Pages and FreePages are the database file's pages and those of its
	// free-list, from its header: as of the last checkpoint.
	PageSize  int64 `json:"page_size"`
	Pages     int64 `json:"pages"`
	FreePages int64 `json:"free_pages"`
	RSSBytes  int64 `json:"rss_bytes"` // the daemon's VmRSS
	// CPU is the daemon's CPU seconds per second in the interval.
	CPU          float64 `json:"cpu"`
	Ops          int64   `json:"ops"`
	EventsPerSec float64 `json:"events_per_sec"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	P999Ms       float64 `json:"p999_ms"`

	Events           int64   `json:"events"` // stored
	Messages         int64   `json:"messages"`
	Tombstones       int64   `json:"tombstones"`
	Compacted        int64   `json:"compacted"`
	Dropped          int64   `json:"dropped"`
	CompactionPasses int64   `json:"compaction_passes"`
	CompactionMsMax  float64 `json:"compaction_ms_max"` // the longest pass since the daemon started
	CommitMsMax      float64 `json:"commit_ms_max"`     // the longest batch since the daemon started
}

func soakLatency(l latencies) SoakLatency {
	return SoakLatency{Ops: int64(len(l)), P50Ms: ms(l.percentile(0.50)), P99Ms: ms(l.percentile(0.99)), P999Ms: ms(l.percentile(0.999))}
}

// runSoak runs the soak of cfg, then the comparison, and writes their
// outputs into cfg.out.
func runSoak(ctx context.Context, cfg config, base string, progress io.Writer) error {
	r, err := measureSoak(ctx, cfg.soak, cfg.liminald, base, progress)
	if err != nil {
		return err
	}
	r.Command, r.Machine = cfg.command, machine(base)
	if err := writeSoakOutputs(cfg.out, r); err != nil {
		return err
	}
	fmt.Fprintf(progress, "bench: wrote %s and %s\n", filepath.Join(cfg.out, "soak.json"), filepath.Join(cfg.out, "soak.png"))
	return nil
}

// measureSoak runs the soak's load with retention on for c.duration, then
// the comparison: c.pairs runs with retention off then on, each measured
// for c.compare after the warm-up.
func measureSoak(ctx context.Context, c soakConfig, bin, base string, progress io.Writer) (*SoakResult, error) {
	r := &SoakResult{Generated: time.Now().UTC(), Settings: c.settings()}
	fmt.Fprintf(progress, "bench: soak: %s at %d clients (%s), retain_finished %s, retain_tombstones %s, warm-up %s\n",
		c.duration, c.clients, rateText(c.rate), c.retainFinished, c.retainTombstones, c.warmup())
	var err error
	if r.Soak, _, err = soakOnce(ctx, c, bin, base, true, c.duration, "soak", progress); err != nil {
		return nil, err
	}
	if c.compare <= 0 {
		return r, nil
	}
	var off, on latencies
	for i := range c.pairs {
		for _, retain := range []bool{false, true} {
			label := fmt.Sprintf("compare %d/%d, retention %s", i+1, c.pairs, onOff(retain))
			run, l, err := soakOnce(ctx, c, bin, base, retain, c.warmup()+c.compare, label, progress)
			if err != nil {
				return nil, err
			}
			r.Compare = append(r.Compare, run)
			if retain {
				on = append(on, l...)
			} else {
				off = append(off, l...)
			}
		}
	}
	off.sort()
	on.sort()
	r.Pooled = &SoakPooled{Off: soakLatency(off), On: soakLatency(on)}
	fmt.Fprintf(progress, "bench: compare, pooled: p99 %s ms off, %s ms on; p99.9 %s ms off, %s ms on\n",
		num(r.Pooled.Off.P99Ms), num(r.Pooled.On.P99Ms), num(r.Pooled.Off.P999Ms), num(r.Pooled.On.P999Ms))
	return r, nil
}

// rateText says what the clients aim at.
func rateText(perSec float64) string {
	if perSec <= 0 {
		return "each as fast as it goes"
	}
	return fmt.Sprintf("aiming at %s events/s together", rate(perSec))
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// soakOnce runs the soak's load for length on a fresh liminald, with the
// retention of c if retain, sampling every c.every; it returns the run and
// the latencies of its window, sorted.
func soakOnce(ctx context.Context, c soakConfig, bin, base string, retain bool, length time.Duration, label string, progress io.Writer) (run SoakRun, window latencies, err error) {
	dir, err := os.MkdirTemp(base, "soak-")
	if err != nil {
		return run, nil, err
	}
	defer os.RemoveAll(dir)
	var args []string
	if retain {
		args = []string{"--retain-finished", c.retainFinished.String(), "--retain-tombstones", c.retainTombstones.String()}
	}
	sys := newLiminald(bin, args...).(*liminaldSystem)
	if err := sys.Start(ctx, dir); err != nil {
		return run, nil, err
	}
	defer func() {
		if serr := sys.Stop(); serr != nil && err == nil {
			err = serr
		}
	}()
	stats, err := ipc.Dial(ctx, sys.socket)
	if err != nil {
		return run, nil, err
	}
	defer stats.Close()
	clients, err := dialAll(ctx, sys, c.clients)
	if err != nil {
		return run, nil, err
	}
	defer closeAll(clients)

	start := time.Now()
	rec := &soakRecorder{end: start.Add(length)}
	load := lifecycleLoad{prefix: "soak", convs: soakConversations, output: soakOutput(c.stepBytes), end: rec.end, pace: c.pace(),
		more: func() bool { return time.Now().Before(rec.end) }, record: rec.record}
	smp := soakSampler{sys: sys, stats: stats, rec: rec, start: start, last: start}
	first := -1 // the sample that starts the window
	sample := func() error {
		s, err := smp.sample(ctx)
		if err != nil {
			return err
		}
		run.Samples = append(run.Samples, s)
		fmt.Fprintf(progress, "bench: %s %s: db %s, WAL %s, RSS %s, %s events/s, p99 %s ms, p99.9 %s ms, tombstones %s, compacted %s, dropped %s\n",
			label, time.Duration(s.ElapsedSeconds*float64(time.Second)).Round(time.Second), bytesText(s.DBBytes), bytesText(s.WALBytes), bytesText(s.RSSBytes),
			rate(s.EventsPerSec), num(s.P99Ms), num(s.P999Ms), rate(float64(s.Tombstones)), rate(float64(s.Compacted)), rate(float64(s.Dropped)))
		if first < 0 && s.ElapsedSeconds >= c.warmup().Seconds() {
			first = len(run.Samples) - 1
			rec.startWindow()
		}
		return nil
	}
	if err := sample(); err != nil { // the empty database
		return run, nil, err
	}
	if err := load.drive(ctx, clients, c.every, sample); err != nil {
		return run, nil, err
	}
	// The end, unless the last tick came with it: an interval of a few
	// stragglers would say nothing.
	if time.Since(smp.last) >= c.every/2 {
		if err := sample(); err != nil {
			return run, nil, err
		}
	}
	if first < 0 {
		return run, nil, fmt.Errorf("%s: the load ended (%s) before the warm-up did (%s)", label, length, c.warmup())
	}
	window, events := rec.windowLatencies()
	w, last := run.Samples[first], run.Samples[len(run.Samples)-1]
	secs := rec.end.Sub(start).Seconds() - w.ElapsedSeconds
	run = SoakRun{Retention: retain, Samples: run.Samples, Window: SoakWindow{
		StartSeconds: w.ElapsedSeconds, Seconds: secs, SoakLatency: soakLatency(window),
		EventsPerSec: float64(events) / secs, Compacted: last.Compacted - w.Compacted, Dropped: last.Dropped - w.Dropped,
	}}
	fmt.Fprintf(progress, "bench: %s: after the warm-up, %s events/s, p50 %s ms, p99 %s ms, p99.9 %s ms, %s compacted, %s dropped\n",
		label, rate(run.Window.EventsPerSec), num(run.Window.P50Ms), num(run.Window.P99Ms), num(run.Window.P999Ms),
		rate(float64(run.Window.Compacted)), rate(float64(run.Window.Dropped)))
	return run, window, nil
}

// soakOutput is an output of n bytes.
func soakOutput(n int) []byte {
	return bytes.Repeat(stepOutput, n/len(stepOutput)+1)[:n]
}

// soakRecorder keeps the latencies of the ops of a soak: those since the
// last sample, and those of the window, from its start to end.
type soakRecorder struct {
	end time.Time // of the load: an op completing later is not in the window

	mu             sync.Mutex
	interval       latencies
	intervalEvents int64
	inWindow       bool
	window         latencies
	windowEvents   int64
}

// record is the load's: it may be called from every client at once.
func (r *soakRecorder) record(start time.Time, events int64) {
	now := time.Now()
	d := now.Sub(start)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.interval = append(r.interval, d)
	r.intervalEvents += events
	if r.inWindow && now.Before(r.end) {
		r.window = append(r.window, d)
		r.windowEvents += events
	}
}

// take returns the latencies (sorted) and the events of the interval,
// and starts the next.
func (r *soakRecorder) take() (latencies, int64) {
	r.mu.Lock()
	l, events := r.interval, r.intervalEvents
	r.interval, r.intervalEvents = make(latencies, 0, len(l)), 0
	r.mu.Unlock()
	l.sort()
	return l, events
}

func (r *soakRecorder) startWindow() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inWindow = true
}

// windowLatencies returns the latencies (sorted) and the events of the
// window; call it once the load has ended.
func (r *soakRecorder) windowLatencies() (latencies, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.window.sort()
	return r.window, r.windowEvents
}

// soakSampler takes the samples of one run.
type soakSampler struct {
	sys   *liminaldSystem
	stats *ipc.Client
	rec   *soakRecorder
	start time.Time
	last  time.Time // of the sample before
	cpu   float64   // the daemon's CPU seconds at the sample before
}

func (p *soakSampler) sample(ctx context.Context) (SoakSample, error) {
	now := time.Now()
	l, events := p.rec.take()
	st, err := p.stats.Stats(ctx)
	if err != nil {
		return SoakSample{}, fmt.Errorf("stats: %w", err)
	}
	u, err := p.sys.Usage()
	if err != nil {
		return SoakSample{}, err
	}
	s := SoakSample{
		ElapsedSeconds: now.Sub(p.start).Seconds(),
		RSSBytes:       p.sys.status("VmRSS"),
		Ops:            int64(len(l)),
		P50Ms:          ms(l.percentile(0.50)), P99Ms: ms(l.percentile(0.99)), P999Ms: ms(l.percentile(0.999)),
		Events: st.Events, Messages: st.Messages, Tombstones: st.Tombstones, Compacted: st.Compacted, Dropped: st.TombstonesDropped,
		CompactionPasses: st.Compaction.Passes, CompactionMsMax: st.Compaction.MsMax, CommitMsMax: st.Commits.CommitMsMax,
	}
	s.DBBytes, s.WALBytes = p.sys.fileSizes()
	if s.PageSize, s.Pages, s.FreePages, err = dbHeader(p.sys.dbPath()); err != nil {
		return SoakSample{}, err
	}
	if secs := now.Sub(p.last).Seconds(); secs > 0 {
		s.EventsPerSec = float64(events) / secs
		s.CPU = (u.CPUSeconds - p.cpu) / secs
	}
	p.last, p.cpu = now, u.CPUSeconds
	return s, nil
}

// dbHeader reads the page size, the page count and the free-list's page
// count from the header of the SQLite database file at path
// (https://sqlite.org/fileformat.html#the_database_header), without
// opening the database: as of the last checkpoint. A file too short to
// have a header yet gives zeros.
func dbHeader(path string) (pageSize, pages, free int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, 0, err
	}
	defer f.Close()
	var h [100]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return 0, 0, 0, nil
		}
		return 0, 0, 0, err
	}
	pageSize = int64(binary.BigEndian.Uint16(h[16:18]))
	if pageSize == 1 {
		pageSize = 65536
	}
	return pageSize, int64(binary.BigEndian.Uint32(h[28:32])), int64(binary.BigEndian.Uint32(h[36:40])), nil
}

// writeSoakOutputs writes soak.json and soak.png into dir, and
// BENCHMARKS.md when the results.json of a run is there.
func writeSoakOutputs(dir string, r *SoakResult) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "soak.json"), r); err != nil {
		return err
	}
	if err := writeSoakPlot(r, filepath.Join(dir, "soak.png")); err != nil {
		return err
	}
	res, err := readResults(filepath.Join(dir, "results.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	res.Soak = r
	return writeReport(dir, res)
}

// readSoak reads the soak.json at path, or returns nil if there is none.
func readSoak(path string) (*SoakResult, error) {
	var r SoakResult
	err := readJSON(path, &r)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &r, nil
}
