package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Results is everything a run measured: results.json, from which the
// report and the plot are rendered.
type Results struct {
	Generated time.Time    `json:"generated"`
	Command   string       `json:"command"` // the bench/run command that reproduces the run
	Settings  Settings     `json:"settings"`
	Machine   Machine      `json:"machine"`
	Systems   []SystemInfo `json:"systems"`
	Floors    []Floor      `json:"floors"`
	Points    []Point      `json:"points"`
	// Scale is measured by a run of its own; a run that does not measure
	// it carries it over from the results.json it replaces.
	Scale *ScaleResult `json:"scale,omitempty"`
	// Soak is measured by a run of its own too, kept in soak.json beside
	// results.json.
	Soak *SoakResult `json:"-"`
}

// Settings are the run's parameters.
type Settings struct {
	Clients         []int    `json:"clients"`
	Modes           []string `json:"modes"`
	Systems         []string `json:"systems"`
	DurationSeconds float64  `json:"duration_seconds"` // of each point's measured window
	WarmupSeconds   float64  `json:"warmup_seconds"`
	Repetitions     int      `json:"repetitions"` // of each point; the median by throughput is kept
	Preloaded       int      `json:"preloaded"`   // finished messages the decide and redelivery loads ask about
}

// Machine is where the run ran.
type Machine struct {
	CPU         string `json:"cpu"`
	Cores       int    `json:"cores"`
	MemoryBytes int64  `json:"memory_bytes"`
	Kernel      string `json:"kernel"`
	Filesystem  string `json:"filesystem"` // of the temporary directory the systems' files are in
	GoVersion   string `json:"go_version"`
	Date        string `json:"date"`
}

// SystemInfo is how a system ran.
type SystemInfo struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Settings string `json:"settings"`
}

// Floor is the rate of one of the floors.
type Floor struct {
	Name      string  `json:"name"`
	What      string  `json:"what"`
	Ops       int64   `json:"ops"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50Ms     float64 `json:"p50_ms"`
	P99Ms     float64 `json:"p99_ms"`
}

// Point is one system under one workload at one number of clients.
type Point struct {
	System       string  `json:"system"`
	Mode         string  `json:"mode"`
	Clients      int     `json:"clients"`
	Seconds      float64 `json:"seconds"` // the measured window
	Ops          int64   `json:"ops"`
	Events       int64   `json:"events"` // events appended
	OpsPerSec    float64 `json:"ops_per_sec"`
	EventsPerSec float64 `json:"events_per_sec"`
	P50Ms        float64 `json:"p50_ms"`
	P99Ms        float64 `json:"p99_ms"`
	P999Ms       float64 `json:"p999_ms"`
	// CPUSeconds is the server's CPU time in the window (for sqlite, the
	// client processes', load generation included).
	CPUSeconds  float64 `json:"cpu_seconds"`
	CPUPer1kOps float64 `json:"cpu_seconds_per_1k_ops"`
	// PeakRSSBytes is the server's peak memory so far (for sqlite, the
	// sum of the client processes' peak RSS).
	PeakRSSBytes int64 `json:"peak_rss_bytes"`
}

// ScaleResult is the daemon at scale: its memory after storing Events
// events, and how long a restart takes with them stored.
type ScaleResult struct {
	Events                int64   `json:"events"`
	LoadSeconds           float64 `json:"load_seconds"`
	RSSAfterBytes         int64   `json:"rss_after_bytes"`
	PeakRSSBytes          int64   `json:"peak_rss_bytes"`
	DBBytes               int64   `json:"db_bytes"`
	RestartToReadySeconds float64 `json:"restart_to_ready_seconds"`
}

// newPoint is the Point of a pointResult measured over window d.
func newPoint(system string, p point, r pointResult) Point {
	secs := p.Duration.Seconds()
	pt := Point{
		System:       system,
		Mode:         p.Mode,
		Clients:      p.Clients,
		Seconds:      secs,
		Ops:          r.Ops,
		Events:       r.Events,
		OpsPerSec:    float64(r.Ops) / secs,
		EventsPerSec: float64(r.Events) / secs,
		P50Ms:        ms(r.Latencies.percentile(0.50)),
		P99Ms:        ms(r.Latencies.percentile(0.99)),
		P999Ms:       ms(r.Latencies.percentile(0.999)),
		CPUSeconds:   r.CPUSeconds,
		PeakRSSBytes: r.PeakRSS,
	}
	if r.Ops > 0 {
		pt.CPUPer1kOps = r.CPUSeconds / float64(r.Ops) * 1000
	}
	return pt
}

// point returns the point of system under mode at clients.
func (r *Results) point(system, mode string, clients int) (Point, bool) {
	for _, p := range r.Points {
		if p.System == system && p.Mode == mode && p.Clients == clients {
			return p, true
		}
	}
	return Point{}, false
}

// floor returns the floor called name.
func (r *Results) floor(name string) (Floor, bool) {
	for _, f := range r.Floors {
		if f.Name == name {
			return f, true
		}
	}
	return Floor{}, false
}

// readResults reads the results.json at path. Returns an error wrapping
// fs.ErrNotExist if there is none.
func readResults(path string) (*Results, error) {
	var r Results
	if err := readJSON(path, &r); err != nil {
		return nil, err
	}
	return &r, nil
}

// readJSON reads the JSON file at path into v. Returns an error wrapping
// fs.ErrNotExist if there is none.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// previousScale is the scale section of the results.json at path, or nil.
func previousScale(path string) (*ScaleResult, error) {
	r, err := readResults(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return r.Scale, nil
}

// writeJSON writes v to path as indented JSON.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
