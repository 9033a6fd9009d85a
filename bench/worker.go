package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// workerCommand is the hidden subcommand that runs one sqlite client in a
// process of its own: the harness re-executes itself with it.
//
// The harness writes a workerJob line on the worker's stdin; the worker
// opens the database, answers a workerReady line on stdout, waits for the
// workerGo line with the window, runs the workload and prints its
// clientResult as one JSON line.
const workerCommand = "worker"

type workerJob struct {
	Path   string `json:"path"`
	Point  point  `json:"point"`
	Client int    `json:"client"`
}

type workerReady struct {
	Ready bool `json:"ready"`
}

// workerGo is the window, in Unix nanoseconds.
type workerGo struct {
	Start int64 `json:"start"`
	End   int64 `json:"end"`
}

// workerProc is a worker process as the harness sees it.
type workerProc struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	out    *json.Decoder
	stderr bytes.Buffer
}

// fail returns err with what the worker wrote on stderr.
func (p *workerProc) fail(err error) error {
	if s := strings.TrimSpace(p.stderr.String()); s != "" {
		return fmt.Errorf("%w: %s", err, s)
	}
	return err
}

// runPoint runs point p with each client in a worker process. The CPU time
// is the workers' in the window, load generation included; the peak memory
// is the sum of their peak RSS.
func (s *sqliteSystem) runPoint(ctx context.Context, p point) (pointResult, error) {
	self, err := os.Executable()
	if err != nil {
		return pointResult{}, err
	}
	procs := make([]*workerProc, 0, p.Clients)
	defer func() {
		for _, w := range procs {
			if w.cmd.ProcessState == nil {
				w.cmd.Process.Kill()
				w.cmd.Wait()
			}
		}
	}()
	for i := range p.Clients {
		w, err := startWorker(self, workerJob{Path: s.path, Point: p, Client: i})
		if err != nil {
			return pointResult{}, fmt.Errorf("sqlite: worker %d: %w", i, err)
		}
		procs = append(procs, w)
	}
	for i, w := range procs {
		var ready workerReady
		if err := w.out.Decode(&ready); err != nil || !ready.Ready {
			w.cmd.Wait()
			return pointResult{}, w.fail(fmt.Errorf("sqlite: worker %d did not get ready: %v", i, err))
		}
	}
	now := time.Now()
	window := workerGo{Start: now.Add(p.Warmup).UnixNano(), End: now.Add(p.Warmup + p.Duration).UnixNano()}
	for i, w := range procs {
		if err := json.NewEncoder(w.stdin).Encode(window); err != nil {
			return pointResult{}, fmt.Errorf("sqlite: worker %d: %w", i, err)
		}
	}
	results := make([]clientResult, len(procs))
	var errs []error
	for i, w := range procs {
		err := w.out.Decode(&results[i])
		if werr := w.cmd.Wait(); err == nil {
			err = werr
		}
		if err != nil {
			errs = append(errs, w.fail(fmt.Errorf("sqlite: worker %d: %w", i, err)))
			continue
		}
		ru := w.cmd.ProcessState.SysUsage().(*syscall.Rusage)
		results[i].PeakRSS = ru.Maxrss * 1024
		s.addWorkers(Usage{CPUSeconds: rusageSeconds(ru)})
	}
	if len(errs) > 0 {
		return pointResult{}, errors.Join(errs...)
	}
	r := merge(results)
	for _, c := range results {
		r.CPUSeconds += c.CPUSeconds
		r.PeakRSS += c.PeakRSS
	}
	s.addWorkers(Usage{PeakRSS: r.PeakRSS})
	return r, nil
}

// startWorker starts a worker process and sends it its job.
func startWorker(self string, job workerJob) (*workerProc, error) {
	w := &workerProc{cmd: exec.Command(self, workerCommand)}
	w.cmd.Stderr = &w.stderr
	var err error
	if w.stdin, err = w.cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := w.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	w.out = json.NewDecoder(stdout)
	if err := w.cmd.Start(); err != nil {
		return nil, err
	}
	if err := json.NewEncoder(w.stdin).Encode(job); err != nil {
		w.cmd.Process.Kill()
		w.cmd.Wait()
		return nil, err
	}
	return w, nil
}

// workerMain is the worker subcommand; it returns the exit code.
func workerMain() int {
	if err := runWorker(context.Background(), os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func runWorker(ctx context.Context, stdin io.Reader, stdout io.Writer) error {
	in, out := json.NewDecoder(stdin), json.NewEncoder(stdout)
	var job workerJob
	if err := in.Decode(&job); err != nil {
		return fmt.Errorf("worker: read job: %w", err)
	}
	c, err := dialSQLite(ctx, job.Path)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := out.Encode(workerReady{Ready: true}); err != nil {
		return err
	}
	var g workerGo
	if err := in.Decode(&g); err != nil {
		return fmt.Errorf("worker: read window: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w := window{start: time.Unix(0, g.Start), end: time.Unix(0, g.End)}
	sampled := sampleWindow(ctx, w, selfUsage)
	r, err := runClient(ctx, c, job.Point, job.Client, w)
	if err != nil {
		cancel()
		<-sampled
		return err
	}
	u, err := (<-sampled).get()
	if err != nil {
		return err
	}
	r.CPUSeconds = u.CPUSeconds
	return out.Encode(r)
}

// selfUsage is this process's CPU time and peak RSS so far.
func selfUsage() (Usage, error) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return Usage{}, err
	}
	return Usage{CPUSeconds: rusageSeconds(&ru), PeakRSS: ru.Maxrss * 1024}, nil
}

func rusageSeconds(ru *syscall.Rusage) float64 {
	return time.Duration(syscall.TimevalToNsec(ru.Utime) + syscall.TimevalToNsec(ru.Stime)).Seconds()
}
