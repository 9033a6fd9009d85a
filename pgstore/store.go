package pgstore

import (
	"context"
	"crypto/rand"
	"embed"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"liminald/conversation"
	"liminald/internal/compaction"
	"liminald/internal/feed"
	"liminald/internal/storestats"
)

// Options configure a Store. The zero value of each field picks its default.
type Options struct {
	Logger    *slog.Logger
	QueueSize int // writes (or runs of them, from Import and compaction) waiting for the writers; 4096 by default
	MaxBatch  int // write requests in one transaction (a batch takes no more runs past it); 1024 by default
	// Writers is how many batches the store writes at once, each on its
	// own connection: while one waits for its COMMIT, the next takes the
	// requests that arrived meanwhile, as the batches of several daemons
	// do (see the package's documentation); 1 by default.
	Writers int
	// MaxConns is how many connections to PostgreSQL the store's pool
	// keeps, for the writers, the readers and the feed (the one that
	// listens for notifications is one more): pool_max_conns in the URL,
	// else 8 by default.
	MaxConns int32
	// ConnectTimeout is how long Open waits for PostgreSQL to accept a
	// connection, trying again with a backoff; 30s by default.
	ConnectTimeout time.Duration
	// WriteTimeout bounds one batch's transaction: past it the batch is
	// answered unavailable; 30s by default.
	WriteTimeout time.Duration
	// Poll is how often the feed looks for events other daemons wrote
	// when no notification woke it; 50ms by default.
	Poll time.Duration
	// MaxAttempts is how many times a message may be started before it is
	// quarantined; 0 for no limit (SetMaxAttempts changes it live).
	MaxAttempts int64
	// Retention is what compaction keeps (SetRetention changes it live);
	// the zero Retention keeps everything.
	Retention Retention
	// ClockOffset, when set, is added to the database's clock wherever
	// the store reads it: tests move time with it, since they cannot set
	// the server's clock.
	ClockOffset func() time.Duration

	// beforeTail, when set, is called by the writer with the batch's
	// transaction open, its conversations locked and its rules applied,
	// just before the tail that gives it positions and commits it; tests
	// use it to hold a batch open.
	beforeTail func()
	// manualCompaction, when set, leaves compaction to the test's calls of
	// Compact.
	manualCompaction bool
}

// defaultWriters is Options.Writers' default. A second writer lets one
// batch lock and read while the other waits for its COMMIT, but each batch
// is then smaller and the server's cost of a batch is mostly the same
// whatever its size: with one writer, 64 clients wrote 14,347 events/s
// against 13,320 with two, and the server spent a third less CPU on them
// (docs/PERFORMANCE.md).
const defaultWriters = 1

// defaultMaxConns is the pool's size when neither Options.MaxConns nor the
// URL's pool_max_conns sets it.
const defaultMaxConns = 8

func (o *Options) setDefaults() {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.Writers <= 0 {
		o.Writers = defaultWriters
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 50 * time.Millisecond
	}
}

// Store is an open event log in a PostgreSQL database. Its methods are safe
// for concurrent use, and several stores (several daemons) may share one
// database.
type Store struct {
	opts  Options
	log   *slog.Logger
	pool  *pgxpool.Pool
	where string          // the server and database, for logs
	queue chan []*request // runs of requests, each taken whole by one writer
	feed  feed.Feed
	tail  *tailer
	stats storestats.Commits

	// id names the store in its notifications: the listener ignores its
	// own, whose events the writers hand to the tailer themselves.
	id string
	// known are names of conversations known to have a row, which a batch
	// need not try to insert (see knownConvs).
	known knownConvs

	maxAttempts atomic.Int64
	retention   compaction.Setting // see SetRetention
	compacting  compaction.Stats

	// skew is the database's clock minus the local one (ms), measured by
	// clockLoop, so that Moment need not ask the database.
	skew   atomic.Int64
	opened time.Time

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool

	stop chan struct{} // closed by Close: background loops end
	wg   sync.WaitGroup
}

// planSettings are the planner's settings on the store's connections,
// unless the URL gives them. Every statement of the store finds its rows
// by an index, and each is prepared once per connection: planning it for
// every run cost a third of the server's CPU under load, and a plan made
// from the statistics of the moment (a generic plan, or a custom plan
// before the first ANALYZE) chose sequential scans of tables that were
// small then and keep growing. So the plans are generic, made once, and
// made without sequential scans or hash and merge joins, which only pay
// for reading a table whole (docs/PERFORMANCE.md).
var planSettings = [][2]string{
	{"plan_cache_mode", "force_generic_plan"},
	{"enable_seqscan", "off"},
	{"enable_hashjoin", "off"},
	{"enable_mergejoin", "off"},
}

// Open connects to the PostgreSQL database at url (a postgres:// or
// postgresql:// URL, or a key=value connection string), waiting for it up
// to Options.ConnectTimeout (or until ctx ends), creates or migrates the
// schema, and starts the writers. Returns an error wrapping ErrNewerSchema
// if the database is from a newer version of liminald, ErrNotLiminal if it
// holds tables of liminald's names that are not liminald's, and one
// wrapping conversation.ErrUnavailable if PostgreSQL could not be reached
// in time.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	opts.setDefaults()
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	switch {
	case opts.MaxConns > 0:
		cfg.MaxConns = opts.MaxConns
	case !strings.Contains(url, "pool_max_conns"):
		cfg.MaxConns = defaultMaxConns
	}
	var set []string
	for _, p := range planSettings {
		if _, given := cfg.ConnConfig.RuntimeParams[p[0]]; !given {
			set = append(set, "SET "+p[0]+" = "+p[1])
		}
	}
	if len(set) > 0 {
		// Set once connected, not as startup parameters, which a pooler
		// such as PgBouncer refuses.
		setSQL := strings.Join(set, "; ")
		cfg.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, setSQL)
			return err
		}
	}
	where := fmt.Sprintf("database %s on %s", cfg.ConnConfig.Database, cfg.ConnConfig.Host)
	if cfg.ConnConfig.Port != 5432 {
		where += fmt.Sprintf(" port %d", cfg.ConnConfig.Port)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s := &Store{opts: opts, log: opts.Logger, pool: pool, where: where, queue: make(chan []*request, opts.QueueSize), id: rand.Text(),
		stop: make(chan struct{}), opened: time.Now()}
	s.SetMaxAttempts(opts.MaxAttempts)
	s.SetRetention(opts.Retention)
	if err := s.wait(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	if err := s.syncClock(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s.tail, err = newTailer(ctx, s)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("open %s: %w", where, err)
	}
	s.wg.Add(3 + opts.Writers)
	for range opts.Writers {
		w := &writer{s: s}
		go func() { defer s.wg.Done(); w.run() }()
	}
	go func() { defer s.wg.Done(); s.tail.run() }()
	go func() { defer s.wg.Done(); s.tail.listen() }()
	go func() { defer s.wg.Done(); s.clockLoop() }()
	if !opts.manualCompaction {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); compaction.Loop(s.stop, &s.retention, s.Compact, s.log) }()
	}
	s.log.Info("connected to PostgreSQL", "where", where)
	return s, nil
}

// wait pings PostgreSQL until it answers, with a backoff from 100ms to 2s,
// up to Options.ConnectTimeout, logging what it waits for.
func (s *Store) wait(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.opts.ConnectTimeout)
	defer cancel()
	backoff := 100 * time.Millisecond
	for tries := 1; ; tries++ {
		err := s.pool.Ping(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("PostgreSQL did not answer within %v (%d tries): %w: %w", s.opts.ConnectTimeout, tries, conversation.ErrUnavailable, err)
		}
		s.log.Warn("waiting for PostgreSQL", "where", s.where, "try", tries, "retry_in", backoff, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// Close stops taking writes, answers every write already queued, ends the
// subscriptions and closes the connections. Writes after Close get
// conversation.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.queue)
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	s.feed.Close()
	s.pool.Close()
	return nil
}

// Moment returns what the rules judge a message by now: the database's
// clock, as last measured against the local one, and the max_attempts
// setting. A write judges by the database's clock read in its own
// transaction instead.
func (s *Store) Moment() conversation.Moment {
	now := time.Now().UnixMilli() + s.skew.Load() + s.offset()
	return conversation.Moment{Now: now, MaxAttempts: s.maxAttempts.Load()}
}

// offset is Options.ClockOffset in milliseconds, 0 without it.
func (s *Store) offset() int64 {
	if s.opts.ClockOffset == nil {
		return 0
	}
	return s.opts.ClockOffset().Milliseconds()
}

// SetMaxAttempts sets how many times a message may be started before it is
// quarantined (0, or less: no limit), from the next request on.
func (s *Store) SetMaxAttempts(n int64) { s.maxAttempts.Store(max(n, 0)) }

// clockSQL reads the database's clock in epoch milliseconds.
const clockSQL = `SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint`

// now reads the database's clock (epoch ms), with the offset.
func (s *Store) now(ctx context.Context) (int64, error) {
	var now int64
	if err := s.pool.QueryRow(ctx, clockSQL).Scan(&now); err != nil {
		return 0, unavailable("read the clock", err)
	}
	return now + s.offset(), nil
}

// syncClock measures the database's clock against the local one.
func (s *Store) syncClock(ctx context.Context) error {
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return unavailable("read the clock", err)
	}
	defer conn.Release()
	best := int64(-1)
	for range 3 { // the round trip that took least says most
		var db int64
		t0 := time.Now()
		if err := conn.QueryRow(ctx, clockSQL).Scan(&db); err != nil {
			return unavailable("read the clock", err)
		}
		t1 := time.Now()
		if rtt := t1.Sub(t0).Microseconds(); best < 0 || rtt < best {
			best = rtt
			s.skew.Store(db - (t0.UnixMilli()+t1.UnixMilli())/2)
		}
	}
	return nil
}

// clockLoop measures the database's clock again every few seconds.
func (s *Store) clockLoop() {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if err := s.syncClock(ctx); err != nil {
			s.log.Debug("measure the database's clock", "err", err)
		}
		cancel()
	}
}

//go:embed schema.sql
var schema string

// migrations holds N.sql for each version N after the first: what brings
// a database of version N-1 to version N.
//
//go:embed migrations/*.sql
var migrations embed.FS

// SchemaVersion is the version of the schema this liminald creates.
const SchemaVersion = 2

// schemaLock is the key of the advisory lock that daemons opening one
// database at once take to create or migrate its schema one at a time.
const schemaLock = 0x6c696d696e616c // "liminal"

// ourTables are the tables the schema creates: one of them in a database
// without liminald_schema means the database is not liminald's.
var ourTables = []string{"conversations", "events", "messages", "steps", "positions"}

// migrate creates the schema in a database that has none, brings one of an
// older version forward, one version at a time (migrations), in the same
// transaction as its version's update, and refuses one from a newer
// version.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(schemaLock)); err != nil {
			return unavailable("lock the schema", err)
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass('liminald_schema') IS NOT NULL`).Scan(&exists); err != nil {
			return unavailable("read schema version", err)
		}
		if exists {
			var version int
			if err := tx.QueryRow(ctx, `SELECT version FROM liminald_schema WHERE id = 1`).Scan(&version); err != nil {
				return unavailable("read schema version", err)
			}
			if version > SchemaVersion {
				return fmt.Errorf("%w: its schema is version %d, this liminald knows up to version %d; upgrade liminald", ErrNewerSchema, version, SchemaVersion)
			}
			for v := version + 1; v <= SchemaVersion; v++ {
				sql, err := migrations.ReadFile(fmt.Sprintf("migrations/%d.sql", v))
				if err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, string(sql)); err != nil {
					return unavailable(fmt.Sprintf("migrate the schema from version %d to %d", v-1, v), err)
				}
			}
			_, err := tx.Exec(ctx, `UPDATE liminald_schema SET version = $1 WHERE id = 1`, SchemaVersion)
			return unavailable("migrate the schema", err)
		}
		var found []string
		if err := tx.QueryRow(ctx, `SELECT coalesce(array_agg(t), '{}') FROM unnest($1::text[]) t WHERE to_regclass(t) IS NOT NULL`, ourTables).Scan(&found); err != nil {
			return unavailable("create schema", err)
		}
		if len(found) > 0 {
			return fmt.Errorf("%w (found %v)", ErrNotLiminal, found)
		}
		if _, err := tx.Exec(ctx, schema); err != nil {
			return unavailable("create schema", err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO liminald_schema (id, version) VALUES (1, $1)`, SchemaVersion)
		return unavailable("create schema", err)
	})
}

// QueueDepth returns the number of writes (or runs of them) waiting for
// the writers.
func (s *Store) QueueDepth() int { return len(s.queue) }
