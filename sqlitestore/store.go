package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"liminald"
	"liminald/internal/compaction"
	"liminald/internal/feed"
	"liminald/internal/storestats"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Sync is how hard a commit presses its data to the disk.
type Sync string

const (
	// SyncFull fsyncs the WAL on every commit: an acknowledged write survives
	// a crash of the process and of the machine (power loss).
	SyncFull Sync = "full"
	// SyncNormal leaves fsync to checkpoints: an acknowledged write survives
	// a crash of the process, but the last commits can be lost on power loss.
	SyncNormal Sync = "normal"
)

// Options configure a Store. The zero value of each field picks its default.
type Options struct {
	Sync       Sync // SyncFull by default
	Readers    int  // read connections; 4 by default
	QueueSize  int  // write requests waiting for the writer; 4096 by default
	MaxBatch   int  // write requests in one transaction; 1024 by default
	CacheSize  int  // messages, and conversations, the writer keeps in memory; 65536 by default
	Logger     *slog.Logger
	Now        func() time.Time // the commit clock; time.Now by default
	Checkpoint time.Duration    // how often WAL checkpoints run; 100ms by default
	// MaxAttempts is how many times a message may be started before it is
	// quarantined; 0 for no limit (SetMaxAttempts changes it live).
	MaxAttempts int64
	// Retention is what compaction keeps (SetRetention changes it live);
	// the zero Retention keeps everything.
	Retention Retention
	// OnBatch, when set, is told of every batch once it is answered, in
	// order, from a goroutine of its own: a slow OnBatch never holds up a
	// commit. While it is more than reportBacklog batches behind, the
	// batches answered meanwhile are not reported to it (Stats counts them
	// in UnreportedBatches).
	OnBatch func(Batch)

	// maxPageCount caps the database size in pages on the writer connection
	// (PRAGMA max_page_count); tests use it to fill the "disk".
	maxPageCount int
	// gather, when set, is called by the writer between taking the first
	// request of a batch and gathering the rest; tests use it to hold a
	// batch open.
	gather func()
	// staged, when set, is called by the writer after it wrote requests
	// into the open transaction of a batch, with their number.
	staged func(requests int)
	// syncFault, when set, is called before each sync of the WAL; an error
	// from it is a failed sync.
	syncFault func() error
	// walRestartBytes is the WAL size that makes the checkpointer restart
	// the WAL (defaultWALRestartBytes).
	walRestartBytes int64
	// checkpointed, when set, is called after each checkpoint with its
	// mode and the WAL's frames it found.
	checkpointed func(mode string, frames int64)
	// manualCompaction, when set, leaves compaction to the test's calls of
	// Compact.
	manualCompaction bool
}

func (o *Options) setDefaults() {
	if o.Sync == "" {
		o.Sync = SyncFull
	}
	if o.Readers <= 0 {
		o.Readers = 4
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 4096
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = 1024
	}
	if o.CacheSize <= 0 {
		o.CacheSize = 1 << 16
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.walRestartBytes <= 0 {
		o.walRestartBytes = defaultWALRestartBytes
	}
	if o.Checkpoint <= 0 {
		o.Checkpoint = 100 * time.Millisecond
	}
}

// Store is an open event log. Its methods are safe for concurrent use.
type Store struct {
	path  string
	opts  Options
	log   *slog.Logger
	wdb   *sql.DB // the writer's handle: one connection, owned by the writer goroutine
	rdb   *sql.DB // the readers' pool, query_only
	cdb   *sql.DB // the checkpointer's connection
	reads *readStmts
	feed  feed.Feed
	msgs  *msgCache // committed message states, put by the writer, read by all
	// convIDs maps the names of the conversations the writer committed to
	// lately (at most about CacheSize) to their ids, which never change.
	convIDs sync.Map
	stats   storestats.Commits
	// unreported counts the batches OnBatch was not told of.
	unreported atomic.Int64
	queue      chan *request   // write requests, to the writer
	synced     chan *committed // committed batches, to the syncer
	reports    chan Batch      // answered batches, to OnBatch; nil without it

	maxAttempts atomic.Int64 // see SetMaxAttempts

	retention  compaction.Setting // see SetRetention
	compacting compaction.Stats

	syncing atomic.Int64          // batches committed and not yet answered
	durable atomic.Int64          // the last batch synced: the states cached with it or before are durable
	writing atomic.Int64          // the number of the batch the writer is writing or wrote last (see msgCache); the writer's alone to change
	broken  atomic.Pointer[error] // the failed sync after which writes are refused
	// wake tells a writer waiting out a sync to look again: the sync
	// ended, the queue closed, or enough requests for a stage (stageMin)
	// are waiting. unstaged counts the requests queued and not yet written
	// into a batch.
	wake     chan struct{}
	unstaged atomic.Int64
	opened   time.Time

	mu     sync.RWMutex // guards closed against sends on queue
	closed bool

	stop chan struct{} // closed by Close: background loops end
	wg   sync.WaitGroup
}

// Open opens the database at path, creating it and its schema if it does not
// exist, and starts the writer. Returns an error wrapping ErrNewerSchema if
// the database is from a newer version of liminald.
func Open(path string, opts Options) (*Store, error) {
	opts.setDefaults()
	if opts.Sync != SyncFull && opts.Sync != SyncNormal {
		return nil, fmt.Errorf("open database %s: sync must be %q or %q, not %q", path, SyncFull, SyncNormal, opts.Sync)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// A database the store makes is the owner's alone, as Create makes it
	// (SQLite gives its -wal and -shm the database file's mode).
	if _, err := Create(abs); err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	s := &Store{path: abs, opts: opts, log: opts.Logger, queue: make(chan *request, opts.QueueSize), synced: make(chan *committed, 64), msgs: newMsgCache(), wake: make(chan struct{}, 1), stop: make(chan struct{}), opened: time.Now()}
	s.SetMaxAttempts(opts.MaxAttempts)
	s.SetRetention(opts.Retention)
	if err := s.open(); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	w, err := newWriter(s)
	if err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	// What the WAL holds at open (a crashed process's commits, which the
	// page cache may still hold alone) counts as durable only once synced:
	// until then, and until a batch's sync if this one fails, no state
	// settles a redelivery (see Settle).
	if s.opts.Sync == SyncFull {
		if err := s.fsyncWAL(); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.durable.Store(-1)
		}
	}
	if opts.OnBatch != nil {
		s.reports = make(chan Batch, reportBacklog) // before the syncer, which sends on it
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			for b := range s.reports {
				opts.OnBatch(b)
			}
		}()
	}
	s.wg.Add(3)
	go func() { defer s.wg.Done(); w.run() }()
	go func() { defer s.wg.Done(); s.syncLoop() }()
	go func() { defer s.wg.Done(); s.checkpointLoop() }()
	if !opts.manualCompaction {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); compaction.Loop(s.stop, &s.retention, s.Compact, s.log) }()
	}
	return s, nil
}

// dsn is the data source name of the database at path with the pragmas
// given, and a busy_timeout of 5s unless they set one.
func dsn(path string, pragmas ...string) string {
	q := url.Values{}
	if !slices.ContainsFunc(pragmas, func(p string) bool { return strings.HasPrefix(p, "busy_timeout") }) {
		q.Add("_pragma", "busy_timeout(5000)")
	}
	q.Add("_pragma", "foreign_keys(0)")
	for _, p := range pragmas {
		q.Add("_pragma", p)
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
}

func (s *Store) open() error {
	// The writer never waits for the disk; with SyncFull the syncer fsyncs
	// the WAL before any write is answered (see syncer.go). Its statement
	// journals stay in memory (temp_store): in a file they cost a file
	// created and written per statement.
	writerPragmas := []string{"journal_mode(WAL)", "synchronous(NORMAL)", "wal_autocheckpoint(0)", "journal_size_limit(67108864)", "temp_store(MEMORY)"}
	if s.opts.maxPageCount > 0 {
		writerPragmas = append(writerPragmas, fmt.Sprintf("max_page_count(%d)", s.opts.maxPageCount))
	}
	var err error
	s.wdb, err = sql.Open("sqlite", dsn(s.path, writerPragmas...)+"&_txlock=immediate")
	if err != nil {
		return err
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	if err := migrate(s.wdb); err != nil {
		return err
	}
	s.rdb, err = sql.Open("sqlite", dsn(s.path, "query_only(1)"))
	if err != nil {
		return err
	}
	s.rdb.SetMaxOpenConns(s.opts.Readers)
	s.rdb.SetMaxIdleConns(s.opts.Readers)
	// The checkpointer never waits for a lock (busy_timeout 0): a RESTART
	// that finds a reader on an old snapshot (a long check or export) gives
	// up at once instead of holding the writer off.
	s.cdb, err = sql.Open("sqlite", dsn(s.path, "synchronous(FULL)", "busy_timeout(0)"))
	if err != nil {
		return err
	}
	s.cdb.SetMaxOpenConns(1)
	s.reads, err = prepareReads(s.rdb)
	return err
}

// migrate creates the schema in an empty database, brings an older one
// forward one version at a time (each step in its own transaction), and
// refuses one from a newer version. Versions move forward with PRAGMA
// user_version.
func migrate(db *sql.DB) error {
	var version int
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
		return unavailable("read schema version", err)
	}
	switch {
	case version == liminald.SchemaVersion:
		return nil
	case version > liminald.SchemaVersion:
		return fmt.Errorf("%w: its schema is version %d, this liminald knows up to version %d; upgrade liminald", ErrNewerSchema, version, liminald.SchemaVersion)
	case version == 0:
		return inTx(db, "create schema", func(tx *sql.Tx) error {
			var tables int
			if err := tx.QueryRow("SELECT count(*) FROM sqlite_schema WHERE type = 'table'").Scan(&tables); err != nil {
				return unavailable("create schema", err)
			}
			if tables > 0 {
				return fmt.Errorf("database has tables but no liminald schema version; it is not a liminald database")
			}
			return setVersion(tx, liminald.Schema, liminald.SchemaVersion)
		})
	}
	for to := version + 1; to <= liminald.SchemaVersion; to++ {
		stmts, err := liminald.Migration(to)
		if err != nil {
			return err
		}
		if err := inTx(db, fmt.Sprintf("migrate schema to version %d", to), func(tx *sql.Tx) error {
			return setVersion(tx, stmts, to)
		}); err != nil {
			return err
		}
	}
	return nil
}

// inTx runs f in a transaction of db and commits it; what names the work in
// an error.
func inTx(db *sql.DB, what string, f func(*sql.Tx) error) error {
	tx, err := db.Begin()
	if err != nil {
		return unavailable(what, err)
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return unavailable(what, tx.Commit())
}

// setVersion runs stmts in tx and sets the schema version to version.
func setVersion(tx *sql.Tx, stmts string, version int) error {
	if _, err := tx.Exec(stmts); err != nil {
		return unavailable(fmt.Sprintf("schema version %d", version), err)
	}
	_, err := tx.Exec(fmt.Sprintf("PRAGMA user_version = %d", version))
	return unavailable(fmt.Sprintf("schema version %d", version), err)
}

// Batch describes a batch of write requests once it was answered.
type Batch struct {
	Requests int           // write requests in the batch
	Events   int           // events it appended
	Commit   time.Duration // from its first request taken to its COMMIT
	Sync     time.Duration // the fdatasync that made it durable, shared with the batches synced with it
}

// reportBacklog is how many answered batches may wait for OnBatch.
const reportBacklog = 4096

// report hands b to OnBatch's goroutine, if there is one, without waiting.
func (s *Store) report(b Batch) {
	if s.reports == nil {
		return
	}
	select {
	case s.reports <- b:
	default:
		if s.unreported.Add(1) == 1 {
			s.log.Warn("batch observer is behind: batches go unreported", "backlog", reportBacklog)
		}
	}
}

// QueueDepth returns the number of write requests waiting for the writer.
func (s *Store) QueueDepth() int { return len(s.queue) }

// Path returns the absolute path of the database file.
func (s *Store) Path() string { return s.path }

// Close stops taking writes, answers every write already queued, closes the
// database cleanly (checkpointing its WAL) and returns. Writes after Close
// get conversation.ErrClosed. Subscriptions end.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.queue)
	s.poke()
	close(s.stop)
	s.mu.Unlock()
	s.wg.Wait()
	s.feed.Close()
	return s.closeDBs()
}

// poke wakes the writer if it waits out a sync.
func (s *Store) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *Store) closeDBs() error {
	var errs []error
	if s.reads != nil {
		errs = append(errs, s.reads.close())
	}
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.cdb != nil {
		errs = append(errs, s.cdb.Close())
	}
	if s.wdb != nil {
		// A clean close of the last connection checkpoints the WAL into the
		// database file and removes it.
		_, err := s.wdb.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
		if err != nil && !isUnavailable(err) {
			errs = append(errs, err)
		}
		errs = append(errs, s.wdb.Close())
	}
	return errors.Join(errs...)
}

// defaultWALRestartBytes is the WAL size past which the checkpointer
// restarts the WAL from its beginning.
const defaultWALRestartBytes = 16 << 20

// checkpointLoop copies the WAL into the database file in the background, so
// that the writer never pays for a checkpoint on its commit path. A PASSIVE
// checkpoint takes no lock the writer needs. Under a steady load a passive
// checkpoint never catches up with the writer, so the WAL would only grow,
// and growing a file costs the writer several times what overwriting it
// does; once a passive checkpoint finds more than Options.walRestartBytes
// of frames in the WAL, a RESTART checkpoint follows it at once: it holds
// the writer off for the few frames the passive one left, and the writer
// then writes the WAL from its beginning again. The frames decide, not the
// file's size: the file keeps its size after a restart (up to
// journal_size_limit), and a RESTART at every tick would hold the writer
// off at every tick. A reader on an old snapshot (a long check or export)
// makes the RESTART give up at once: the checkpointer never waits for a
// lock.
func (s *Store) checkpointLoop() {
	t := time.NewTicker(s.opts.Checkpoint)
	defer t.Stop()
	var frameBytes int64
	if err := s.cdb.QueryRow("PRAGMA page_size").Scan(&frameBytes); err != nil {
		frameBytes = 4096
	}
	frameBytes += 24 // each frame's header
	// restarted is the WAL's frames when the last RESTART completed: they
	// stay in it, all copied, until the writer starts it over.
	restarted := int64(-1)
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
		frames, _ := s.checkpoint("PASSIVE")
		if frames*frameBytes > s.opts.walRestartBytes && frames != restarted {
			if frames, done := s.checkpoint("RESTART"); done {
				restarted = frames
			}
		}
	}
}

// checkpoint runs a checkpoint of mode, and returns the frames it found in
// the WAL (0 if it failed) and whether it completed. It runs with
// synchronous=FULL: it syncs the database file before the WAL is reused.
// Busy is normal under load.
func (s *Store) checkpoint(mode string) (frames int64, done bool) {
	var busy, copied int64
	err := s.cdb.QueryRowContext(context.Background(), "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &frames, &copied)
	if err != nil {
		if !isBusy(err) {
			s.log.Warn("wal checkpoint", "mode", mode, "err", err)
		}
		frames, busy = 0, 1
	}
	if s.opts.checkpointed != nil {
		s.opts.checkpointed(mode, frames)
	}
	return frames, busy == 0
}
