package main

import (
	"bytes"
	"context"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSoak runs bench/run --soak for a few seconds with retention of a
// few hundred milliseconds, into a directory that holds the results.json
// of a run: it must sample, compact and drop, compare retention off and
// on, and write soak.json, soak.png and BENCHMARKS.md with its section.
func TestSoak(t *testing.T) {
	out := t.TempDir()
	if err := writeJSON(filepath.Join(out, "results.json"), fixedResults()); err != nil {
		t.Fatal(err)
	}
	cfg, err := parseFlags([]string{"--liminald", buildLiminald(t), "--out", out,
		"--soak", "3s", "--soak-every", "250ms", "--retain-finished", "100ms", "--retain-tombstones", "200ms",
		"--clients", "8", "--soak-rate", "2000", "--soak-step-bytes", "200", "--soak-compare", "500ms", "--soak-pairs", "1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := run(context.Background(), cfg, io.Discard); err != nil {
		t.Fatal(err)
	}

	r, err := readSoak(filepath.Join(out, "soak.json"))
	if err != nil || r == nil {
		t.Fatalf("readSoak = %v, %v", r, err)
	}
	samples := r.Soak.Samples
	if len(samples) < 10 {
		t.Fatalf("%d samples in 3 s every 250 ms, want at least 10", len(samples))
	}
	last := samples[len(samples)-1]
	if last.Compacted == 0 || last.Dropped == 0 || last.CompactionPasses == 0 {
		t.Errorf("at the end: %d compacted, %d dropped, %d passes; want compaction and dropping", last.Compacted, last.Dropped, last.CompactionPasses)
	}
	if last.DBBytes <= 0 || last.Pages <= 0 || last.PageSize <= 0 || last.RSSBytes <= 0 || last.Events <= 0 {
		t.Errorf("last sample %+v: want the files, the memory and the events", last)
	}
	if w := r.Soak.Window; w.Ops == 0 || w.P99Ms <= 0 || w.P999Ms < w.P99Ms || w.StartSeconds < r.Settings.WarmupSeconds {
		t.Errorf("window %+v: want ops after the warm-up (%v s)", w, r.Settings.WarmupSeconds)
	} else if w.EventsPerSec > 1.25*r.Settings.RatePerSec {
		t.Errorf("window: %v events/s, want at most about the rate, %v", w.EventsPerSec, r.Settings.RatePerSec)
	}
	if len(r.Compare) != 2 || r.Compare[0].Retention || !r.Compare[1].Retention {
		t.Fatalf("comparison: %d runs, want retention off then on", len(r.Compare))
	}
	if off, on := r.Compare[0].Window, r.Compare[1].Window; off.Compacted != 0 || on.Compacted == 0 || on.Dropped == 0 {
		t.Errorf("comparison: compacted %d off, %d on, dropped %d on; want none off, some on", off.Compacted, on.Compacted, on.Dropped)
	}
	if r.Pooled == nil || r.Pooled.Off.Ops == 0 || r.Pooled.On.Ops == 0 {
		t.Errorf("pooled = %+v, want the ops of both", r.Pooled)
	}

	b, err := os.ReadFile(filepath.Join(out, "soak.png"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := png.Decode(bytes.NewReader(b)); err != nil {
		t.Errorf("soak.png: %v", err)
	}
	report, err := os.ReadFile(filepath.Join(out, "BENCHMARKS.md"))
	if err != nil {
		t.Fatal(err)
	}
	s := section(t, string(report), "Soak")
	for _, want := range []string{"`bench/run ", "--soak 3s", "(soak.png)", "| end (", "**auto_vacuum.**", "### Write latency with and without compaction", "| runs 1 and 2 |"} {
		if !strings.Contains(s, want) {
			t.Errorf("soak section lacks %q:\n%s", want, s)
		}
	}
}
