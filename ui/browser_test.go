package ui_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"liminald/internal/daemontest"
	"liminald/internal/testenv"
	"liminald/ipc"
)

// The browser tests run the real liminald binary, built once by TestMain:
// liminald serve with data in it, and liminald ui against its socket. A
// headless chromium loads the pages and the tests check the DOM they
// render, by the ids the templates give. They wait on the DOM, the
// page's load events and the daemon's replies, never on a sleep.

var update = flag.Bool("update", false, "write the pages' screenshots to docs/ui/")

var binary string

func TestMain(m *testing.M) { daemontest.Main(m, &binary) }

// timeout bounds every wait of these tests: one browser action, a
// daemon's start, a page's live update.
const timeout = 30 * time.Second

// The data every test starts with (see seed).
const (
	orders   = "orders"
	payments = "payments"
	shipping = "shipping"
	oddID    = "invoice 7/ü" // a space, a slash and a letter outside ASCII
	stepText = "charged"
)

var stepBinary = []byte{0x00, 0xff, 0x10, 0x80}

// fixture is a daemon with the seeded data, liminald ui against it, a
// client of the daemon to write more, and a browser tab that opened the
// printed URL (so it holds the cookie).
type fixture struct {
	t      *testing.T
	url    string // as liminald ui printed it, with the token
	base   string // http://127.0.0.1:PORT
	token  string
	client *ipc.Client
	lease  int64 // the token of the lease w-1 holds on orders/m-3
	tab    context.Context
}

// newFixture starts it all; everything stops at cleanup. The test fails
// in CI, and is skipped elsewhere, when chromium is missing.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	testenv.NeedTools(t, "chromium")
	dir := t.TempDir()
	socket := filepath.Join(dir, "s.sock")
	start(t, dir, nil, "serve", "--socket", socket, "--db", filepath.Join(dir, "db.sqlite"), "--max-attempts", "2")
	if out, err := exec.Command(binary, "ping", "--socket", socket, "--wait", "20s").CombinedOutput(); err != nil {
		t.Fatalf("liminald ping --wait: %v\n%s", err, out)
	}
	f := &fixture{t: t}
	f.client = dial(t, socket)
	f.seed()

	printed := &firstLine{line: make(chan string, 1)}
	start(t, dir, printed, "ui", "--socket", socket)
	select {
	case l := <-printed.line:
		var ok bool
		if f.url, ok = strings.CutPrefix(l, "liminald ui: "); !ok {
			t.Fatalf("liminald ui printed %q, want \"liminald ui: URL\"", l)
		}
	case <-time.After(timeout):
		t.Fatal("liminald ui printed no URL")
	}
	u, err := url.Parse(f.url)
	if err != nil {
		t.Fatal(err)
	}
	f.token = u.Query().Get("token")
	f.base = "http://" + u.Host
	if u.Hostname() != "127.0.0.1" || u.Path != "/" || f.token == "" {
		t.Fatalf("liminald ui printed %s, want http://127.0.0.1:PORT/?token=...", f.url)
	}

	f.tab = newBrowser(t)
	// The first visit trades the token for a cookie, and drops it from the
	// address bar.
	resp := run(t, f.tab, chromedp.NavigateResponse(f.url))
	if resp.Status != http.StatusOK {
		t.Fatalf("first visit of %s: status %d, want 200", f.url, resp.Status)
	}
	if loc := run(t, f.tab, chromedp.Location()); loc != f.base+"/" {
		t.Errorf("after the first visit the address is %s, want %s/ (no token)", loc, f.base)
	}
	return f
}

// start runs liminald with args in dir, its stdout written to stdout,
// and stops it with SIGTERM at cleanup, where it must exit with code 0.
// Its stderr shows in the test's log if the test failed.
func start(t *testing.T, dir string, stdout io.Writer, args ...string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(daemontest.Env(), "HOME="+dir)
	stderr := &daemontest.Buffer{}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error // cmd.Wait's, once exited is closed
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
			if waitErr != nil {
				t.Errorf("liminald %s on SIGTERM: %v, want exit code 0", args[0], waitErr)
			}
		case <-time.After(timeout):
			t.Errorf("liminald %s did not stop on SIGTERM", args[0])
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("liminald %s stderr:\n%s", args[0], stderr.String())
		}
	})
}

// firstLine is a process's stdout that sends the first line written to
// it on line, and drops the rest.
type firstLine struct {
	buf  []byte
	line chan string // buffered: one line
	sent bool
}

func (w *firstLine) Write(p []byte) (int, error) {
	if !w.sent {
		w.buf = append(w.buf, p...)
		if l, _, ok := bytes.Cut(w.buf, []byte("\n")); ok {
			w.line <- string(l)
			w.sent = true
		}
	}
	return len(p), nil
}

// call returns the context of one call to the daemon.
func call(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	t.Cleanup(cancel)
	return ctx
}

// dial connects to the daemon, until cleanup.
func dial(t *testing.T, socket string) *ipc.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := ipc.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// seed writes three conversations, with messages in every status in
// orders:
//
//	invoice 7/ü  received
//	m-1          finished, a text step and a binary one
//	m-2          received
//	m-3          in progress, leased by w-1 for ten minutes
//	m-4          errored once
//	m-5          quarantined: started and failed twice (--max-attempts 2)
//	m-6          in progress, started by w-2 without a lease
func (f *fixture) seed() {
	f.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c := f.client
	must := func(_ any, err error) {
		f.t.Helper()
		if err != nil {
			f.t.Fatal(err)
		}
	}
	for _, id := range []string{"m-1", "m-2", "m-3", "m-4", "m-5", "m-6", oddID} {
		must(c.Receive(ctx, orders, id))
	}
	must(c.Start(ctx, orders, "m-1"))
	must(c.Step(ctx, orders, "m-1", 0, []byte(stepText)))
	must(c.Step(ctx, orders, "m-1", 1, stepBinary))
	must(c.Finish(ctx, orders, "m-1"))
	ack, err := c.Start(ctx, orders, "m-3", ipc.Worker("w-1"), ipc.Lease(10*time.Minute))
	must(ack, err)
	f.lease = ack.Token
	must(c.Start(ctx, orders, "m-4"))
	must(c.Fail(ctx, orders, "m-4", "card declined"))
	for range 2 {
		must(c.Start(ctx, orders, "m-5"))
		must(c.Fail(ctx, orders, "m-5", "cannot parse the payload"))
	}
	must(c.Start(ctx, orders, "m-6", ipc.Worker("w-2")))

	must(c.Receive(ctx, payments, "p-1"))
	must(c.Start(ctx, payments, "p-1"))
	must(c.Finish(ctx, payments, "p-1"))
	must(c.Receive(ctx, payments, "p-2"))
	must(c.Receive(ctx, shipping, "s-1"))
}

// newBrowser starts a headless chromium with a fresh profile and returns
// a tab of it, with a viewport 1200 pixels wide. The browser stops at
// cleanup.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.NoSandbox, // chromium refuses to run as root with its sandbox
		chromedp.DisableGPU,
		// No connection but to the pages (the defaults already turn off
		// background networking and sync): CI's network may be closed.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1200, 600),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	tab, cancelTab := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	// The first action starts the browser, whose life is its context's: no
	// timeout there.
	if err := chromedp.Do(tab); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	do(t, tab, chromedp.EmulateViewport(1200, 600))
	return tab
}

// run runs a on tab, for timeout at most, and ends the test if it fails.
func run[T any](t *testing.T, tab context.Context, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// do runs actions on tab, for timeout at most, and ends the test if one
// fails.
func do(t *testing.T, tab context.Context, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	run(t, tab, chromedp.Steps(actions...))
}

// open loads the page at path (on the fixture's server) in tab and
// checks its status.
func (f *fixture) open(t *testing.T, tab context.Context, path string, status int64) {
	t.Helper()
	resp := run(t, tab, chromedp.NavigateResponse(f.base+path))
	if resp.Status != status {
		t.Fatalf("GET %s: status %d, want %d\n%s", path, resp.Status, status, html(t, tab))
	}
}

// click clicks the element sel selects in tab, and waits for the page it
// leads to.
func click(t *testing.T, tab context.Context, sel string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(tab, timeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("click %s: status %d, want 200\n%s", sel, resp.Status, html(t, tab))
	}
}

// html returns the document's HTML.
func html(t *testing.T, tab context.Context) string {
	t.Helper()
	return run(t, tab, chromedp.OuterHTML(chromedp.CSS("html")))
}

// state returns the message page's #state, by the names of its fields.
func state(t *testing.T, tab context.Context) map[string]string {
	t.Helper()
	do(t, tab, chromedp.WaitReady(chromedp.CSS("#state")))
	return run(t, tab, chromedp.Evaluate[map[string]string](
		`Object.fromEntries(Array.from(document.querySelectorAll("#state > dt")).map(dt => [dt.textContent, dt.nextElementSibling.textContent]))`))
}

// text returns the text of the element sel selects, its white space
// collapsed.
func text(t *testing.T, tab context.Context, sel string) string {
	t.Helper()
	return strings.Join(strings.Fields(run(t, tab, chromedp.TextContent(chromedp.CSS(sel)))), " ")
}

// rows returns the text of each cell of each row of the body of table
// sel, white space collapsed.
func rows(t *testing.T, tab context.Context, sel string) [][]string {
	t.Helper()
	do(t, tab, chromedp.WaitReady(chromedp.CSS(sel)))
	return run(t, tab, chromedp.Evaluate[[][]string](fmt.Sprintf(
		`Array.from(document.querySelectorAll(%q)).map(r => Array.from(r.cells).map(c => c.textContent.trim().replace(/\s+/g, " ")))`,
		sel+" > tbody > tr")))
}

// column returns column i of rows.
func column(rows [][]string, i int) []string {
	var col []string
	for _, r := range rows {
		col = append(col, r[i])
	}
	return col
}

// screenshot saves a full-page PNG of tab as name.png: in docs/ui/ with
// -update, else in a temporary directory.
func screenshot(t *testing.T, tab context.Context, name string) {
	t.Helper()
	png := run(t, tab, chromedp.FullScreenshot(100))
	dir := t.TempDir()
	if *update {
		dir = filepath.Join("..", "docs", "ui")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestBrowser_Pages walks the pages a user reads: the conversations, a
// conversation's messages and its filters, and a message's timeline.
func TestBrowser_Pages(t *testing.T) {
	f := newFixture(t)
	tab := f.tab

	t.Run("Conversations", func(t *testing.T) {
		want := [][]string{
			// conversation, next seq, received, in progress, errored, finished, total
			{orders, "19", "2", "2", "2", "1", "7"},
			{payments, "4", "1", "0", "0", "1", "2"},
			{shipping, "1", "1", "0", "0", "0", "1"},
		}
		if got := rows(t, tab, "#conversations"); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("#conversations rows = %q, want %q", got, want)
		}
		screenshot(t, tab, "conversations")

		// The name filter, through its form.
		do(t, tab, chromedp.SetValue(chromedp.CSS("#q"), "PAY"))
		click(t, tab, "form.filter button")
		if loc := run(t, tab, chromedp.Location()); loc != f.base+"/?q=PAY" {
			t.Errorf("the filter led to %s, want %s/?q=PAY", loc, f.base)
		}
		if got := column(rows(t, tab, "#conversations"), 0); !slices.Equal(got, []string{payments}) {
			t.Errorf("?q=PAY lists %q, want [payments]", got)
		}
		f.open(t, tab, "/?q=ship", http.StatusOK)
		if got := column(rows(t, tab, "#conversations"), 0); !slices.Equal(got, []string{shipping}) {
			t.Errorf("?q=ship lists %q, want [shipping]", got)
		}
		f.open(t, tab, "/?q=nothing", http.StatusOK)
		if got := text(t, tab, "#empty"); !strings.Contains(got, "nothing") {
			t.Errorf("?q=nothing: #empty says %q, want it to name the filter", got)
		}
	})

	t.Run("Messages", func(t *testing.T) {
		f.open(t, tab, "/", http.StatusOK)
		click(t, tab, `#conversations a[href="/c/orders"]`)
		want := [][]string{
			// message, status, attempts, last step, worker, (leased until), quarantined
			{oddID, "received", "0", "none", "-", "no"},
			{"m-1", "finished", "1", "1", "-", "no"},
			{"m-2", "received", "0", "none", "-", "no"},
			{"m-3", "in_progress", "1", "none", "w-1", "no"},
			{"m-4", "errored", "1", "none", "-", "no"},
			{"m-5", "errored", "2", "none", "-", "yes"},
			{"m-6", "in_progress", "1", "none", "w-2", "no"},
		}
		got := rows(t, tab, "#messages")
		if !slices.EqualFunc(summary(got), want, slices.Equal) {
			t.Errorf("#messages rows = %q, want %q", summary(got), want)
		}
		for _, r := range got {
			if leased := r[5] != "-"; leased != (r[0] == "m-3") {
				t.Errorf("%s is leased until %q; only m-3 holds a lease", r[0], r[5])
			}
		}
		screenshot(t, tab, "messages")

		for _, c := range []struct {
			filter, label string
			want          []string
		}{
			{"in_flight", "in flight", []string{"m-3", "m-6"}},
			{"quarantined", "quarantined", []string{"m-5"}},
			{"leased", "leased", []string{"m-3"}},
			{"errored", "errored", []string{"m-4", "m-5"}},
		} {
			click(t, tab, `#filters a[href="/c/orders?status=`+c.filter+`"]`)
			if loc := run(t, tab, chromedp.Location()); loc != f.base+"/c/orders?status="+c.filter {
				t.Errorf("the filter %q led to %s", c.label, loc)
			}
			// The filter lives in the URL: a reload shows the same rows.
			for _, reload := range []bool{false, true} {
				if reload {
					do(t, tab, chromedp.Reload())
				}
				if got := column(rows(t, tab, "#messages"), 0); !slices.Equal(got, c.want) {
					t.Errorf("filter %q (reloaded: %v) lists %q, want %q", c.label, reload, got, c.want)
				}
				if got := text(t, tab, "#filters a.current"); got != c.label {
					t.Errorf("filter %q (reloaded: %v): the current filter reads %q", c.label, reload, got)
				}
			}
		}
	})

	t.Run("Message", func(t *testing.T) {
		// Two clicks from the conversations page.
		f.open(t, tab, "/", http.StatusOK)
		click(t, tab, `#conversations a[href="/c/orders"]`)
		click(t, tab, `#messages a[href="/c/orders/m/m-1"]`)
		ex, err := f.client.Explain(call(t), orders, "m-1")
		if err != nil {
			t.Fatal(err)
		}
		if got := text(t, tab, "#decision p"); got != "skip (finished)" {
			t.Errorf("#decision reads %q, want \"skip (finished)\"", got)
		}
		if got := text(t, tab, "#reason"); got != ex.Reason || got == "" {
			t.Errorf("#reason = %q, want explain's %q", got, ex.Reason)
		}
		checkState(t, tab, "m-1", map[string]string{"status": "finished", "attempts": "1", "quarantined": "no", "last step": "1", "error": "-", "leased until": "-"})
		types := run(t, tab, chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll("#timeline > li .type")).map(e => e.textContent)`))
		wantTypes := []string{"message_received", "processing_started", "step_completed", "step_completed", "processing_finished"}
		if !slices.Equal(types, wantTypes) {
			t.Errorf("#timeline's events = %q, want %q", types, wantTypes)
		}
		outputs := run(t, tab, chromedp.Evaluate[[][]string](`Array.from(document.querySelectorAll("#timeline pre.output")).map(e => [e.className, e.textContent])`))
		wantOutputs := [][]string{{"output", stepText}, {"output hex", "hex 00ff1080"}}
		if !slices.EqualFunc(outputs, wantOutputs, slices.Equal) {
			t.Errorf("#timeline's outputs = %q, want %q (text as text, bytes as hex)", outputs, wantOutputs)
		}
		screenshot(t, tab, "message")

		// The quarantined message says why, with its last error.
		f.open(t, tab, "/c/orders/m/m-5", http.StatusOK)
		if got := text(t, tab, "#decision p"); got != "quarantined (quarantined)" {
			t.Errorf("m-5: #decision reads %q", got)
		}
		if ex, err = f.client.Explain(call(t), orders, "m-5"); err != nil {
			t.Fatal(err)
		}
		if got := text(t, tab, "#reason"); got != ex.Reason {
			t.Errorf("m-5: #reason = %q, want explain's %q", got, ex.Reason)
		}
		checkState(t, tab, "m-5", map[string]string{"status": "errored", "attempts": "2", "quarantined": "yes", "error": "cannot parse the payload"})
		if got := text(t, tab, "#timeline > li:last-child"); !strings.Contains(got, `error “cannot parse the payload”`) {
			t.Errorf("m-5: the last event reads %q, want its error", got)
		}

		// The leased one names its worker and token.
		f.open(t, tab, "/c/orders/m/m-3", http.StatusOK)
		checkState(t, tab, "m-3", map[string]string{"status": "in_progress", "worker": "w-1", "token": fmt.Sprint(f.lease), "quarantined": "no"})
		if st := state(t, tab); st["leased until"] == "-" {
			t.Errorf("m-3: leased until %q, want a time", st["leased until"])
		}
	})

	t.Run("OddID", func(t *testing.T) {
		f.open(t, tab, "/c/orders", http.StatusOK)
		click(t, tab, `#messages a[href="/c/orders/m/`+url.PathEscape(oddID)+`"]`)
		if got := text(t, tab, "h1"); got != oddID {
			t.Errorf("h1 = %q, want %q", got, oddID)
		}
		checkState(t, tab, oddID, map[string]string{"status": "received", "attempts": "0", "token": "-"})
		if got := text(t, tab, "#timeline"); !strings.Contains(got, "message_received") {
			t.Errorf("%q: #timeline = %q", oddID, got)
		}
	})
}

// checkState checks the fields of the message page's #state that want
// names.
func checkState(t *testing.T, tab context.Context, msg string, want map[string]string) {
	t.Helper()
	got := state(t, tab)
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: #state's %s = %q, want %q", msg, k, got[k], v)
		}
	}
}

// summary drops the columns of #messages that hold times: leased until
// and updated.
func summary(rows [][]string) [][]string {
	var s [][]string
	for _, r := range rows {
		s = append(s, []string{r[0], r[1], r[2], r[3], r[4], r[6]})
	}
	return s
}

// TestBrowser_Live checks the pages that update themselves: the live tail
// of everything and of one conversation, and a message's timeline.
func TestBrowser_Live(t *testing.T) {
	f := newFixture(t)
	tab := f.tab

	// live waits until the page's event stream is open: from then on, an
	// event committed reaches it.
	live := func() {
		t.Helper()
		run(t, tab, chromedp.Poll[chromedp.Void](`document.getElementById("status").textContent.startsWith("Live")`,
			chromedp.WithPollingTimeout(timeout)))
	}
	// waitRows waits for n rows in #tail.
	waitRows := func(n int) [][]string {
		t.Helper()
		run(t, tab, chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelectorAll("#tail > tbody > tr").length >= %d`, n),
			chromedp.WithPollingTimeout(timeout)))
		return rows(t, tab, "#tail")
	}

	t.Run("Tail", func(t *testing.T) {
		f.open(t, tab, "/tail", http.StatusOK)
		live()
		if _, err := f.client.Receive(call(t), orders, "live-1"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.client.Start(call(t), orders, "live-1", ipc.Worker("w-3"), ipc.Lease(time.Minute)); err != nil {
			t.Fatal(err)
		}
		if _, err := f.client.Receive(call(t), shipping, "s-2"); err != nil {
			t.Fatal(err)
		}
		got := waitRows(3)
		// pos, time, conversation, seq, type, message: the newest first.
		want := [][]string{
			{shipping, "1", "message_received", "s-2"},
			{orders, "20", "processing_started", "live-1"},
			{orders, "19", "message_received", "live-1"},
		}
		var short [][]string
		for _, r := range got {
			short = append(short, r[2:])
		}
		if !slices.EqualFunc(short, want, slices.Equal) {
			t.Errorf("#tail rows = %q, want %q", got, want)
		}
		if href := run(t, tab, chromedp.AttributeValue(chromedp.CSS("#tail > tbody > tr:last-child a"), "href")); href.Value != "/c/orders/m/live-1" {
			t.Errorf("the tail's row links to %q, want /c/orders/m/live-1", href.Value)
		}
		screenshot(t, tab, "tail")
	})

	t.Run("TailOfConversation", func(t *testing.T) {
		f.open(t, tab, "/tail?conv="+payments, http.StatusOK)
		if got := text(t, tab, "h1"); got != "Live tail: payments" {
			t.Errorf("h1 = %q", got)
		}
		live()
		// An event of another conversation first: it must not show.
		if _, err := f.client.Receive(call(t), shipping, "s-3"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.client.Receive(call(t), payments, "p-3"); err != nil {
			t.Fatal(err)
		}
		got := waitRows(1)
		if len(got) != 1 || !slices.Equal(got[0][2:], []string{payments, "4", "message_received", "p-3"}) {
			t.Errorf("#tail rows = %q, want only payments' p-3 at seq 4", got)
		}
	})

	t.Run("Timeline", func(t *testing.T) {
		f.open(t, tab, "/c/orders/m/m-3", http.StatusOK)
		do(t, tab, chromedp.WaitVisible(chromedp.CSS("#live")))
		before := len(run(t, tab, chromedp.Nodes(chromedp.CSSAll("#timeline > li"))))
		// The page reloads itself on an event of its message.
		step := chromedp.Func(func(context.Context, *chromedp.Target) error {
			_, err := f.client.Step(call(t), orders, "m-3", 0, []byte("packed"), ipc.Token(f.lease))
			return err
		})
		run(t, tab, chromedp.WaitEvent(page.LoadEventFired, nil, step))
		items := run(t, tab, chromedp.Nodes(chromedp.CSSAll("#timeline > li")))
		if len(items) != before+1 {
			t.Errorf("after a step the timeline has %d events, want %d", len(items), before+1)
		}
		if got := text(t, tab, "#timeline > li:last-child"); !strings.Contains(got, "step_completed") || !strings.Contains(got, "packed") {
			t.Errorf("the timeline's last event reads %q, want the step and its output", got)
		}
		checkState(t, tab, "m-3", map[string]string{"status": "in_progress", "last step": "0"})
	})
}

// TestBrowser_Access checks that nobody reads a page without the token or
// its cookie, and that no page answers to a name that is not loopback.
func TestBrowser_Access(t *testing.T) {
	f := newFixture(t)

	t.Run("FreshBrowserContext", func(t *testing.T) {
		// A browser context of its own has no cookie.
		other, cancel := chromedp.NewContext(f.tab, chromedp.WithNewBrowserContext())
		defer cancel()
		// Its first action opens its tab: no timeout there.
		if err := chromedp.Do(other); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{"/", "/c/orders", "/c/orders/m/m-1", "/tail", "/events", "/?token=" + strings.Repeat("0", len(f.token))} {
			f.open(t, other, path, http.StatusForbidden)
			if got := text(t, other, "body"); !strings.HasPrefix(got, "forbidden") {
				t.Errorf("GET %s without the cookie says %q, want forbidden", path, got)
			}
		}
		// With the token, it gets in.
		f.open(t, other, "/c/orders?token="+f.token, http.StatusOK)
		do(t, other, chromedp.WaitReady(chromedp.CSS("#messages")))
	})

	get := func(t *testing.T, path, host string, cookie *http.Cookie) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, f.base+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		client := &http.Client{Timeout: timeout, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	port := strings.TrimPrefix(f.base, "http://127.0.0.1")
	good := &http.Cookie{Name: "liminald_ui", Value: f.token}

	// What the refusals are measured against: the token, then its cookie,
	// get in.
	resp := get(t, "/?token="+f.token, "", nil)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 || resp.Cookies()[0].Value != f.token {
		t.Fatalf("GET /?token=TOKEN: %s with cookies %v, want 303 with the token's cookie", resp.Status, resp.Cookies())
	}
	if resp := get(t, "/c/orders", "", good); resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /c/orders with the cookie: %s, want 200", resp.Status)
	}

	for _, c := range []struct {
		name, path, host string
		cookie           *http.Cookie
	}{
		{"NoToken", "/", "", nil},
		{"NoTokenEvents", "/events", "", nil},
		{"NoTokenStatic", "/static/live.js", "", nil},
		{"WrongToken", "/?token=" + strings.Repeat("f", len(f.token)), "", nil},
		{"WrongCookie", "/c/orders", "", &http.Cookie{Name: "liminald_ui", Value: "x" + f.token[1:]}},
		{"HostNotLoopback", "/?token=" + f.token, "liminald.example.com" + port, nil},
		{"HostNotLoopbackWithCookie", "/c/orders", "liminald.example.com" + port, good},
		{"HostRebound", "/c/orders", "127.0.0.1.nip.io" + port, good},
	} {
		t.Run(c.name, func(t *testing.T) {
			if resp := get(t, c.path, c.host, c.cookie); resp.StatusCode != http.StatusForbidden {
				t.Errorf("GET %s (Host %q): %s, want 403", c.path, c.host, resp.Status)
			}
		})
	}
}

// TestBrowser_BadURLs checks that a URL naming nothing gets a page that
// says so: never an empty one, nor a Go trace.
func TestBrowser_BadURLs(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name, path string
		status     int64
		id, want   string // the element that explains, and words it says
	}{
		{"UnknownPage", "/nope", http.StatusNotFound, "#problem", "no page"},
		{"UnknownConversation", "/c/nope", http.StatusNotFound, "#problem", "nope"},
		{"UnknownFilter", "/c/orders?status=bogus", http.StatusBadRequest, "#problem", "bogus"},
		{"ConversationsPastTheEnd", "/?after=zzz", http.StatusOK, "#empty", "no conversation"},
		{"MessagesPastTheEnd", "/c/orders?after=zzz", http.StatusOK, "#empty", "zzz"},
		{"FilterPastTheEnd", "/c/orders?status=quarantined&after=m-5", http.StatusOK, "#empty", "m-5"},
		{"MessageNeverReceived", "/c/orders/m/never", http.StatusNotFound, "#empty", "never received"},
		{"MessageIDTooLong", "/c/orders/m/" + strings.Repeat("x", 300), http.StatusBadRequest, "#problem", "message_id"},
		{"TailOfNameTooLong", "/tail?conv=" + strings.Repeat("y", 300), http.StatusBadRequest, "#problem", "conversation"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.open(t, f.tab, c.path, c.status)
			page := html(t, f.tab)
			for _, trace := range []string{"goroutine ", "panic", ".go:"} {
				if strings.Contains(page, trace) {
					t.Errorf("GET %s shows %q:\n%s", c.path, trace, page)
				}
			}
			got := text(t, f.tab, c.id)
			if !strings.Contains(strings.ToLower(got), c.want) {
				t.Errorf("GET %s: %s says %q, want it to mention %q", c.path, c.id, got, c.want)
			}
		})
	}
	// A message never received still gets its decision.
	f.open(t, f.tab, "/c/orders/m/never", http.StatusNotFound)
	if got := text(t, f.tab, "#decision p"); got != "start (never_seen)" {
		t.Errorf("/c/orders/m/never: #decision reads %q, want \"start (never_seen)\"", got)
	}
}
