// Command bench runs the same work against liminald and against what users
// would pick instead (SQLite opened by every client, Redis with
// appendfsync always, PostgreSQL), and against liminald on PostgreSQL with
// 1, 2 and 4 daemons sharing one database (liminaldpg.go), one system
// after another on this machine, measures the floors of the machine in the same run, and writes
// results.json, BENCHMARKS.md and benchmarks.png. bench/run builds it and
// liminald and runs it; see docs/BENCHMARKS.md. Two runs of their own
// measure liminald alone: --scale, after many events, and --soak, with
// retention under a steady load (soak.go).
//
// Every answer is checked against SPEC §1–§2: an unexpected decision or
// error fails the run with a non-zero exit.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// config is the command line.
type config struct {
	clients     []int
	duration    time.Duration
	repetitions int
	systems     []string
	modes       []string
	liminald    string // the binary
	out         string
	preload     int
	render      bool
	scale       int64      // events to store for the scale measurement; 0: the sweep
	soak        soakConfig // soak.duration 0: no soak
	command     string     // the bench/run command line, for the report
}

var allSystems = append([]string{"liminald", "sqlite", "redis", "postgres"}, pgSystemNames()...)

func main() {
	hiddenModes()
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		stop()
		os.Exit(1)
	}
}

// hiddenModes runs the mode the harness re-executes itself in, if the
// command line or the environment names one, and exits; else it returns.
// main and TestMain call it first, before any flag is parsed.
func hiddenModes() {
	if path := os.Getenv(echoEnv); path != "" {
		os.Exit(echoMain(path))
	}
	if len(os.Args) > 1 && os.Args[1] == workerCommand {
		os.Exit(workerMain())
	}
}

// parseFlags parses the command line.
func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: bench/run [flags]\n\nRuns the benchmarks and writes results.json, BENCHMARKS.md and benchmarks.png.\n\n")
		fs.PrintDefaults()
	}
	clients := fs.String("clients", "1,8,64,256", "comma-separated numbers of clients to measure")
	duration := fs.Duration("duration", 2*time.Second, "measured window of each point")
	long := fs.Bool("long", false, "the full sweep: 10s per point and 3 repetitions, keeping the median by throughput")
	repetitions := fs.Int("repetitions", 1, "repetitions of each point, keeping the median by throughput")
	systems := fs.String("systems", strings.Join(allSystems, ","), "comma-separated systems to run, in order")
	modes := fs.String("modes", strings.Join(allModes, ","), "comma-separated workloads")
	liminald := fs.String("liminald", "", "the liminald binary (bench/run builds it)")
	out := fs.String("out", "docs", "directory for results.json, BENCHMARKS.md and benchmarks.png")
	smoke := fs.Bool("smoke", false, "a quick check that every system runs: 8 clients, 300ms per point")
	render := fs.Bool("render", false, "only render BENCHMARKS.md and benchmarks.png from the results.json in --out")
	scale := fs.Int64("scale", 0, "instead of the sweep: store this many events in liminald, then measure its memory and a restart, into the results.json in --out (10000000 for the goals)")
	soak := fs.Duration("soak", 0, "instead of the sweep: run liminald with retention on under a steady lifecycle load this long, sampling its files, memory and latency, then compare latency with retention off and on; writes soak.json and soak.png into --out, and BENCHMARKS.md if results.json is there (10m for the figures of BENCHMARKS.md)")
	soakEvery := fs.Duration("soak-every", 5*time.Second, "with --soak: the interval between samples")
	retainFinished := fs.Duration("retain-finished", 5*time.Second, "with --soak: liminald's --retain-finished")
	retainTombstones := fs.Duration("retain-tombstones", 30*time.Second, "with --soak: liminald's --retain-tombstones")
	soakRate := fs.Float64("soak-rate", 0, "with --soak: the events/s the clients aim at together, each pacing its messages and not catching up when late (0: each client as fast as it goes)")
	soakStepBytes := fs.Int("soak-step-bytes", 300, "with --soak: the output of each step, in bytes")
	soakCompare := fs.Duration("soak-compare", time.Minute, "with --soak: the measured window of each run of the comparison of retention off and on, after the soak's warm-up; 0 skips the comparison")
	soakPairs := fs.Int("soak-pairs", 2, "with --soak: the comparison's runs with retention off then on, in turn")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	cfg := config{duration: *duration, repetitions: *repetitions, liminald: *liminald, out: *out, preload: 2000, render: *render, scale: *scale}
	if cfg.scale < 0 {
		return config{}, errors.New("--scale must not be negative")
	}
	var err error
	if cfg.clients, err = parseInts(*clients); err != nil {
		return config{}, fmt.Errorf("--clients: %w", err)
	}
	if cfg.systems, err = parseNames(*systems, allSystems); err != nil {
		return config{}, fmt.Errorf("--systems: %w", err)
	}
	if cfg.modes, err = parseNames(*modes, allModes); err != nil {
		return config{}, fmt.Errorf("--modes: %w", err)
	}
	if *long {
		if !set["duration"] {
			cfg.duration = 10 * time.Second
		}
		if !set["repetitions"] {
			cfg.repetitions = 3
		}
	}
	if *smoke {
		cfg.clients, cfg.duration, cfg.repetitions, cfg.preload = []int{8}, 300*time.Millisecond, 1, 200
	}
	if *soak != 0 {
		if *soak < 0 || *soakEvery <= 0 || *retainFinished <= 0 || *retainTombstones < 0 || *soakRate < 0 || *soakStepBytes < 0 || *soakCompare < 0 || *soakPairs < 1 {
			return config{}, errors.New("--soak, --soak-every and --retain-finished must be positive, --soak-pairs at least 1, and the other --soak-* and --retain-* flags not negative")
		}
		if cfg.scale > 0 || cfg.render || *smoke {
			return config{}, errors.New("--soak does not go with --scale, --render or --smoke")
		}
		if !set["clients"] {
			cfg.clients = []int{ratioClients}
		}
		if len(cfg.clients) != 1 {
			return config{}, errors.New("--soak runs at one number of --clients")
		}
		cfg.soak = soakConfig{duration: *soak, every: *soakEvery, retainFinished: *retainFinished, retainTombstones: *retainTombstones,
			clients: cfg.clients[0], rate: *soakRate, stepBytes: *soakStepBytes, compare: *soakCompare, pairs: *soakPairs}
	}
	if cfg.duration <= 0 || cfg.repetitions < 1 {
		return config{}, errors.New("--duration and --repetitions must be positive")
	}
	if !cfg.render && (cfg.scale > 0 || cfg.soak.duration > 0 || slices.ContainsFunc(cfg.systems, func(s string) bool { return strings.HasPrefix(s, "liminald") })) && cfg.liminald == "" {
		return config{}, errors.New("--liminald: the path of the liminald binary is needed (bench/run builds it)")
	}
	// The command that reproduces the run, without the flags bench/run
	// sets itself.
	cmd := []string{"bench/run"}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "liminald", "out", "render":
		case "long", "smoke":
			cmd = append(cmd, "--"+f.Name)
		default:
			cmd = append(cmd, "--"+f.Name+" "+f.Value.String())
		}
	})
	cfg.command = strings.Join(cmd, " ")
	return cfg, nil
}

func parseInts(s string) ([]int, error) {
	var v []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		v = append(v, n)
	}
	return v, nil
}

func parseNames(s string, known []string) ([]string, error) {
	var v []string
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if !slices.Contains(known, f) {
			return nil, fmt.Errorf("unknown %q (known: %s)", f, strings.Join(known, ", "))
		}
		v = append(v, f)
	}
	return v, nil
}

// warmup is the warm-up before each point's window.
func (cfg config) warmup() time.Duration { return min(cfg.duration/4, time.Second) }

// newSystem returns the system called name.
func newSystem(name string, cfg config) System {
	switch name {
	case "liminald":
		return newLiminald(cfg.liminald)
	case "sqlite":
		return newSQLite()
	case "redis":
		return newRedis()
	case "postgres":
		return newPostgres()
	default:
		n, _ := strconv.Atoi(strings.TrimPrefix(name, pgSystemPrefix))
		return newLiminaldPG(cfg.liminald, n)
	}
}

// run runs the benchmarks of cfg and writes their outputs, with progress
// lines on progress.
func run(ctx context.Context, cfg config, progress io.Writer) error {
	if cfg.render {
		r, err := readResults(filepath.Join(cfg.out, "results.json"))
		if err != nil {
			return err
		}
		return writeOutputs(cfg.out, r)
	}
	base, err := os.MkdirTemp("", "liminald-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	// Servers that run as a user of their own (postgres) must reach their
	// directory inside.
	if err := os.Chmod(base, 0o711); err != nil {
		return err
	}
	if cfg.scale > 0 {
		return runScale(ctx, cfg, base, progress)
	}
	if cfg.soak.duration > 0 {
		return runSoak(ctx, cfg, base, progress)
	}

	r := &Results{
		Generated: time.Now().UTC(),
		Command:   cfg.command,
		Settings: Settings{
			Clients: cfg.clients, Modes: cfg.modes, Systems: cfg.systems,
			DurationSeconds: cfg.duration.Seconds(), WarmupSeconds: cfg.warmup().Seconds(),
			Repetitions: cfg.repetitions, Preloaded: cfg.preload,
		},
		Machine: machine(base),
	}
	fmt.Fprintf(progress, "bench: floors, %s each\n", cfg.duration)
	if r.Floors, err = measureFloors(ctx, base, cfg.warmup(), cfg.duration); err != nil {
		return err
	}
	for _, f := range r.Floors {
		fmt.Fprintf(progress, "bench: floor %s: %s ops/s, p50 %s ms, p99 %s ms\n", f.Name, rate(f.OpsPerSec), num(f.P50Ms), num(f.P99Ms))
	}
	for _, name := range cfg.systems {
		info, points, err := runSystem(ctx, newSystem(name, cfg), cfg, base, progress)
		if err != nil {
			return err
		}
		r.Systems = append(r.Systems, info)
		r.Points = append(r.Points, points...)
	}
	if r.Scale, err = previousScale(filepath.Join(cfg.out, "results.json")); err != nil {
		return err
	}
	if err := writeOutputs(cfg.out, r); err != nil {
		return err
	}
	fmt.Fprintf(progress, "bench: wrote %s\n", filepath.Join(cfg.out, "BENCHMARKS.md"))
	return nil
}

// runScale measures liminald at scale and writes it into the results in
// cfg.out, which an earlier run wrote.
func runScale(ctx context.Context, cfg config, base string, progress io.Writer) error {
	path := filepath.Join(cfg.out, "results.json")
	r, err := readResults(path)
	if err != nil {
		return fmt.Errorf("--scale adds to the results of a run (bench/run first): %w", err)
	}
	fmt.Fprintf(progress, "bench: scale: storing %s events in liminald\n", rate(float64(cfg.scale)))
	if r.Scale, err = measureScale(ctx, cfg.liminald, base, cfg.scale, progress); err != nil {
		return err
	}
	fmt.Fprintf(progress, "bench: scale: %+v\n", *r.Scale)
	return writeOutputs(cfg.out, r)
}

// runSystem starts sys in a fresh directory under base, measures every
// point of cfg on it and stops it.
func runSystem(ctx context.Context, sys System, cfg config, base string, progress io.Writer) (info SystemInfo, points []Point, err error) {
	dir, err := os.MkdirTemp(base, sys.Name()+"-")
	if err != nil {
		return info, nil, err
	}
	defer os.RemoveAll(dir)
	fmt.Fprintf(progress, "bench: %s: starting\n", sys.Name())
	if err := sys.Start(ctx, dir); err != nil {
		sys.Stop()
		return info, nil, fmt.Errorf("start %s: %w", sys.Name(), err)
	}
	defer func() {
		if serr := sys.Stop(); serr != nil && err == nil {
			err = fmt.Errorf("stop %s: %w", sys.Name(), serr)
		}
	}()
	info = describe(sys)
	if slices.Contains(cfg.modes, modeDecide) || slices.Contains(cfg.modes, modeRedelivery) {
		fmt.Fprintf(progress, "bench: %s: preloading %d finished messages\n", sys.Name(), cfg.preload)
		if err := preload(ctx, sys, cfg.preload); err != nil {
			return info, nil, err
		}
	}
	n := 0
	for _, mode := range cfg.modes {
		for _, clients := range cfg.clients {
			var reps []Point
			for rep := range cfg.repetitions {
				n++
				p := point{Mode: mode, Clients: clients, Prefix: fmt.Sprintf("p%d", n), Known: cfg.preload,
					Warmup: cfg.warmup(), Duration: cfg.duration}
				pt, err := measure(ctx, sys, p)
				if err != nil {
					return info, nil, fmt.Errorf("%s %s at %d clients: %w", sys.Name(), mode, clients, err)
				}
				fmt.Fprintf(progress, "bench: %s %s clients=%d rep=%d: %s ops/s, %s events/s, p50 %s ms, p99 %s ms, cpu %s s\n",
					sys.Name(), mode, clients, rep+1, rate(pt.OpsPerSec), rate(pt.EventsPerSec), num(pt.P50Ms), num(pt.P99Ms), num(pt.CPUSeconds))
				reps = append(reps, pt)
			}
			points = append(points, median(reps))
		}
	}
	return info, points, nil
}

// measure runs point p on sys, with a deadline well past its window.
func measure(ctx context.Context, sys System, p point) (Point, error) {
	ctx, cancel := context.WithTimeout(ctx, p.Warmup+p.Duration+2*time.Minute)
	defer cancel()
	r, err := runPoint(ctx, sys, p)
	if err != nil {
		return Point{}, err
	}
	if r.Ops == 0 {
		return Point{}, errors.New("no op completed in the window")
	}
	return newPoint(sys.Name(), p, r), nil
}

// median is the repetition with the median throughput.
func median(reps []Point) Point {
	reps = slices.Clone(reps)
	slices.SortFunc(reps, func(a, b Point) int { return cmp.Compare(a.OpsPerSec, b.OpsPerSec) })
	return reps[len(reps)/2]
}

// writeOutputs writes results.json, BENCHMARKS.md and benchmarks.png into
// dir.
func writeOutputs(dir string, r *Results) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "results.json"), r); err != nil {
		return err
	}
	if err := writeReport(dir, r); err != nil {
		return err
	}
	return writePlot(r, filepath.Join(dir, "benchmarks.png"))
}

// writeReport writes BENCHMARKS.md into dir, with the soak of the
// soak.json there unless r has one.
func writeReport(dir string, r *Results) error {
	if r.Soak == nil {
		var err error
		if r.Soak, err = readSoak(filepath.Join(dir, "soak.json")); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, "BENCHMARKS.md"), []byte(renderReport(r)), 0o644)
}
