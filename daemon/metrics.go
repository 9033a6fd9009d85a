package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"liminald/ipc"
	"liminald/sqlitestore"
)

// metricsAddress reads the metrics setting: "" (off), a host:port whose
// host is a loopback address or "localhost" (any host:port when public,
// the metrics_public setting), or "unix:" and a socket path. It returns the
// network and address to listen on.
func metricsAddress(s string, public bool) (network, addr string, err error) {
	switch {
	case s == "":
		return "", "", nil
	case strings.HasPrefix(s, "unix:"):
		path := strings.TrimPrefix(s, "unix:")
		if path == "" {
			return "", "", errors.New(`"unix:" names no socket path`)
		}
		return "unix", path, CheckSocketPath(path)
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return "", "", fmt.Errorf("%q is neither host:port nor unix:PATH: %w", s, err)
	}
	if ip := net.ParseIP(host); !public && host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return "", "", fmt.Errorf("%q is not a loopback address: the endpoint serves local scrapers only, unless metrics_public is set (--metrics-public)", host)
	}
	return "tcp", s, nil
}

// metrics is the Prometheus endpoint: the daemon's figures, scraped over
// HTTP on a loopback address (another one with metrics_public) or a unix
// socket of its own.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	batch    prometheus.Histogram
	events   prometheus.Histogram
	commit   prometheus.Histogram
	sync     prometheus.Histogram
	srv      *http.Server
	done     chan struct{}
}

// newMetrics registers the collectors. The gauges read the store and the
// server when scraped; the counters and histograms are fed by the hooks
// (observe, batch) that Run gives the server and the store.
func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "liminald_requests_total", Help: "Requests answered, by op and outcome (ok or the error code).",
	}, []string{"op", "outcome"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "liminald_request_seconds", Help: "Time from a request's start to its reply, by op.",
		Buckets: prometheus.ExponentialBuckets(25e-6, 2, 14),
	}, []string{"op"})
	m.batch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "liminald_batch_requests", Help: "Write requests per group-committed batch.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11),
	})
	m.events = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "liminald_batch_events", Help: "Events appended per batch.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 11),
	})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "liminald_commit_seconds", Help: "Time from a batch's first request taken to its COMMIT.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
	})
	m.sync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "liminald_fsync_seconds", Help: "Time of the fdatasync of the WAL that made a batch durable.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
	})
	m.reg.MustRegister(m.requests, m.latency, m.batch, m.events, m.commit, m.sync,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observe is the server's hook.
func (m *metrics) observe(op, outcome string, took time.Duration) {
	m.requests.WithLabelValues(op, outcome).Inc()
	m.latency.WithLabelValues(op).Observe(took.Seconds())
}

// observeBatch is the store's hook.
func (m *metrics) observeBatch(b sqlitestore.Batch) {
	m.batch.Observe(float64(b.Requests))
	m.events.Observe(float64(b.Events))
	m.commit.Observe(b.Commit.Seconds())
	if b.Sync > 0 {
		m.sync.Observe(b.Sync.Seconds())
	}
}

// watch registers the gauges read from the running store and server.
func (m *metrics) watch(store runningStore, srv *ipc.Server) {
	gauge := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	gauge("liminald_connections", "Connections being served.", func() float64 { return float64(srv.Connections()) })
	gauge("liminald_subscribers", "Live subscriptions.", func() float64 { return float64(srv.Subscribers()) })
	gauge("liminald_queue_depth", "Write requests waiting for the writer.", func() float64 { return float64(store.QueueDepth()) })
	stat := func(f func(*ipc.StoreStats) float64) func() float64 {
		return func() float64 {
			st, err := store.Stats(context.Background())
			if err != nil {
				return 0
			}
			return f(&st)
		}
	}
	counter := func(name, help string, f func() float64) {
		m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("liminald_db_bytes", "Size of the database: the SQLite file and its WAL, or the PostgreSQL database.",
		stat(func(st *ipc.StoreStats) float64 { return float64(st.DBBytes) }))
	gauge("liminald_events", "Events in the database.", stat(func(st *ipc.StoreStats) float64 { return float64(st.Events) }))
	gauge("liminald_tombstones", "Tombstones of compacted messages kept.", stat(func(st *ipc.StoreStats) float64 { return float64(st.Tombstones) }))
	gauge("liminald_forgotten_before_seconds", "The newest forgotten_before of any conversation, in epoch seconds; 0 when none.",
		stat(func(st *ipc.StoreStats) float64 { return float64(st.Horizon.Before) / 1000 }))
	counter("liminald_compacted_total", "Messages compacted into tombstones, in the database's life.",
		stat(func(st *ipc.StoreStats) float64 { return float64(st.Compacted) }))
	counter("liminald_tombstones_dropped_total", "Tombstones dropped, in the database's life.",
		stat(func(st *ipc.StoreStats) float64 { return float64(st.Dropped) }))
	counter("liminald_compaction_passes_total", "Compaction passes since the daemon started.",
		stat(func(st *ipc.StoreStats) float64 { return float64(st.CompactionPasses) }))
	counter("liminald_compaction_seconds_total", "Time compaction passes took since the daemon started.",
		stat(func(st *ipc.StoreStats) float64 { return st.CompactionTotal.Seconds() }))
}

// serve listens on the address of the metrics and metrics_public settings
// and serves the endpoint until close. A unix socket is made with mode 0600
// (after a stale one is removed, as Listen does for the main socket).
func (m *metrics) serve(setting string, public bool) (net.Addr, error) {
	network, addr, err := metricsAddress(setting, public)
	if err != nil {
		return nil, err
	}
	var l net.Listener
	if network == "unix" {
		l, err = Listen(addr, 0o600, "")
	} else {
		l, err = net.Listen(network, addr)
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	m.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	m.done = make(chan struct{})
	go func() {
		defer close(m.done)
		m.srv.Serve(l)
	}()
	return l.Addr(), nil
}

// close stops the endpoint and waits for its goroutine.
func (m *metrics) close() {
	if m.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	m.srv.Shutdown(ctx)
	<-m.done
}
