package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"liminald/ipc"
	"liminald/pgstore"
	"liminald/sqlitestore"
)

// Options are what the command line hands Run.
type Options struct {
	// ConfigPath is the configuration file given on the command line; empty
	// means LIMINAL_CONFIG, else the default path if that file exists.
	ConfigPath string
	// Env reads the environment; os.Getenv when nil.
	Env func(string) string
	// Overrides applies the command line's flags over the file and the
	// environment. It is applied again on every reload.
	Overrides func(*Config) error
	// Stderr receives the logs; os.Stderr when nil.
	Stderr io.Writer
	// Version is reported by hello.
	Version string
	// ShutdownTimeout bounds how long a shutdown waits for connections to
	// drain before it closes them; 10s when zero.
	ShutdownTimeout time.Duration
}

// daemon is a running liminald: what Run set up and must tear down.
type daemon struct {
	opts    Options
	log     *slog.Logger
	level   *slog.LevelVar
	cfg     Config // the running configuration; only Run's goroutine reads or writes it
	file    string // the configuration file read, "" if none
	allow   atomic.Pointer[AllowList]
	store   runningStore
	srv     *ipc.Server
	metrics *metrics // nil when the endpoint is off
	locks   []*Lock
	socket  string // the socket file this daemon created, "" when activated

	// What start made, for abandon to remove when it fails.
	createdDB bool     // the database file
	dirs      []string // directories, the last made first

	// The socket's settings, fixed at start (they cannot change live), for
	// the socket watcher's goroutine.
	sockPath, sockGroup string
	sockMode            os.FileMode

	mu       sync.Mutex // guards listener, sockLock and stopping
	listener net.Listener
	sockLock *Lock
	stopping bool
	serving  sync.WaitGroup // Serve goroutines

	fatal chan error // a failure that ends the daemon, from its watchers
}

// Run runs the daemon until ctx ends or it gets SIGTERM or SIGINT: it loads
// the configuration, takes the database lock and the socket lock (or the
// sockets systemd passed), opens the store, listens, reports READY=1, and
// serves. SIGHUP or an edit of the configuration file reloads what can
// change live. On the way out it stops accepting, answers what is in
// flight, closes the store cleanly, removes its socket and releases the
// locks. When it cannot start, it leaves nothing that was not there before:
// not the database, nor a lock file or a directory it made. Returns nil
// after a clean shutdown; an error wrapping ErrLocked if another daemon
// holds the database or the socket; otherwise the error that kept it from
// starting.
func Run(ctx context.Context, opts Options) error {
	if opts.Env == nil {
		opts.Env = os.Getenv
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 10 * time.Second
	}
	cfg, file, err := Load(opts.ConfigPath, opts.Env, opts.Overrides)
	if err != nil {
		return err
	}
	// Signals are ours from the start: a SIGTERM while the store opens
	// still closes it cleanly, and a SIGHUP does not kill the daemon.
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	defer signal.Stop(signals)
	d := &daemon{opts: opts, cfg: cfg, file: file, fatal: make(chan error, 1)}
	d.log, d.level = NewLogger(opts.Stderr, cfg.LogLevel, cfg.LogFormat)
	allow := cfg.AllowList()
	d.allow.Store(&allow)
	if err := d.start(ctx, signals); err != nil {
		d.abandon()
		if errors.Is(err, errStopped) {
			return nil
		}
		return err
	}
	defer d.releaseLocks()
	return d.serve(ctx, signals)
}

// start takes the locks, then opens the store and the sockets, and starts
// serving. The database is made only once both locks are held: a daemon
// refused for its socket has not touched it.
func (d *daemon) start(ctx context.Context, signals chan os.Signal) error {
	cfg := d.cfg
	postgres := IsPostgres(cfg.DB)
	// A PostgreSQL database is shared by design (SPEC §10): the lock of
	// one daemon per database is SQLite's alone.
	if !postgres {
		if err := d.prepareDir(filepath.Dir(cfg.DB)); err != nil {
			return err
		}
		if err := d.lock(cfg.DB + ".lock"); err != nil {
			return err
		}
	}
	activated, err := Activated()
	if err != nil {
		return err
	}
	if len(activated) == 0 {
		if err := CheckSocketPath(cfg.Socket); err != nil {
			return err
		}
		if err := d.prepareDir(filepath.Dir(cfg.Socket)); err != nil {
			return err
		}
		if err := d.lock(cfg.Socket + ".lock"); err != nil {
			return err
		}
		d.sockLock = d.locks[len(d.locks)-1]
	}
	srvCfg := ipc.Config{
		Store: nil, Logger: d.log, Version: d.opts.Version,
		MaxLineBytes: cfg.MaxLineBytes, MaxConns: cfg.MaxConnections, Admit: d.admit,
	}
	if cfg.Metrics != "" {
		d.metrics = newMetrics()
		srvCfg.Observe = d.metrics.observe
	}
	if postgres {
		err = d.openPostgres(ctx, signals)
	} else {
		err = d.openSQLite()
	}
	if err != nil {
		return err
	}
	srvCfg.Store = d.store
	d.srv = ipc.NewServer(srvCfg)
	if d.metrics != nil {
		d.metrics.watch(d.store, d.srv)
		addr, err := d.metrics.serve(cfg.Metrics, cfg.MetricsPublic)
		if err != nil {
			return err
		}
		d.log.Info("metrics endpoint", "addr", addr.String(), "public", cfg.MetricsPublic)
	}
	db := DisplayDB(cfg.DB)
	if len(activated) > 0 {
		// systemd owns the socket file and keeps one daemon per socket.
		for _, l := range activated {
			d.serveOn(l)
		}
		d.log.Info("serving", "db", db, "sync", cfg.Sync, "activated_sockets", len(activated), "version", d.opts.Version)
		return nil
	}
	d.sockPath, d.sockMode, d.sockGroup = cfg.Socket, cfg.SocketMode, cfg.SocketGroup
	if err := d.listen(); err != nil {
		return err
	}
	d.log.Info("serving", "db", db, "sync", cfg.Sync, "socket", cfg.Socket, "version", d.opts.Version)
	return nil
}

// openSQLite opens the SQLite store of the db setting, creating its file.
func (d *daemon) openSQLite() error {
	cfg := d.cfg
	opts := sqlitestore.Options{Sync: sqlitestore.Sync(cfg.Sync), Logger: d.log, MaxAttempts: cfg.MaxAttempts, Retention: cfg.Retention()}
	if d.metrics != nil {
		opts.OnBatch = d.metrics.observeBatch
	}
	// Created 0600 before SQLite would create it 0644: it holds payloads.
	var err error
	if d.createdDB, err = sqlitestore.Create(cfg.DB); err != nil {
		return err
	}
	s, err := sqlitestore.Open(cfg.DB, opts)
	if err != nil {
		return err
	}
	d.store = store{s}
	return nil
}

// openPostgres opens the PostgreSQL store of the db setting, waiting for
// the server up to the connect_timeout setting (pgstore.Open logs what it
// waits for): READY=1 follows only once it is connected. A SIGTERM or
// SIGINT, or the end of ctx, ends the wait at once, and the start with
// errStopped; a SIGHUP is kept for serve. The sync setting does not apply:
// a commit is as durable as the server's settings make it.
func (d *daemon) openPostgres(ctx context.Context, signals chan os.Signal) error {
	cfg := d.cfg
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stoppedBy os.Signal
	waited := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		hup := false
		defer func() {
			if hup {
				notifySignal(signals, syscall.SIGHUP)
			}
		}()
		for {
			select {
			case <-waited:
				return
			case sig := <-signals:
				if sig == syscall.SIGHUP {
					hup = true
					continue
				}
				stoppedBy = sig
				cancel()
				return
			}
		}
	}()
	s, err := pgstore.Open(ctx, cfg.DB, pgstore.Options{Logger: d.log, MaxAttempts: cfg.MaxAttempts,
		ConnectTimeout: cfg.ConnectTimeout, Retention: cfg.Retention()})
	close(waited)
	<-watched
	switch {
	case stoppedBy != nil:
		if err == nil {
			s.Close()
		}
		d.log.Info("stopping before the store opened", "signal", stoppedBy.String())
		return errStopped
	case err != nil && ctx.Err() != nil:
		d.log.Info("stopping before the store opened", "reason", ctx.Err())
		return errStopped
	case err != nil:
		return err
	}
	d.store = pgStore{s}
	return nil
}

// errStopped is a start that a signal, or the end of Run's context, ended
// before the daemon served: not a failure.
var errStopped = errors.New("stopped while starting")

// notifySignal puts sig back on signals, unless it is full.
func notifySignal(signals chan os.Signal, sig os.Signal) {
	select {
	case signals <- sig:
	default:
	}
}

// abandon undoes a start that failed, leaving nothing that was not there
// before it: it stops the metrics endpoint, closes the store, removes the
// database if start made it, removes the lock files it made and releases
// the locks, and removes the directories it made (if they are empty).
func (d *daemon) abandon() {
	if d.metrics != nil {
		d.metrics.close()
		d.removeMetricsSocket()
	}
	if d.store != nil {
		d.store.Close()
	}
	if d.createdDB {
		if err := sqlitestore.Remove(d.cfg.DB); err != nil {
			d.log.Warn("remove the database this start made", "err", err)
		}
	}
	for _, l := range slices.Backward(d.locks) {
		if err := l.Discard(); err != nil {
			d.log.Warn("discard lock", "path", l.Path(), "err", err)
		}
	}
	for _, dir := range d.dirs {
		os.Remove(dir) // only if empty: what another process put there stays
	}
}

// prepareDir is PrepareDir, remembering the directories it made for
// abandon, the last made first.
func (d *daemon) prepareDir(dir string) error {
	var missing []string
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		if _, err := os.Lstat(p); !errors.Is(err, fs.ErrNotExist) || filepath.Dir(p) == p {
			break
		}
		missing = append(missing, p)
	}
	d.dirs = append(missing, d.dirs...)
	return PrepareDir(dir)
}

func (d *daemon) lock(path string) error {
	l, err := AcquireLock(path)
	if err != nil {
		return err
	}
	d.locks = append(d.locks, l)
	return nil
}

func (d *daemon) releaseLocks() {
	for _, l := range slices.Backward(d.locks) {
		if err := l.Release(); err != nil {
			d.log.Warn("release lock", "path", l.Path(), "err", err)
		}
	}
}

// listen creates the socket file and serves on it, replacing the listener
// of a socket file that was deleted.
func (d *daemon) listen() error {
	l, err := Listen(d.sockPath, d.sockMode, d.sockGroup)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping {
		l.Close()
		return nil
	}
	if d.listener != nil {
		d.listener.Close()
	}
	d.listener, d.socket = l, d.sockPath
	d.serveOnLocked(l)
	return nil
}

func (d *daemon) serveOn(l net.Listener) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.serveOnLocked(l)
}

func (d *daemon) serveOnLocked(l net.Listener) {
	d.serving.Add(1)
	go func() {
		defer d.serving.Done()
		err := d.srv.Serve(l)
		if err != nil && !errors.Is(err, ipc.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			d.log.Error("serve", "err", err)
		}
	}()
}

// admit checks a new connection's peer against the allow-lists.
func (d *daemon) admit(c net.Conn) error {
	uid, gid, pid, err := PeerCred(c)
	if err != nil {
		d.log.Warn("peer credentials", "err", err)
		return fmt.Errorf("%w: cannot read peer credentials", ipc.ErrForbidden)
	}
	d.log.Debug("connection", "uid", uid, "gid", gid, "pid", pid)
	if !d.allow.Load().Allows(uid, gid) {
		d.log.Warn("peer refused by the allow-lists", "uid", uid, "gid", gid, "pid", pid)
		return ipc.ErrForbidden
	}
	return nil
}

// serve waits for signals, reloads and the end of ctx, then shuts down.
func (d *daemon) serve(ctx context.Context, signals <-chan os.Signal) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	reloads := make(chan struct{}, 1)
	var watchers []*Watcher
	if d.file != "" {
		w, err := WatchConfig(ctx, d.file, DefaultDebounce, func() { notifyOnce(reloads) })
		if err != nil {
			d.log.Warn("cannot watch the config file; SIGHUP still reloads it", "path", d.file, "err", err)
		} else {
			watchers = append(watchers, w)
		}
	}
	if d.socket != "" {
		db := d.cfg.DB
		if IsPostgres(db) {
			db = ""
		}
		w, err := WatchSocket(ctx, d.socket, db, d.recreateSocket)
		if err != nil {
			d.log.Warn("cannot watch the socket file", "path", d.socket, "err", err)
		} else {
			watchers = append(watchers, w)
		}
	}
	d.ready()
	var fatal error
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping", "reason", ctx.Err())
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				d.reload("SIGHUP")
				continue
			}
			d.log.Info("stopping", "signal", sig.String())
		case <-reloads:
			d.reload("config file changed")
			continue
		case err := <-d.fatal:
			d.log.Error("stopping", "err", err)
			fatal = err
		}
		break
	}
	cancel()
	for _, w := range watchers {
		w.Wait()
	}
	if err := d.shutdown(); err != nil {
		return err
	}
	return fatal
}

// removeMetricsSocket removes the socket file of the metrics endpoint, if
// it listens on one: not a file that kept it from listening.
func (d *daemon) removeMetricsSocket() {
	if d.metrics.srv == nil {
		return
	}
	if network, addr, _ := metricsAddress(d.cfg.Metrics, d.cfg.MetricsPublic); network == "unix" {
		os.Remove(addr)
	}
}

func notifyOnce(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// recreateSocket puts back a socket file deleted under the running daemon.
func (d *daemon) recreateSocket() {
	d.mu.Lock()
	stopping := d.stopping
	d.mu.Unlock()
	if stopping {
		return
	}
	if fi, err := os.Lstat(d.sockPath); err == nil && fi.Mode()&os.ModeSocket != 0 {
		return // still there
	}
	d.log.Warn("socket file is gone; creating it again", "socket", d.sockPath)
	if err := PrepareDir(filepath.Dir(d.sockPath)); err != nil {
		d.log.Error("re-create socket", "err", err)
		return
	}
	if err := d.relock(); err != nil {
		d.mu.Lock()
		d.socket = "" // another daemon's now: not ours to remove
		d.mu.Unlock()
		select {
		case d.fatal <- err:
		default:
		}
		return
	}
	if err := d.listen(); err != nil {
		d.log.Error("re-create socket", "err", err)
	}
}

// relock takes the socket lock again when its file went with the socket
// (its directory was removed): without it, a second daemon could take the
// socket. Returns an error wrapping ErrLocked if another process took it
// first.
func (d *daemon) relock() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sockLock.Held() {
		return nil
	}
	l, err := AcquireLock(d.sockPath + ".lock")
	if err != nil {
		return fmt.Errorf("socket lock lost with its directory: %w", err)
	}
	for i, old := range d.locks {
		if old == d.sockLock {
			old.Release()
			d.locks[i] = l
		}
	}
	d.sockLock = l
	return nil
}

// reload reads the configuration again and applies what can change live.
// An invalid configuration, or one that changes a setting that cannot
// change live, is logged and the running configuration kept.
func (d *daemon) reload(why string) {
	d.notify(NotifyReloading())
	defer d.ready()
	next, _, err := Load(d.opts.ConfigPath, d.opts.Env, d.opts.Overrides)
	if err != nil {
		d.log.Error("reload refused: invalid configuration; keeping the running one", "trigger", why, "err", err)
		return
	}
	live, restart := d.cfg.Diff(next)
	if len(restart) > 0 {
		d.log.Error("reload refused: these settings cannot change without a restart; keeping the running configuration",
			"trigger", why, "settings", restart)
		return
	}
	if len(live) == 0 {
		d.log.Info("reload: nothing changed", "trigger", why)
		return
	}
	d.srv.SetLimits(next.MaxLineBytes, next.MaxConnections)
	d.store.SetMaxAttempts(next.MaxAttempts)
	d.store.SetRetention(next.Retention())
	allow := next.AllowList()
	d.allow.Store(&allow)
	if lvl, err := ParseLevel(next.LogLevel); err == nil {
		d.level.Set(lvl)
	}
	d.cfg = next
	d.log.Info("configuration reloaded", "trigger", why, "changed", live)
}

// ready tells systemd the daemon serves, with a status line naming its
// database for systemctl status.
func (d *daemon) ready() {
	d.notify(NotifyReady + "\n" + NotifyStatus("serving "+DisplayDB(d.cfg.DB)))
}

func (d *daemon) notify(state string) {
	if err := Notify(state); err != nil {
		d.log.Warn("notify systemd", "err", err)
	}
}

// shutdown stops serving, answering what is in flight, closes the store
// and removes the socket file.
func (d *daemon) shutdown() error {
	d.notify(NotifyStopping)
	d.mu.Lock()
	d.stopping = true
	d.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.ShutdownTimeout)
	defer cancel()
	if err := d.srv.Shutdown(ctx); err != nil {
		d.log.Warn("connections closed before their replies drained", "err", err)
	}
	d.serving.Wait()
	if d.metrics != nil {
		d.metrics.close()
		d.removeMetricsSocket()
	}
	err := d.store.Close()
	if err != nil {
		d.log.Error("close database", "err", err)
	}
	d.mu.Lock()
	socket := d.socket
	d.mu.Unlock()
	if socket != "" {
		if fi, serr := os.Lstat(socket); serr == nil && fi.Mode()&os.ModeSocket != 0 {
			os.Remove(socket)
		}
	}
	d.log.Info("stopped")
	return err
}
