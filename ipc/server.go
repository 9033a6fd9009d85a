package ipc

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of Config.
const (
	DefaultMaxConns           = 1024
	DefaultSubscriptionBuffer = 256
	DefaultWriteTimeout       = 30 * time.Second
	DefaultShutdownGrace      = time.Second
)

// Config configures a Server. The zero value of each field but Store picks
// its default.
type Config struct {
	// Store is the event log served. Required.
	Store Store
	// Logger receives the server's logs; connections are logged at debug.
	// Payloads are never logged.
	Logger *slog.Logger
	// Version is the daemon's version, reported by hello.
	Version string
	// MaxLineBytes is the longest request line (DefaultMaxLineBytes).
	MaxLineBytes int
	// MaxConns is the most connections served at once (DefaultMaxConns).
	// One more gets one unavailable line and is closed.
	MaxConns int
	// Admit, when set, is called for each accepted connection before it is
	// read. If it returns an error, the connection gets one failure line
	// with that error's code (ErrForbidden: forbidden) and "id": null, and
	// is closed. The daemon checks peer credentials here.
	Admit func(c net.Conn) error
	// SubscriptionBuffer is how many committed batches a subscription, and
	// a connection's outgoing queue of pushes, may hold before a live
	// subscription counts as lagging (DefaultSubscriptionBuffer).
	SubscriptionBuffer int
	// WriteTimeout bounds each write to a connection; a client that does
	// not read for that long is disconnected (DefaultWriteTimeout).
	WriteTimeout time.Duration
	// Observe, when set, is told of every request answered by the store's
	// ops: its op, its outcome ("ok" or an error code) and how long it took.
	// It is called from the connections' goroutines, never the store's: a
	// slow Observe delays the replies of its connection, not the commits.
	Observe func(op, outcome string, took time.Duration)
	// ShutdownGrace is how long, once Shutdown begins, connections are
	// still read so that requests already sent get shutting_down rather
	// than a closed connection (DefaultShutdownGrace).
	ShutdownGrace time.Duration
}

// Server serves the protocol of SPEC §3 on any number of listeners. Its
// methods are safe for concurrent use.
type Server struct {
	store        Store
	log          *slog.Logger
	version      string
	admit        func(net.Conn) error
	observe      func(op, outcome string, took time.Duration)
	subBuffer    int
	writeTimeout time.Duration
	grace        time.Duration
	started      time.Time

	maxLine     atomic.Int64
	maxConns    atomic.Int64
	subscribers atomic.Int64

	// ctx is the context of every store call; cancelled only when Shutdown
	// stops waiting.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex // guards the fields below
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	lastConn  uint64
	closing   bool
	wg        sync.WaitGroup // connection goroutines
}

// NewServer returns a server for cfg. It panics if cfg.Store is nil.
func NewServer(cfg Config) *Server {
	if cfg.Store == nil {
		panic("ipc: NewServer with a nil Store")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.SubscriptionBuffer <= 0 {
		cfg.SubscriptionBuffer = DefaultSubscriptionBuffer
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.ShutdownGrace <= 0 {
		cfg.ShutdownGrace = DefaultShutdownGrace
	}
	s := &Server{
		store: cfg.Store, log: cfg.Logger, version: cfg.Version, admit: cfg.Admit, observe: cfg.Observe,
		subBuffer: cfg.SubscriptionBuffer, writeTimeout: cfg.WriteTimeout, grace: cfg.ShutdownGrace,
		started:   time.Now(),
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*conn]struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.SetLimits(cfg.MaxLineBytes, cfg.MaxConns)
	return s
}

// SetLimits changes the longest request line and the most connections; a
// value of 0 or less picks the default. The line limit applies from the
// next line read on each connection, the connection limit from the next
// connection accepted.
func (s *Server) SetLimits(maxLineBytes, maxConns int) {
	if maxLineBytes <= 0 {
		maxLineBytes = DefaultMaxLineBytes
	}
	if maxConns <= 0 {
		maxConns = DefaultMaxConns
	}
	s.maxLine.Store(int64(maxLineBytes))
	s.maxConns.Store(int64(maxConns))
}

func (s *Server) maxLineBytes() int { return int(s.maxLine.Load()) }

// Connections returns the number of connections being served.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Subscribers returns the number of live subscriptions.
func (s *Server) Subscribers() int { return int(s.subscribers.Load()) }

// Serve accepts connections on l and serves each in its own goroutines,
// until Shutdown. It may be called for several listeners. It closes l
// before it returns.
//
// Returns ErrServerClosed once Shutdown began, or the error of l.Accept if
// l was closed by someone else. Other accept errors (too many open files)
// are logged and retried after a pause.
func (s *Server) Serve(l net.Listener) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
		l.Close()
	}()
	var pause time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.shuttingDown() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			pause = min(max(2*pause, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", "err", err, "pause", pause)
			time.Sleep(pause)
			continue
		}
		pause = 0
		s.accept(nc)
	}
}

func (s *Server) shuttingDown() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// accept registers nc and starts serving it, or refuses it when the server
// is full. Connections are registered under the lock Shutdown copies them
// from, and refused once it began.
func (s *Server) accept(nc net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		nc.Close()
		return
	}
	s.wg.Add(1)
	if int64(len(s.conns)) >= s.maxConns.Load() {
		s.log.Warn("connection refused: too many connections", "max_conns", s.maxConns.Load())
		go func() {
			defer s.wg.Done()
			s.refuse(nc, &Error{Code: CodeUnavailable, Message: "too many connections"})
		}()
		return
	}
	s.lastConn++
	c := newConn(s, nc, s.lastConn)
	s.conns[c] = struct{}{}
	go func() {
		defer s.wg.Done()
		c.serve()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
}

// refuse writes one failure line of e to nc, with "id": null, and closes it.
func (s *Server) refuse(nc net.Conn, e *Error) {
	defer nc.Close()
	nc.SetWriteDeadline(time.Now().Add(min(s.writeTimeout, 5*time.Second)))
	nc.Write(appendFailure(nil, nil, e))
}

// Shutdown stops the server: it closes the listeners, answers every request
// already read, answers with shutting_down the requests read during the
// shutdown grace period, then closes each connection once its replies are
// written. It returns when every connection goroutine has ended.
//
// If ctx ends first, Shutdown cancels the store calls in flight and closes
// every connection, waits for their goroutines, and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing = true
	// Connections drain before the listeners close: once a client cannot
	// connect, its open connections answer shutting_down.
	for c := range s.conns {
		c.drain(s.grace)
	}
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	<-done
	return ctx.Err()
}
