package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"liminald/pgtest"
)

// TestConformance checks that every system keeps the rules of SPEC §1–§2
// the same way: the decisions, the duplicates, the errors, one start among
// concurrent receives, and that an acknowledged write survives a restart.
// A peer whose server is not installed is skipped, and fails in CI.
func TestConformance(t *testing.T) {
	bin := buildLiminald(t)
	for _, sys := range []System{newLiminald(bin), newSQLite(), newRedis(), newPostgres(), newLiminaldPG(bin, 2)} {
		t.Run(sys.Name(), func(t *testing.T) {
			needServer(t, sys)
			t.Parallel()
			testConformance(t, sys)
		})
	}
}

// needServer ends the test through missing unless the server that sys
// runs is installed: redis-server on PATH, PostgreSQL where pgtest.BinDir
// looks for it.
func needServer(t *testing.T, sys System) {
	t.Helper()
	switch sys.(type) {
	case *redisSystem:
		if _, err := exec.LookPath("redis-server"); err != nil {
			missing(t, "redis-server is not installed")
		}
	case *postgresSystem, *liminaldPGSystem:
		if _, err := pgtest.BinDir(); err != nil {
			missing(t, "%v", err)
		}
	}
}

// missing ends the test because the machine lacks what the message says:
// t.Fatalf in CI (the CI environment variable set to anything but "",
// "false" or "0"), where a skipped test would be a promise nobody checked,
// and t.Skipf elsewhere. It mirrors the daemon's internal/testenv, which
// this module cannot import.
func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ci := os.Getenv("CI"); ci != "" && ci != "false" && ci != "0" {
		t.Fatalf("missing in CI (.ci/run must provide it): %s", msg)
	}
	t.Skipf("skipped: %s", msg)
}

// testConformance starts sys in a new directory and checks the rules, the
// concurrent receives, and a restart in the same directory.
func testConformance(t *testing.T, sys System) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := serverDir(t)
	stop := startSystem(ctx, t, sys, dir)
	checkDurableSettings(ctx, t, sys)
	c := dial(ctx, t, sys)
	checkRules(ctx, t, c)
	checkConcurrentReceive(ctx, t, sys)

	// A finished message stays finished across a restart, and the next seq
	// of its conversation with it.
	runCalls(ctx, t, c, []conformanceCall{
		{"receive a message to keep", opReceive("keep", "m"), wantStart(0), nil},
		{"start it", opWrite(Client.Start, "keep", "m"), Decision{}, nil},
		{"finish it", opWrite(Client.Finish, "keep", "m"), Decision{}, nil},
	})
	c.Close()
	if err := stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	startSystem(ctx, t, sys, dir)
	runCalls(ctx, t, dial(ctx, t, sys), []conformanceCall{
		{"after a restart, the finished message is skipped", opReceive("keep", "m"), wantSkip, nil},
		{"after a restart, the log goes on at seq 3", opReceive("keep", "m2"), wantStart(3), nil},
	})
}

// checkRules runs the rules of SPEC §1–§2 through one client, in one
// conversation whose seqs prove that what must append nothing appended
// nothing.
func checkRules(ctx context.Context, t *testing.T, c Client) {
	const conv = "rules"
	step := func(msg string, index uint32, output string) conformanceOp {
		return func(ctx context.Context, c Client) (Decision, error) {
			return Decision{}, c.Step(ctx, conv, msg, index, []byte(output))
		}
	}
	emptyStep := func(ctx context.Context, c Client) (Decision, error) {
		return Decision{}, c.Step(ctx, conv, "m2", 0, nil)
	}
	ok := Decision{}
	runCalls(ctx, t, c, []conformanceCall{
		{"a new message starts at seq 0", opReceive(conv, "m1"), wantStart(0), nil},
		{"a received message resumes from 0", opReceive(conv, "m1"), wantResume(0), nil},
		{"decide on a received message", opDecide(conv, "m1"), wantResume(0), nil},
		{"decide on a new message", opDecide(conv, "m2"), Decision{Action: "start"}, nil},
		{"the decides appended nothing: next at seq 1", opReceive(conv, "m2"), wantStart(1), nil},
		{"start, seq 2", opWrite(Client.Start, conv, "m1"), ok, nil},
		{"start in progress is a duplicate", opWrite(Client.Start, conv, "m1"), ok, nil},
		{"step 0, seq 3", step("m1", 0, "zero"), ok, nil},
		{"after step 0, resume from 1", opReceive(conv, "m1"), wantResume(1), nil},
		{"the same step 0 is a duplicate", step("m1", 0, "zero"), ok, nil},
		{"step 0 with other output", step("m1", 0, "other"), ok, ErrStepConflict},
		{"start of an unknown message", opWrite(Client.Start, conv, "nope"), ok, ErrUnknownMessage},
		{"step of an unknown message", step("nope", 0, "x"), ok, ErrUnknownMessage},
		{"finish of an unknown message", opWrite(Client.Finish, conv, "nope"), ok, ErrUnknownMessage},
		{"step 2, skipping 1, seq 4", step("m1", 2, "two"), ok, nil},
		{"after step 2, resume from 3", opReceive(conv, "m1"), wantResume(3), nil},
		{"step 1 after step 2, seq 5", step("m1", 1, "one"), ok, nil},
		{"the highest step decides", opReceive(conv, "m1"), wantResume(3), nil},
		{"an empty output, before start, seq 6", emptyStep, ok, nil},
		{"the same empty output is a duplicate", emptyStep, ok, nil},
		{"output instead of empty", step("m2", 0, "x"), ok, ErrStepConflict},
		{"finish, seq 7", opWrite(Client.Finish, conv, "m1"), ok, nil},
		{"finish again is a duplicate", opWrite(Client.Finish, conv, "m1"), ok, nil},
		{"start after finish", opWrite(Client.Start, conv, "m1"), ok, ErrAlreadyFinished},
		{"step after finish", step("m1", 3, "three"), ok, ErrAlreadyFinished},
		{"a recorded step after finish", step("m1", 0, "zero"), ok, ErrAlreadyFinished},
		{"receive a finished message", opReceive(conv, "m1"), wantSkip, nil},
		{"decide on a finished message", opDecide(conv, "m1"), wantSkip, nil},
		{"duplicates and rejections appended nothing", opReceive(conv, "m3"), wantStart(8), nil},
	})
}

// checkConcurrentReceive has 16 clients receive the same new message at
// once: exactly one starts it, the others resume it from 0.
func checkConcurrentReceive(ctx context.Context, t *testing.T, sys System) {
	const n = 16
	clients := make([]Client, n)
	for i := range clients {
		c, err := sys.Dial(ctx)
		if err != nil {
			t.Fatalf("dial %s: %v", sys.Name(), err)
		}
		defer c.Close()
		clients[i] = c
	}
	got := make([]Decision, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	ready := make(chan struct{})
	for i, c := range clients {
		wg.Go(func() {
			<-ready
			got[i], errs[i] = c.Receive(ctx, "race", "m", 1)
		})
	}
	close(ready)
	wg.Wait()
	starts := 0
	for i, d := range got {
		switch {
		case errs[i] != nil:
			t.Fatalf("client %d: receive: %v", i, errs[i])
		case d == wantStart(0):
			starts++
		case d != wantResume(0):
			t.Fatalf("client %d: receive = %+v, want start at 0 or resume from 0", i, d)
		}
	}
	if starts != 1 {
		t.Fatalf("%d of %d concurrent receives started the message, want 1", starts, n)
	}
}

// checkDurableSettings checks that the servers the peers run really fsync
// before they reply.
func checkDurableSettings(ctx context.Context, t *testing.T, sys System) {
	var want map[string]string
	var get func(name string) (string, error)
	switch s := sys.(type) {
	case *redisSystem:
		want = map[string]string{"appendonly": "yes", "appendfsync": "always", "save": ""}
		rdb := s.client()
		defer rdb.Close()
		get = func(name string) (string, error) {
			m, err := rdb.ConfigGet(ctx, name).Result()
			return m[name], err
		}
	case *postgresSystem:
		want = map[string]string{"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
		conn, err := pgx.Connect(ctx, s.connString())
		if err != nil {
			t.Fatalf("connect: %v", err)
		}
		defer conn.Close(ctx)
		get = func(name string) (v string, err error) {
			err = conn.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&v)
			return v, err
		}
	case *sqliteSystem:
		// What each client's connection runs with.
		want = map[string]string{"synchronous": "2", "journal_mode": "wal"} // 2: FULL
		c, err := s.Dial(ctx)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		get = func(name string) (v string, err error) {
			err = c.(*sqliteClient).db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&v)
			return v, err
		}
	case *liminaldSystem:
		// The daemon logs its settings when it starts serving.
		log, err := os.ReadFile(s.srv.log)
		if err != nil || !strings.Contains(string(log), "sync=full") {
			t.Fatalf("liminald's log does not say sync=full (%v):\n%s", err, log)
		}
		return
	case *liminaldPGSystem:
		// A reply follows COMMIT: the server's settings make it durable.
		checkDurableSettings(ctx, t, s.pg)
		return
	default:
		t.Fatalf("no durable settings to check for %s", sys.Name())
	}
	for name, w := range want {
		v, err := get(name)
		if err != nil {
			t.Fatalf("get %s: %v", name, err)
		}
		if v != w {
			t.Fatalf("%s = %q, want %q", name, v, w)
		}
	}
}

// A conformanceOp is one op of a client; the writes give a zero Decision.
type conformanceOp func(context.Context, Client) (Decision, error)

// A conformanceCall is one op of a sequence and what it must give.
type conformanceCall struct {
	name string
	op   conformanceOp
	want Decision
	err  error // nil, or the error it must wrap
}

// runCalls runs calls in order, failing at the first that does not give
// what it must.
func runCalls(ctx context.Context, t *testing.T, c Client, calls []conformanceCall) {
	t.Helper()
	for _, cl := range calls {
		d, err := cl.op(ctx, c)
		switch {
		case cl.err == nil && err != nil:
			t.Fatalf("%s: %v", cl.name, err)
		case cl.err != nil && !errors.Is(err, cl.err):
			t.Fatalf("%s: error %v, want %v", cl.name, err, cl.err)
		case d != cl.want:
			t.Fatalf("%s: %+v, want %+v", cl.name, d, cl.want)
		}
	}
}

var wantSkip = Decision{Action: "skip"}

func wantStart(seq int64) Decision    { return Decision{Action: "start", Seq: seq} }
func wantResume(from uint32) Decision { return Decision{Action: "resume", ResumeFrom: from} }

func opReceive(conv, msg string) conformanceOp {
	return func(ctx context.Context, c Client) (Decision, error) {
		return c.Receive(ctx, conv, msg, 1732672000123)
	}
}

func opDecide(conv, msg string) conformanceOp {
	return func(ctx context.Context, c Client) (Decision, error) { return c.Decide(ctx, conv, msg) }
}

// opWrite adapts a start or a finish, such as Client.Start, to an op.
func opWrite(op func(Client, context.Context, string, string) error, conv, msg string) conformanceOp {
	return func(ctx context.Context, c Client) (Decision, error) { return Decision{}, op(c, ctx, conv, msg) }
}

// serverDir is a new temporary directory that the postgres user, which the
// PostgreSQL peer runs as, can reach.
func serverDir(t *testing.T) string {
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// startSystem starts sys in dir and returns the function that stops it,
// which the test may call; it is called when the test ends in any case, and
// stops sys only once.
func startSystem(ctx context.Context, t *testing.T, sys System, dir string) (stop func() error) {
	if err := sys.Start(ctx, dir); err != nil {
		t.Fatalf("start %s: %v", sys.Name(), err)
	}
	stop = sync.OnceValue(sys.Stop)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("stop %s: %v", sys.Name(), err)
		}
	})
	return stop
}

// dial opens a client that is closed when the test ends (again, if the
// test closed it first).
func dial(ctx context.Context, t *testing.T, sys System) Client {
	c, err := sys.Dial(ctx)
	if err != nil {
		t.Fatalf("dial %s: %v", sys.Name(), err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
