package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"
	"time"

	"liminald/ipc"
)

// scaleClients is how many clients store the events of a scale run.
const scaleClients = 64

// measureScale stores at least events events in a fresh liminald, with
// scaleClients clients running message lifecycles, then reads the daemon's
// memory, stops it with SIGTERM and times a restart until ping answers.
// The restarted daemon must skip a message finished at the start of the
// load and count every event stored.
func measureScale(ctx context.Context, bin, base string, events int64, progress io.Writer) (*ScaleResult, error) {
	dir, err := os.MkdirTemp(base, "scale-")
	if err != nil {
		return nil, err
	}
	sys := newLiminald(bin).(*liminaldSystem)
	if err := sys.Start(ctx, dir); err != nil {
		return nil, err
	}
	defer sys.Stop()
	start := time.Now()
	if err := storeEvents(ctx, sys, events, progress); err != nil {
		return nil, err
	}
	r := &ScaleResult{LoadSeconds: time.Since(start).Seconds()}
	r.RSSAfterBytes, r.PeakRSSBytes = sys.status("VmRSS"), sys.status("VmHWM")
	if err := sys.Stop(); err != nil {
		return nil, err
	}
	db, wal := sys.fileSizes()
	r.DBBytes = db + wal
	restart := time.Now()
	if err := sys.Start(ctx, dir); err != nil {
		return nil, fmt.Errorf("restart: %w", err)
	}
	r.RestartToReadySeconds = time.Since(restart).Seconds()
	if r.Events, err = checkRestarted(ctx, sys); err != nil {
		return nil, err
	}
	if r.Events < events {
		return nil, fmt.Errorf("the restarted daemon counts %d events, want at least %d", r.Events, events)
	}
	return r, sys.Stop()
}

// storeEvents runs lifecycles from scaleClients clients until at least
// events events are stored, with a progress line every 10 s.
func storeEvents(ctx context.Context, sys System, events int64, progress io.Writer) error {
	clients, err := dialAll(ctx, sys, scaleClients)
	if err != nil {
		return err
	}
	defer closeAll(clients)
	var stored atomic.Int64
	load := lifecycleLoad{prefix: "scale", output: stepOutput,
		more:   func() bool { return stored.Load() < events },
		record: func(_ time.Time, e int64) { stored.Add(e) }}
	start := time.Now()
	return load.drive(ctx, clients, 10*time.Second, func() error {
		n := stored.Load()
		fmt.Fprintf(progress, "bench: scale: %s of %s events, %s events/s\n",
			rate(float64(n)), rate(float64(events)), rate(float64(n)/time.Since(start).Seconds()))
		return nil
	})
}

// checkRestarted asks the restarted daemon about the first message the
// load finished, and returns the events it counts.
func checkRestarted(ctx context.Context, sys *liminaldSystem) (int64, error) {
	c, err := sys.Dial(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	if d, err := c.Receive(ctx, "scale-c0-0", "m-0", time.Now().UnixMilli()); err != nil || d.Action != "skip" {
		return 0, fmt.Errorf("after the restart, receive of a finished message: %+v, %v; want skip", d, err)
	}
	ic, err := ipc.Dial(ctx, sys.socket)
	if err != nil {
		return 0, err
	}
	defer ic.Close()
	st, err := ic.Stats(ctx)
	if err != nil {
		return 0, err
	}
	if st.Events == 0 {
		return 0, errors.New("the restarted daemon counts no events")
	}
	return st.Events, nil
}
