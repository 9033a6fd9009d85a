package main

import (
	"context"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// checkFloor fails t unless f is the floor name with ops measured over d
// and sane latencies.
func checkFloor(t *testing.T, f Floor, name string, d time.Duration) {
	t.Helper()
	if f.Name != name || f.What == "" {
		t.Errorf("floor %q (%q), want %s with a description", f.Name, f.What, name)
	}
	if f.Ops <= 0 || f.OpsPerSec != float64(f.Ops)/d.Seconds() {
		t.Errorf("floor %s: %d ops, %v ops/s over %s", name, f.Ops, f.OpsPerSec, d)
	}
	if f.P50Ms <= 0 || f.P99Ms < f.P50Ms {
		t.Errorf("floor %s: p50 %v ms, p99 %v ms", name, f.P50Ms, f.P99Ms)
	}
	t.Logf("floor %s: %s ops/s, p50 %s ms, p99 %s ms", name, rate(f.OpsPerSec), num(f.P50Ms), num(f.P99Ms))
}

// testFloor measures the floor name with measure in a new temporary
// directory, 20 ms of warm-up then 200 ms, checks it and returns it with
// the directory.
func testFloor(t *testing.T, name string, measure func(ctx context.Context, dir string, warmup, d time.Duration) (Floor, error)) (Floor, string) {
	t.Helper()
	dir := t.TempDir()
	const d = 200 * time.Millisecond
	f, err := measure(context.Background(), dir, 20*time.Millisecond, d)
	if err != nil {
		t.Fatal(err)
	}
	checkFloor(t, f, name, d)
	return f, dir
}

func TestGroupCommitFloor(t *testing.T) {
	f, dir := testFloor(t, floorGroupCommit, groupCommitFloor)
	// Every row counted was committed, with those of the warm-up and of
	// the goroutines' last submissions.
	db, err := openSQLite(filepath.Join(dir, "group.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var rows int64
	if err := db.QueryRow(`SELECT count(*) FROM rows`).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows < f.Ops {
		t.Errorf("%d rows committed, fewer than the %d ops counted", rows, f.Ops)
	}
}

func TestProcessRoundTripFloor(t *testing.T) {
	f, dir := testFloor(t, floorRoundTripProcess, processRoundTripFloor)
	if !strings.Contains(f.What, "process of its own") {
		t.Errorf("floor %s says %q, not that the echo server is a process of its own", f.Name, f.What)
	}
	// The echo server is gone: its socket accepts no more.
	if nc, err := net.Dial("unix", filepath.Join(dir, "echo-process.sock")); err == nil {
		nc.Close()
		t.Error("the echo server still accepts after the floor")
	}
}
