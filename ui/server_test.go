package ui

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"liminald/daemon"
	"liminald/ipc"
	"liminald/sqlitestore"
)

// testDaemon serves a store over a real socket, as the daemon does.
type testDaemon struct {
	socket string
	srv    *ipc.Server
	store  *sqlitestore.Store
}

// startTestDaemon serves a new store, with max_attempts 2, on a socket in
// tb's temporary directory until the test ends.
func startTestDaemon(tb testing.TB) *testDaemon {
	tb.Helper()
	dir, err := os.MkdirTemp("", "ui") // short: socket paths are limited
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	d := &testDaemon{socket: filepath.Join(dir, "s.sock")}
	d.serve(tb, filepath.Join(dir, "db"))
	return d
}

func (d *testDaemon) serve(tb testing.TB, db string) {
	tb.Helper()
	store, err := sqlitestore.Open(db, sqlitestore.Options{MaxAttempts: 2})
	if err != nil {
		tb.Fatal(err)
	}
	l, err := net.Listen("unix", d.socket)
	if err != nil {
		tb.Fatal(err)
	}
	d.store, d.srv = store, ipc.NewServer(ipc.Config{Store: daemon.Served(store)})
	go d.srv.Serve(l)
	tb.Cleanup(d.stop)
}

// stop shuts the server and the store down; it may be called twice.
func (d *testDaemon) stop() {
	if d.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d.srv.Shutdown(ctx)
	d.store.Close()
	d.srv = nil
}

// do sends request lines to the daemon and fails tb on a failure reply.
func (d *testDaemon) do(tb testing.TB, requests ...string) {
	tb.Helper()
	c, err := ipc.Dial(context.Background(), d.socket)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close()
	for _, r := range requests {
		reply, err := c.Do(context.Background(), []byte(r))
		if err != nil || !strings.Contains(string(reply), `"ok":true`) {
			tb.Fatalf("%s: %s, %v", r, reply, err)
		}
	}
}

func (d *testDaemon) dial(ctx context.Context) (*ipc.Client, error) {
	return ipc.Dial(ctx, d.socket, DialOptions...)
}

// newTestServer returns a web view of d, closed when the test ends.
func newTestServer(tb testing.TB, d *testDaemon) *Server {
	tb.Helper()
	s, err := New(d.dial, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { s.Close() })
	return s
}

// get serves a GET of target by s, from a browser that holds the cookie
// when cookie is set, and returns the response and its body.
func get(s *Server, target string, cookie bool) (*http.Response, string) {
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.Host = "127.0.0.1:4000"
	if cookie {
		r.AddCookie(&http.Cookie{Name: cookieName, Value: s.Token()})
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w.Result(), w.Body.String()
}

func TestServer_Access(t *testing.T) {
	d := startTestDaemon(t)
	s := newTestServer(t, d)
	if resp, _ := get(s, "/", false); resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET / without the token: %d, want 403", resp.StatusCode)
	}
	if resp, _ := get(s, "/?token=nope", false); resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET / with a wrong token: %d, want 403", resp.StatusCode)
	}
	resp, _ := get(s, "/c/orders?status=errored&token="+s.Token(), false)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/c/orders?status=errored" {
		t.Errorf("first visit: %d to %q, want 303 to the same page without the token", resp.StatusCode, resp.Header.Get("Location"))
	}
	var set *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == cookieName {
			set = c
		}
	}
	if set == nil || set.Value != s.Token() || !set.HttpOnly || set.SameSite != http.SameSiteStrictMode {
		t.Errorf("first visit set cookie %+v, want an HttpOnly, SameSite=Strict cookie with the token", set)
	}
	if resp, _ := get(s, "/", true); resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Security-Policy") == "" {
		t.Errorf("GET / with the cookie: %d, CSP %q; want 200 with a CSP", resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
	}
	for _, host := range []string{"evil.example", "evil.example:4000", "10.0.0.1:4000", "127.0.0.1.nip.io:4000"} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = host
		r.AddCookie(&http.Cookie{Name: cookieName, Value: s.Token()})
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		if w.Code != http.StatusForbidden {
			t.Errorf("Host %q: %d, want 403", host, w.Code)
		}
	}
	r := httptest.NewRequest(http.MethodPost, "/", nil)
	r.Host = "localhost:4000"
	r.AddCookie(&http.Cookie{Name: cookieName, Value: s.Token()})
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405 (read-only)", w.Code)
	}
	for addr, want := range map[string]bool{"127.0.0.1:0": true, "[::1]:8080": true, "localhost:1": true,
		"0.0.0.0:80": false, ":8080": false, "192.168.1.2:80": false, "127.0.0.1": false} {
		if got := Loopback(addr); got != want {
			t.Errorf("Loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

// TestServer_Pages renders every page against a daemon with data, and the
// pages a bad URL leads to.
func TestServer_Pages(t *testing.T) {
	d := startTestDaemon(t)
	d.do(t,
		`{"op":"receive","conversation":"orders","message_id":"m-1"}`,
		`{"op":"start","conversation":"orders","message_id":"m-1","worker":"w1","lease_ms":60000}`,
		`{"op":"step","conversation":"orders","message_id":"m-1","step_index":0,"output":"Y2hhcmdlZA=="}`,
		`{"op":"step","conversation":"orders","message_id":"m-1","step_index":1,"output":"AAH/"}`,
		`{"op":"receive","conversation":"orders","message_id":"m-2"}`,
		`{"op":"start","conversation":"orders","message_id":"m-2"}`,
		`{"op":"fail","conversation":"orders","message_id":"m-2","error":"boom"}`,
		`{"op":"start","conversation":"orders","message_id":"m-2"}`,
		`{"op":"fail","conversation":"orders","message_id":"m-2","error":"boom again"}`,
		`{"op":"receive","conversation":"emails/eu","message_id":"a b/ü"}`,
	)
	s := newTestServer(t, d)
	for _, tt := range []struct {
		target string
		code   int
		has    []string
		hasNot []string
	}{
		{"/", 200, []string{`href="/c/orders"`, `href="/c/emails%2Feu"`, `id="conversations"`}, nil},
		{"/?q=MAIL", 200, []string{`href="/c/emails%2Feu"`}, []string{`href="/c/orders"`}},
		{"/?q=nothing", 200, []string{`id="empty"`}, []string{`id="conversations"`}},
		{"/c/orders", 200, []string{`href="/c/orders/m/m-1"`, `href="/c/orders/m/m-2"`, `id="filters"`, `href="/tail?conv=orders"`}, nil},
		{"/c/emails%2Feu", 200, []string{`href="/tail?conv=emails%2feu"`}, nil},
		{"/c/orders?status=in_flight", 200, []string{`/c/orders/m/m-1"`, `aria-current="page">in flight`}, []string{`/m/m-2"`}},
		{"/c/orders?status=quarantined", 200, []string{`/c/orders/m/m-2"`}, []string{`/m/m-1"`}},
		{"/c/orders?status=leased", 200, []string{`/c/orders/m/m-1"`, `<td>w1</td>`}, []string{`/m/m-2"`}},
		{"/c/orders?status=finished", 200, []string{`id="empty"`}, nil},
		{"/c/orders?after=m-2", 200, []string{`id="empty"`, "after “m-2”"}, nil},
		{"/c/orders/m/m-1", 200, []string{`id="timeline"`, "busy", "(leased)", "processing_started", "w1",
			`<pre class="output" title="7 bytes">charged</pre>`, `hex 0001ff`}, nil},
		{"/c/orders/m/m-2", 200, []string{"quarantined", "max_attempts is 2", "boom again"}, nil},
		{"/c/emails%2Feu/m/a%20b%2F%C3%BC", 200, []string{"a b/ü", "message_received", "resume"}, nil},
		{"/c/nowhere", 404, []string{`id="problem"`, "no events"}, nil},
		{"/c/orders?status=stuck", 400, []string{`id="problem"`, "not a status filter"}, nil},
		{"/c/orders/m/never", 404, []string{`id="empty"`, "never received", "never_seen"}, nil},
		{"/c/%01bad", 400, []string{`id="problem"`, "control characters"}, nil},
		{"/nope/nope", 404, []string{`id="problem"`}, nil},
		{"/tail?conv=orders", 200, []string{`id="tail" data-conv="orders"`, `src="/static/live.js"`}, nil},
		{"/static/style.css", 200, []string{"table"}, nil},
	} {
		resp, body := get(s, tt.target, true)
		if resp.StatusCode != tt.code {
			t.Errorf("GET %s: %d, want %d\n%s", tt.target, resp.StatusCode, tt.code, body)
			continue
		}
		for _, want := range tt.has {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: the page lacks %q\n%s", tt.target, want, body)
			}
		}
		for _, unwanted := range tt.hasNot {
			if strings.Contains(body, unwanted) {
				t.Errorf("GET %s: the page has %q", tt.target, unwanted)
			}
		}
		if strings.Contains(body, "goroutine ") || strings.Contains(body, "panic") {
			t.Errorf("GET %s: the page shows a trace:\n%s", tt.target, body)
		}
	}
}

// TestServer_ConversationsPaging: the conversations page holds 100 rows and
// its "more" link leads to the next ones.
func TestServer_ConversationsPaging(t *testing.T) {
	d := startTestDaemon(t)
	var reqs []string
	for i := range 105 {
		reqs = append(reqs, fmt.Sprintf(`{"op":"receive","conversation":"c%03d","message_id":"m"}`, i))
	}
	d.do(t, reqs...)
	s := newTestServer(t, d)
	_, body := get(s, "/", true)
	if n := strings.Count(body, `<td><a href="/c/c`); n != 100 || !strings.Contains(body, `id="more" href="/?after=c099"`) {
		t.Fatalf("first page: %d rows, want 100 and a link to those after c099:\n%s", n, body)
	}
	_, body = get(s, "/?after=c099", true)
	if n := strings.Count(body, `<td><a href="/c/c`); n != 5 || !strings.Contains(body, `href="/c/c104"`) || strings.Contains(body, `id="more"`) {
		t.Errorf("second page: %d rows, want c100 to c104 and no more:\n%s", n, body)
	}
}

// TestServer_Events: the event stream delivers an event committed after
// it opened, as a server-sent event with the event object.
func TestServer_Events(t *testing.T) {
	d := startTestDaemon(t)
	s := newTestServer(t, d)
	hs := httptest.NewServer(s)
	defer hs.Close()
	req, _ := http.NewRequest(http.MethodGet, hs.URL+"/events?conv=orders", nil)
	req.AddCookie(&http.Cookie{Name: cookieName, Value: s.Token()})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := http.DefaultClient.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /events: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	br := bufio.NewReader(resp.Body)
	if line, err := br.ReadString('\n'); err != nil || line != ": subscribed\n" {
		t.Fatalf("first line %q, %v; want the subscribed comment", line, err)
	}
	d.do(t, `{"op":"receive","conversation":"other","message_id":"x"}`, `{"op":"receive","conversation":"orders","message_id":"m-9"}`)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("read the stream: %v", err)
		}
		if strings.HasPrefix(line, "data: ") {
			if !strings.Contains(line, `"conversation":"orders"`) || !strings.Contains(line, `"message_id":"m-9"`) {
				t.Errorf("event %s, want m-9 of orders only", line)
			}
			return
		}
	}
}

// TestServer_DaemonRestarts: while the daemon is down a page says so, and
// once it is back the web view reaches it again by itself.
func TestServer_DaemonRestarts(t *testing.T) {
	d := startTestDaemon(t)
	d.do(t, `{"op":"receive","conversation":"orders","message_id":"m-1"}`)
	s := newTestServer(t, d)
	if resp, _ := get(s, "/", true); resp.StatusCode != 200 {
		t.Fatalf("GET /: %d", resp.StatusCode)
	}
	db := d.store.Path()
	d.stop()
	os.Remove(d.socket)
	resp, body := get(s, "/", true)
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(body, `id="problem"`) {
		t.Errorf("GET / with the daemon down: %d\n%s", resp.StatusCode, body)
	}
	d.serve(t, db)
	if resp, body := get(s, "/", true); resp.StatusCode != 200 || !strings.Contains(body, `href="/c/orders"`) {
		t.Errorf("GET / once the daemon is back: %d\n%s", resp.StatusCode, body)
	}
}

// TestServer_Compacted: a compacted message's page says its events were
// compacted and shows no received time; the conversation's page counts it
// and marks its row; after its tombstone is dropped, a message page names
// the conversation's horizon.
func TestServer_Compacted(t *testing.T) {
	d := startTestDaemon(t)
	d.do(t,
		`{"op":"receive","conversation":"orders","message_id":"m-1"}`,
		`{"op":"start","conversation":"orders","message_id":"m-1"}`,
		`{"op":"finish","conversation":"orders","message_id":"m-1"}`,
	)
	ctx := context.Background()
	// Compaction takes what finished more than retain_finished ago: the
	// passes go on until the clock passed that millisecond.
	compactUntil := func(done func(sqlitestore.Stats) bool) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; {
			if _, err := d.store.Compact(ctx); err != nil {
				t.Fatal(err)
			}
			st, err := d.store.Stats(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if done(st) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("compaction did not get there: %+v", st)
			}
		}
	}
	d.store.SetRetention(sqlitestore.Retention{Finished: time.Millisecond})
	compactUntil(func(st sqlitestore.Stats) bool { return st.Tombstones == 1 })
	s := newTestServer(t, d)
	check := func(target string, has ...string) {
		t.Helper()
		resp, body := get(s, target, true)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d\n%s", target, resp.StatusCode, body)
		}
		for _, want := range has {
			if !strings.Contains(body, want) {
				t.Errorf("GET %s: the page lacks %q\n%s", target, want, body)
			}
		}
	}
	check("/c/orders/m/m-1", "(compacted)", "tombstone", `id="empty"`, "were compacted")
	check("/c/orders", "1 compacted", `class="compacted"`)

	d.store.SetRetention(sqlitestore.Retention{Finished: time.Millisecond, Tombstones: time.Millisecond})
	compactUntil(func(st sqlitestore.Stats) bool { return st.Dropped == 1 })
	resp, body := get(s, "/c/orders/m/m-1", true)
	if resp.StatusCode != 404 || !strings.Contains(body, "was forgotten") || !strings.Contains(body, "forgot the messages that finished up to") {
		t.Errorf("GET of a forgotten message: %d\n%s", resp.StatusCode, body)
	}
	check("/c/orders", "forgotten before")
}
