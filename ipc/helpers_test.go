package ipc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"liminald/sqlitestore"
)

// testStore adapts *sqlitestore.Store to Store, as the daemon does.
type testStore struct{ *sqlitestore.Store }

var _ Store = testStore{}

func (s testStore) Subscribe(capacity int) Subscription { return s.Store.Subscribe(capacity) }

func (s testStore) Stats(ctx context.Context) (StoreStats, error) {
	st, err := s.Store.Stats(ctx)
	return StoreStats{
		Conversations: st.Conversations, Messages: st.Messages, Events: st.Events, DBBytes: st.DBBytes,
		Commits: st.Commits, FailedBatches: st.FailedBatches, Requests: st.Requests, Appended: st.Appended,
		MaxBatch: st.MaxBatch, CommitTotal: st.CommitTotal, CommitMax: st.CommitMax,
		Compacted: st.Compacted, Tombstones: st.Tombstones, Dropped: st.Dropped, Horizon: st.Horizon,
		CompactionPasses: st.CompactionPasses, CompactionFailures: st.CompactionFailures,
		CompactionTotal: st.CompactionTotal, CompactionMax: st.CompactionMax,
	}, err
}

// mustOpenStore opens a store on a new database in tb's temporary
// directory. At cleanup it closes the store and checks the database: state
// == replay of the log, seqs contiguous, integrity ok.
func mustOpenStore(tb testing.TB, opts sqlitestore.Options) testStore {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "db")
	s, err := sqlitestore.Open(path, opts)
	if err != nil {
		tb.Fatalf("Open(%s): %v", path, err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
		r, err := sqlitestore.Check(context.Background(), path, nil)
		if err != nil {
			tb.Fatalf("Check(%s): %v", path, err)
		}
		if len(r.Problems) > 0 {
			tb.Errorf("Check(%s) found problems:\n%s", path, strings.Join(r.Problems, "\n"))
		}
	})
	return testStore{s}
}

// socketPath returns a socket path in tb's temporary directory, or in a
// shorter one when that would pass the platform's limit on socket paths.
func socketPath(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "s.sock")
	if len(p) < 100 {
		return p
	}
	dir, err := os.MkdirTemp("", "ipc")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "s.sock")
}

// testServer is a server on a real socket over a real store.
type testServer struct {
	*Server
	store  testStore
	path   string
	served chan error
}

// startServer starts a server for cfg on a socket in tb's temporary
// directory, with a new store unless cfg has one. At cleanup it shuts the
// server down and checks that Serve returned ErrServerClosed.
func startServer(tb testing.TB, cfg Config) *testServer {
	tb.Helper()
	ts := &testServer{path: socketPath(tb), served: make(chan error, 1)}
	if cfg.Store == nil {
		ts.store = mustOpenStore(tb, sqlitestore.Options{})
		cfg.Store = ts.store
	} else {
		ts.store, _ = cfg.Store.(testStore)
	}
	if cfg.Version == "" {
		cfg.Version = "test"
	}
	ts.Server = NewServer(cfg)
	l, err := net.Listen("unix", ts.path)
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	go func() { ts.served <- ts.Serve(l) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := ts.Shutdown(ctx); err != nil {
			tb.Errorf("Shutdown: %v", err)
		}
		if err := <-ts.served; !errors.Is(err, ErrServerClosed) {
			tb.Errorf("Serve = %v, want ErrServerClosed", err)
		}
	})
	return ts
}

// rawConn is a client connection that speaks bytes.
type rawConn struct {
	tb testing.TB
	nc *net.UnixConn
	br *bufio.Reader
}

// dialRaw connects to the server at path. Every read and write has a
// generous deadline so that a broken test fails instead of hanging.
func dialRaw(tb testing.TB, path string) *rawConn {
	tb.Helper()
	nc, err := net.Dial("unix", path)
	if err != nil {
		tb.Fatalf("dial: %v", err)
	}
	tb.Cleanup(func() { nc.Close() })
	return &rawConn{tb: tb, nc: nc.(*net.UnixConn), br: bufio.NewReaderSize(nc, 1<<20)}
}

func (c *rawConn) send(s string) {
	c.tb.Helper()
	c.nc.SetWriteDeadline(time.Now().Add(time.Minute))
	if _, err := c.nc.Write([]byte(s)); err != nil {
		c.tb.Fatalf("write: %v", err)
	}
}

// line reads the next line, without its "\n".
func (c *rawConn) line() string {
	c.tb.Helper()
	c.nc.SetReadDeadline(time.Now().Add(time.Minute))
	s, err := c.br.ReadString('\n')
	if err != nil {
		c.tb.Fatalf("read line: %v (read %q)", err, s)
	}
	return strings.TrimSuffix(s, "\n")
}

// eof checks that the server closed the connection.
func (c *rawConn) eof() {
	c.tb.Helper()
	c.nc.SetReadDeadline(time.Now().Add(time.Minute))
	if s, err := c.br.ReadString('\n'); err == nil || s != "" {
		c.tb.Errorf("read %q, %v; want EOF", s, err)
	}
}

// reply reads the next line as a JSON object.
func (c *rawConn) reply() map[string]any {
	c.tb.Helper()
	return mustObject(c.tb, c.line())
}

// roundTrip sends one request line and returns its reply.
func (c *rawConn) roundTrip(req string) map[string]any {
	c.tb.Helper()
	c.send(req + "\n")
	return c.reply()
}

// mustObject decodes line as a JSON object, numbers as json.Number.
func mustObject(tb testing.TB, line string) map[string]any {
	tb.Helper()
	var v map[string]any
	d := json.NewDecoder(strings.NewReader(line))
	d.UseNumber()
	if err := d.Decode(&v); err != nil || v == nil || d.More() {
		tb.Fatalf("line %q is not one JSON object: %v", line, err)
	}
	return v
}

// normalize replaces what a reply may vary in with "*": the message of an
// error object (when it is a non-empty string) and the ts of an event.
func normalize(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = normalize(x)
		}
		if _, ok := v["code"]; ok {
			if m, ok := v["message"].(string); ok && m != "" {
				out["message"] = "*"
			}
		}
		if _, ok := v["type"]; ok {
			if _, ok := v["ts"].(json.Number); ok {
				out["ts"] = "*"
			}
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = normalize(x)
		}
		return out
	}
	return v
}

// sameJSON reports whether the JSON object line got has the fields of want
// exactly, up to normalize.
func sameJSON(tb testing.TB, got, want string) bool {
	tb.Helper()
	return reflect.DeepEqual(normalize(mustObject(tb, got)), normalize(mustObject(tb, want)))
}

// errorField returns the code and field of a failure reply.
func errorField(reply map[string]any) (code, field string) {
	e, _ := reply["error"].(map[string]any)
	code, _ = e["code"].(string)
	field, _ = e["field"].(string)
	return code, field
}

// compact returns s as compact JSON.
func compact(tb testing.TB, s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		tb.Fatalf("compact %q: %v", s, err)
	}
	return b.String()
}

// sqlitestoreOptions are the store options of the tests.
func sqlitestoreOptions() sqlitestore.Options { return sqlitestore.Options{} }

// step is a request line and the reply line it must get (see sameJSON).
type step struct{ name, req, want string }

// run sends each step's request on c and checks its reply.
func (c *rawConn) run(tb testing.TB, steps []step) {
	tb.Helper()
	for _, s := range steps {
		c.send(s.req + "\n")
		if got := c.line(); !sameJSON(tb, got, s.want) {
			tb.Errorf("%s: %s\n got %s\nwant %s", s.name, s.req, got, compact(tb, s.want))
		}
	}
}
