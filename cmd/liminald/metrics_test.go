package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestServe_Metrics scrapes the Prometheus endpoint, on a unix socket of its
// own, after a lifecycle and a refused write.
func TestServe_Metrics(t *testing.T) {
	dir := t.TempDir()
	metricsSock := filepath.Join(dir, "metrics.sock")
	d := startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"), "--metrics", "unix:"+metricsSock)
	c := dialRaw(t, d.socket)
	for _, req := range []string{
		`{"op":"receive","conversation":"c","message_id":"m"}`,
		`{"op":"start","conversation":"c","message_id":"m"}`,
		`{"op":"step","conversation":"c","message_id":"m","step_index":0,"output":"YQ=="}`,
		`{"op":"step","conversation":"c","message_id":"m","step_index":0,"output":"Yg=="}`,
		`{"op":"finish","conversation":"c","message_id":"m"}`,
	} {
		c.do(req)
	}
	text := scrapeUnix(t, metricsSock)
	for _, tc := range []struct {
		metric string
		check  func(float64) bool
	}{
		{`liminald_requests_total{op="receive",outcome="ok"}`, func(v float64) bool { return v == 1 }},
		{`liminald_requests_total{op="step",outcome="ok"}`, func(v float64) bool { return v == 1 }},
		{`liminald_requests_total{op="step",outcome="step_conflict"}`, func(v float64) bool { return v == 1 }},
		{`liminald_request_seconds_count{op="finish"}`, func(v float64) bool { return v == 1 }},
		{`liminald_batch_requests_count`, func(v float64) bool { return v >= 1 }},
		{`liminald_batch_events_sum`, func(v float64) bool { return v == 4 }},
		{`liminald_commit_seconds_count`, func(v float64) bool { return v >= 1 }},
		{`liminald_fsync_seconds_count`, func(v float64) bool { return v >= 1 }},
		{`liminald_connections`, func(v float64) bool { return v == 1 }},
		{`liminald_subscribers`, func(v float64) bool { return v == 0 }},
		{`liminald_queue_depth`, func(v float64) bool { return v == 0 }},
		{`liminald_db_bytes`, func(v float64) bool { return v > 0 }},
		{`liminald_events`, func(v float64) bool { return v == 4 }},
		{`liminald_tombstones`, func(v float64) bool { return v == 0 }},
		{`liminald_forgotten_before_seconds`, func(v float64) bool { return v == 0 }},
		{`liminald_compacted_total`, func(v float64) bool { return v == 0 }},
		{`liminald_tombstones_dropped_total`, func(v float64) bool { return v == 0 }},
		{`liminald_compaction_passes_total`, func(v float64) bool { return v == 0 }},
		{`liminald_compaction_seconds_total`, func(v float64) bool { return v == 0 }},
	} {
		if v, ok := metricValue(t, text, tc.metric); ok && !tc.check(v) {
			t.Errorf("metric %s = %v", tc.metric, v)
		}
	}
}

// scrapeUnix gets the metrics from an endpoint on the unix socket path.
func scrapeUnix(t *testing.T, path string) string {
	t.Helper()
	client := http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}}
	resp, err := client.Get("http://liminald/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// metricValue returns the value of metric (a name, with its labels if it
// has any) in text, the body of a scrape. A metric missing from it, or
// with a value that is not a number, is an error of the test.
func metricValue(t *testing.T, text, metric string) (float64, bool) {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(metric) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Errorf("metric %s missing", metric)
		return 0, false
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Errorf("metric %s = %s, not a number", metric, m[1])
		return 0, false
	}
	return v, true
}

// TestServe_MetricsPublic: the endpoint listens on an address that is not
// a loopback one, as a Prometheus scraping a pod by its IP needs, only with
// --metrics-public. Given ":0", it listens on every address of the machine
// (the log names the unspecified address); it is scraped through the
// loopback one, as tests here send traffic to loopback addresses only.
func TestServe_MetricsPublic(t *testing.T) {
	dir := t.TempDir()
	refused := newDaemonProc(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"), "--metrics", ":0")
	refused.cmd.Stderr = nil
	if out, err := refused.cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "--metrics-public") {
		t.Errorf("serve --metrics :0: %v\n%s\nwant it refused, naming --metrics-public", err, out)
	}

	d := startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"), "--metrics", ":0", "--metrics-public")
	// The daemon logs the endpoint before READY=1, but its stderr reaches
	// d.stderr through a pipe and a goroutine: wait for the line.
	endpoint := regexp.MustCompile(`msg="metrics endpoint" addr=(\S*):(\d+)`)
	var m []string
	for deadline := time.Now().Add(10 * time.Second); m == nil && time.Now().Before(deadline); {
		if m = endpoint.FindStringSubmatch(d.stderr.String()); m == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if m == nil {
		t.Fatalf("no metrics endpoint in the log:\n%s", d.stderr.String())
	}
	if ip := net.ParseIP(strings.Trim(m[1], "[]")); ip == nil || !ip.IsUnspecified() {
		t.Errorf("metrics endpoint on %s, want the unspecified address (every interface)", m[1])
	}
	resp, err := http.Get("http://" + net.JoinHostPort("127.0.0.1", m[2]) + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "liminald_connections") {
		t.Errorf("GET /metrics: %s\n%s", resp.Status, body)
	}
}
