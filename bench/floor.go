package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The floors: what one op of any system costs at least on this machine,
// measured in the same run as the systems.
const (
	floorSQLiteCommit     = "sqlite_commit"
	floorGroupCommit      = "sqlite_group_commit"
	floorFdatasync        = "fdatasync"
	floorRoundTrip        = "socket_round_trip"
	floorRoundTripProcess = "socket_round_trip_process"
)

// measureFloor runs op in a loop in each of clients goroutines for warmup,
// then for d, and returns the ops per second and latencies of the measured
// part, over all the goroutines. op must be safe for concurrent use when
// clients > 1.
func measureFloor(name, what string, clients int, warmup, d time.Duration, op func() error) (Floor, error) {
	w := window{start: time.Now().Add(warmup)}
	w.end = w.start.Add(d)
	lats := make([]latencies, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for time.Now().Before(w.end) {
				start := time.Now()
				if err := op(); err != nil {
					errs[i] = err
					return
				}
				if end := time.Now(); w.contains(end) {
					lats[i] = append(lats[i], end.Sub(start))
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return Floor{}, fmt.Errorf("floor %s: %w", name, err)
	}
	lat := latencies(slices.Concat(lats...))
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

// withFloorTable opens a fresh SQLite file at path with openSQLite (WAL,
// synchronous=FULL, one connection), creates a table of rows, prepares
// the INSERT of one row into it and measures the floor name with measure,
// then closes the file.
func withFloorTable(ctx context.Context, path, name string, measure func(db *sql.DB, insert *sql.Stmt) (Floor, error)) (Floor, error) {
	db, err := openSQLite(path)
	if err != nil {
		return Floor{}, fmt.Errorf("floor %s: %w", name, err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `CREATE TABLE rows (id INTEGER PRIMARY KEY, v BLOB NOT NULL)`); err != nil {
		return Floor{}, fmt.Errorf("floor %s: %w", name, err)
	}
	insert, err := db.PrepareContext(ctx, `INSERT INTO rows (v) VALUES (?)`)
	if err != nil {
		return Floor{}, fmt.Errorf("floor %s: %w", name, err)
	}
	defer insert.Close()
	return measure(db, insert)
}

// sqliteCommitFloor measures fsync'd single-row commits: one connection to
// a SQLite file in dir in WAL mode with synchronous=FULL, one INSERT per
// transaction.
func sqliteCommitFloor(ctx context.Context, dir string, warmup, d time.Duration) (Floor, error) {
	return withFloorTable(ctx, filepath.Join(dir, "floor.db"), floorSQLiteCommit, func(_ *sql.DB, insert *sql.Stmt) (Floor, error) {
		return measureFloor(floorSQLiteCommit, "SQLite single-row commit (WAL, synchronous=FULL, one INSERT per transaction, one goroutine)",
			1, warmup, d, func() error {
				_, err := insert.ExecContext(ctx, stepOutput)
				return err
			})
	})
}

// groupCommitFloor measures SQLite's own group commit of plain rows:
// ratioClients goroutines each submit the INSERT of one row and wait for
// its commit, while one writer goroutine takes every insert waiting, runs
// them in one transaction on a SQLite file in dir (WAL, synchronous=FULL),
// commits and answers each. An op is one row, from its submission to its
// answer.
func groupCommitFloor(ctx context.Context, dir string, warmup, d time.Duration) (Floor, error) {
	return withFloorTable(ctx, filepath.Join(dir, "group.db"), floorGroupCommit, func(db *sql.DB, insert *sql.Stmt) (Floor, error) {
		// Each submission is the channel its answer goes to.
		submitted := make(chan chan error, ratioClients)
		written := make(chan struct{})
		go func() {
			defer close(written)
			var batch []chan error
			for first := range submitted {
				batch = append(batch[:0], first)
			take:
				for {
					select {
					case next, ok := <-submitted:
						if !ok {
							break take
						}
						batch = append(batch, next)
					default:
						break take
					}
				}
				err := commitRows(ctx, db, insert, len(batch))
				for _, answer := range batch {
					answer <- err
				}
			}
		}()
		defer func() { close(submitted); <-written }()

		what := fmt.Sprintf("SQLite group commit of plain rows: %d goroutines each submit one INSERT of a %d-byte row and wait for its commit; "+
			"one writer goroutine takes every insert waiting, runs them in one transaction (WAL, synchronous=FULL), commits, then answers each. "+
			"ops/s: rows committed a second; latency: one submission to its answer", ratioClients, len(stepOutput))
		return measureFloor(floorGroupCommit, what, ratioClients, warmup, d, func() error {
			answer := make(chan error, 1)
			submitted <- answer
			return <-answer
		})
	})
}

// commitRows inserts n rows with insert in one transaction of db and
// commits it.
func commitRows(ctx context.Context, db *sql.DB, insert *sql.Stmt, n int) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	stmt := tx.StmtContext(ctx, insert)
	for range n {
		if _, err := stmt.ExecContext(ctx, stepOutput); err != nil {
			tx.Rollback()
			return err
		}
	}
	return tx.Commit()
}

// fdatasyncFloor measures a write of 100 bytes and an fdatasync of the
// file, appending to a file in dir.
func fdatasyncFloor(dir string, warmup, d time.Duration) (Floor, error) {
	f, err := os.OpenFile(filepath.Join(dir, "floor.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return Floor{}, err
	}
	defer f.Close()
	return measureFloor(floorFdatasync, "write(100 bytes) + fdatasync on a file, appending", 1, warmup, d, func() error {
		if _, err := f.Write(stepOutput); err != nil {
			return err
		}
		return unix.Fdatasync(int(f.Fd()))
	})
}

// roundTripFloor measures the round trip of an empty JSON line over a unix
// socket in dir: one client writes "{}\n" and reads it back from an echo
// server, a goroutine of the harness.
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
	return measureRoundTrip(floorRoundTrip, `round trip of "{}\n" over a unix socket to an echo server in Go`, nc, warmup, d)
}

// echoEnv names the hidden mode in which the harness's binary serves the
// echo on the unix socket at the variable's value until it is killed:
// processRoundTripFloor runs it as a process of its own.
const echoEnv = "LIMINALD_BENCH_ECHO"

// processRoundTripFloor measures the round trip of roundTripFloor to an
// echo server that is a process of its own, as the daemon is: the running
// binary (the harness, or the test binary) again, in the mode of echoEnv.
func processRoundTripFloor(ctx context.Context, dir string, warmup, d time.Duration) (Floor, error) {
	self, err := os.Executable()
	if err != nil {
		return Floor{}, err
	}
	path := filepath.Join(dir, "echo-process.sock")
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), echoEnv+"="+path)
	srv, err := startPeerServer(cmd, filepath.Join(dir, "echo-process.log"))
	if err != nil {
		return Floor{}, fmt.Errorf("floor %s: %w", floorRoundTripProcess, err)
	}
	// The connection that finds the server listening is the one measured:
	// it serves one at a time.
	var nc net.Conn
	if err := srv.waitReady(ctx, func(ctx context.Context) (err error) {
		nc, err = (&net.Dialer{}).DialContext(ctx, "unix", path)
		return err
	}); err != nil {
		return Floor{}, fmt.Errorf("floor %s: echo server: %w", floorRoundTripProcess, err)
	}
	defer srv.kill()
	defer nc.Close()
	return measureRoundTrip(floorRoundTripProcess, `round trip of "{}\n" over a unix socket to an echo server in Go in a process of its own, as a daemon`,
		nc, warmup, d)
}

// measureRoundTrip measures the floor name: writing "{}\n" on nc and
// reading it back, one at a time.
func measureRoundTrip(name, what string, nc net.Conn, warmup, d time.Duration) (Floor, error) {
	r := bufio.NewReader(nc)
	line := []byte("{}\n")
	return measureFloor(name, what, 1, warmup, d, func() error {
		if _, err := nc.Write(line); err != nil {
			return err
		}
		_, err := r.ReadSlice('\n')
		return err
	})
}

// echoMain serves the echo on the unix socket at path, a connection at a
// time, until it is killed: the mode of echoEnv.
func echoMain(path string) int {
	ln, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench: echo:", err)
		return 1
	}
	for {
		if err := echo(ln); err != nil {
			fmt.Fprintln(os.Stderr, "bench: echo:", err)
			return 1
		}
	}
}

// echo serves one connection of ln, writing back each line it reads,
// until the connection is closed. Returns the error of Accept, if any: ln
// is closed.
func echo(ln net.Listener) error {
	nc, err := ln.Accept()
	if err != nil {
		return err
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil
		}
		if _, err := nc.Write(line); err != nil {
			return nil
		}
	}
}

// measureFloors measures the floors in dir, one after another.
func measureFloors(ctx context.Context, dir string, warmup, d time.Duration) ([]Floor, error) {
	var floors []Floor
	for _, f := range []func() (Floor, error){
		func() (Floor, error) { return sqliteCommitFloor(ctx, dir, warmup, d) },
		func() (Floor, error) { return groupCommitFloor(ctx, dir, warmup, d) },
		func() (Floor, error) { return fdatasyncFloor(dir, warmup, d) },
		func() (Floor, error) { return roundTripFloor(dir, warmup, d) },
		func() (Floor, error) { return processRoundTripFloor(ctx, dir, warmup, d) },
	} {
		fl, err := f()
		if err != nil {
			return nil, err
		}
		floors = append(floors, fl)
	}
	return floors, nil
}
