package main

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// runPoint of the sqlite system runs its clients as worker processes
	// of the running binary, and the floor socket_round_trip_process its
	// echo server: here, the test binary.
	hiddenModes()
	os.Exit(m.Run())
}

// mustStart starts sys in a new temporary directory and stops it when the
// test ends.
func mustStart(t *testing.T, sys System) {
	t.Helper()
	if err := sys.Start(context.Background(), t.TempDir()); err != nil {
		t.Fatalf("start %s: %v", sys.Name(), err)
	}
	t.Cleanup(func() {
		if err := sys.Stop(); err != nil {
			t.Errorf("stop %s: %v", sys.Name(), err)
		}
	})
}

// checkPoint checks the figures of a point that ran without error.
func checkPoint(t *testing.T, p point, r pointResult) {
	t.Helper()
	if r.Ops == 0 {
		t.Fatalf("%s: no op in the window", p.Mode)
	}
	if int64(len(r.Latencies)) != r.Ops {
		t.Errorf("%s: %d latencies for %d ops", p.Mode, len(r.Latencies), r.Ops)
	}
	if !slices.IsSorted(r.Latencies) || r.Latencies[0] <= 0 {
		t.Errorf("%s: latencies not sorted and positive: first %v", p.Mode, r.Latencies[0])
	}
	wantEvents := int64(0)
	if p.Mode == modeLifecycle {
		wantEvents = r.Ops // each lifecycle op appends one event
	}
	if r.Events != wantEvents {
		t.Errorf("%s: %d events for %d ops, want %d", p.Mode, r.Events, r.Ops, wantEvents)
	}
	if r.CPUSeconds < 0 || r.PeakRSS <= 0 {
		t.Errorf("%s: CPU %v s, peak RSS %d", p.Mode, r.CPUSeconds, r.PeakRSS)
	}
}

// testPoints runs each workload for a short window on the started sys.
func testPoints(t *testing.T, sys System, clients int) {
	ctx := context.Background()
	const known = 40
	if err := preload(ctx, sys, known); err != nil {
		t.Fatal(err)
	}
	for _, mode := range allModes {
		t.Run(mode, func(t *testing.T) {
			p := point{Mode: mode, Clients: clients, Prefix: "t-" + mode, Known: known, Warmup: 20 * time.Millisecond, Duration: 200 * time.Millisecond}
			r, err := runPoint(ctx, sys, p)
			if err != nil {
				t.Fatalf("runPoint(%s): %v", mode, err)
			}
			checkPoint(t, p, r)
		})
	}
}

func TestRunPoint_Liminald(t *testing.T) {
	sys := newLiminald(buildLiminald(t))
	mustStart(t, sys)
	testPoints(t, sys, 4)

	t.Run("UnexpectedDecisionFails", func(t *testing.T) {
		// Messages never received: decide answers start, not skip.
		p := point{Mode: modeDecide, Clients: 2, Known: 10_000, Duration: 100 * time.Millisecond}
		if _, err := runPoint(context.Background(), sys, p); !errors.Is(err, errUnexpected) {
			t.Errorf("runPoint on unknown messages: %v, want errUnexpected", err)
		}
	})
	t.Run("LifecycleAgainIsUnexpected", func(t *testing.T) {
		// The same prefix again: the first receive resumes instead of
		// starting.
		p := point{Mode: modeLifecycle, Clients: 1, Prefix: "t-" + modeLifecycle, Duration: 100 * time.Millisecond}
		if _, err := runPoint(context.Background(), sys, p); !errors.Is(err, errUnexpected) {
			t.Errorf("runPoint on a used prefix: %v, want errUnexpected", err)
		}
	})
}

func TestRunPoint_SQLiteProcesses(t *testing.T) {
	sys := newSQLite()
	mustStart(t, sys)
	testPoints(t, sys, 3)
	if u, err := sys.Usage(); err != nil || u.CPUSeconds <= 0 || u.PeakRSS <= 0 {
		t.Errorf("Usage() = %+v, %v, want the workers' CPU time and memory", u, err)
	}
}

func TestFloors(t *testing.T) {
	floors, err := measureFloors(context.Background(), t.TempDir(), 10*time.Millisecond, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range floors {
		names = append(names, f.Name)
		if f.Ops == 0 || f.OpsPerSec <= 0 || f.P50Ms <= 0 || f.P99Ms < f.P50Ms {
			t.Errorf("floor %s: %+v", f.Name, f)
		}
	}
	if want := []string{floorSQLiteCommit, floorGroupCommit, floorFdatasync, floorRoundTrip, floorRoundTripProcess}; !slices.Equal(names, want) {
		t.Errorf("floors %v, want %v", names, want)
	}
}
