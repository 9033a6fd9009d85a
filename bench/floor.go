package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// The floors: what one op of any system costs at least on this machine,
// measured in the same run as the systems.
const (
	floorSQLiteCommit = "sqlite_commit"
	floorFdatasync    = "fdatasync"
	floorRoundTrip    = "socket_round_trip"
)

// measureFloor runs op in a loop for warmup, then for d, and returns the
// ops per second and latencies of the measured part.
func measureFloor(name, what string, warmup, d time.Duration, op func() error) (Floor, error) {
	w := window{start: time.Now().Add(warmup)}
	w.end = w.start.Add(d)
	var lat latencies
	for time.Now().Before(w.end) {
		start := time.Now()
		if err := op(); err != nil {
			return Floor{}, fmt.Errorf("floor %s: %w", name, err)
		}
		if end := time.Now(); w.contains(end) {
			lat = append(lat, end.Sub(start))
		}
	}
	lat.sort()
	return Floor{
		Name:      name,
		What:      what,
		Ops:       int64(len(lat)),
		OpsPerSec: float64(len(lat)) / d.Seconds(),
		P50Ms:     ms(lat.percentile(0.50)),
		P99Ms:     ms(lat.percentile(0.99)),
	}, nil
}

// sqliteCommitFloor measures fsync'd single-row commits: one connection to
// a SQLite file in dir in WAL mode with synchronous=FULL, one INSERT per
// transaction.
func sqliteCommitFloor(ctx context.Context, dir string, warmup, d time.Duration) (Floor, error) {
	db, err := openSQLite(filepath.Join(dir, "floor.db"))
	if err != nil {
		return Floor{}, err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE rows (id INTEGER PRIMARY KEY, v BLOB NOT NULL)`); err != nil {
		return Floor{}, fmt.Errorf("floor %s: %w", floorSQLiteCommit, err)
	}
	insert, err := db.PrepareContext(ctx, `INSERT INTO rows (v) VALUES (?)`)
	if err != nil {
		return Floor{}, err
	}
	defer insert.Close()
	return measureFloor(floorSQLiteCommit, "SQLite single-row commit (WAL, synchronous=FULL, one INSERT per transaction, one goroutine)",
		warmup, d, func() error {
			_, err := insert.ExecContext(ctx, stepOutput)
			return err
		})
}

// fdatasyncFloor measures a write of 100 bytes and an fdatasync of the
// file, appending to a file in dir.
func fdatasyncFloor(dir string, warmup, d time.Duration) (Floor, error) {
	f, err := os.OpenFile(filepath.Join(dir, "floor.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return Floor{}, err
	}
	defer f.Close()
	return measureFloor(floorFdatasync, "write(100 bytes) + fdatasync on a file, appending", warmup, d, func() error {
		if _, err := f.Write(stepOutput); err != nil {
			return err
		}
		return unix.Fdatasync(int(f.Fd()))
	})
}

// roundTripFloor measures the round trip of an empty JSON line over a unix
// socket in dir: one client writes "{}\n" and reads it back from an echo
// server.
func roundTripFloor(dir string, warmup, d time.Duration) (Floor, error) {
	path := filepath.Join(dir, "echo.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		return Floor{}, err
	}
	served := make(chan struct{})
	go func() { echo(ln); close(served) }()
	defer func() { ln.Close(); <-served }()

	nc, err := net.Dial("unix", path)
	if err != nil {
		return Floor{}, err
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	line := []byte("{}\n")
	return measureFloor(floorRoundTrip, `round trip of "{}\n" over a unix socket to an echo server in Go`, warmup, d, func() error {
		if _, err := nc.Write(line); err != nil {
			return err
		}
		_, err := r.ReadSlice('\n')
		return err
	})
}

// echo serves one connection of ln, writing back each line it reads,
// until the connection or ln is closed.
func echo(ln net.Listener) {
	nc, err := ln.Accept()
	if err != nil {
		return
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		if _, err := nc.Write(line); err != nil {
			return
		}
	}
}

// measureFloors measures the three floors in dir.
func measureFloors(ctx context.Context, dir string, warmup, d time.Duration) ([]Floor, error) {
	var floors []Floor
	for _, f := range []func() (Floor, error){
		func() (Floor, error) { return sqliteCommitFloor(ctx, dir, warmup, d) },
		func() (Floor, error) { return fdatasyncFloor(dir, warmup, d) },
		func() (Floor, error) { return roundTripFloor(dir, warmup, d) },
	} {
		fl, err := f()
		if err != nil {
			return nil, err
		}
		floors = append(floors, fl)
	}
	return floors, nil
}
