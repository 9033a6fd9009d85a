package main

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteBusyTimeout is how long a client waits for the write lock before
// its op fails.
const sqliteBusyTimeout = 10 * time.Second

// sqliteSchema is the "no daemon" peer's schema: the event log, each
// conversation's next seq, and the state a decision needs, updated in the
// transaction that appends.
const sqliteSchema = `
CREATE TABLE IF NOT EXISTS conversations (
	name     TEXT PRIMARY KEY,
	next_seq INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
	conversation TEXT NOT NULL,
	seq          INTEGER NOT NULL,
	type         TEXT NOT NULL,
	message_id   TEXT NOT NULL,
	step_index   INTEGER,
	output       BLOB,
	received_at  INTEGER,
	ts           INTEGER NOT NULL,
	PRIMARY KEY (conversation, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
	conversation TEXT NOT NULL,
	message_id   TEXT NOT NULL,
	status       TEXT NOT NULL, -- received, in_progress, finished
	last_step    INTEGER,       -- the highest completed step, NULL if none
	PRIMARY KEY (conversation, message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS steps (
	conversation TEXT NOT NULL,
	message_id   TEXT NOT NULL,
	step_index   INTEGER NOT NULL,
	output       BLOB NOT NULL,
	PRIMARY KEY (conversation, message_id, step_index)
) WITHOUT ROWID;
`

// sqliteSystem is the "no daemon" peer: every client opens the SQLite file
// itself (WAL, synchronous=FULL) and each op is one BEGIN IMMEDIATE
// transaction. In the benchmark each client is a process of its own (see
// worker.go); Dial gives an in-process client, as the conformance test and
// the preload use.
type sqliteSystem struct {
	path string

	mu    sync.Mutex
	usage Usage // of the worker processes, added by addWorkers
}

// newSQLite returns the "no daemon" SQLite peer.
func newSQLite() System { return &sqliteSystem{} }

func (s *sqliteSystem) Name() string { return "sqlite" }

// Start creates the database and its schema in dir.
func (s *sqliteSystem) Start(ctx context.Context, dir string) error {
	s.path = filepath.Join(dir, "sqlite.db")
	db, err := openSQLite(s.path)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, sqliteSchema); err != nil {
		return fmt.Errorf("create sqlite schema: %w", err)
	}
	return nil
}

// Dial opens one connection to the database.
func (s *sqliteSystem) Dial(ctx context.Context) (Client, error) {
	if s.path == "" {
		return nil, errors.New("sqlite: not started")
	}
	return dialSQLite(ctx, s.path)
}

// Usage reports the CPU time of the worker processes so far (their load
// generation included) and the largest sum of their peak RSS over a point.
func (s *sqliteSystem) Usage() (Usage, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.usage, nil
}

// addWorkers adds the usage of one point's worker processes.
func (s *sqliteSystem) addWorkers(u Usage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.usage.CPUSeconds += u.CPUSeconds
	s.usage.PeakRSS = max(s.usage.PeakRSS, u.PeakRSS)
}

// Stop does nothing: there is no server.
func (s *sqliteSystem) Stop() error { return nil }

// Version is the SQLite library's version.
func (s *sqliteSystem) Version() string {
	if s.path == "" {
		return "unknown"
	}
	db, err := openSQLite(s.path)
	if err != nil {
		return "unknown"
	}
	defer db.Close()
	var v string
	if db.QueryRow(`SELECT sqlite_version()`).Scan(&v) != nil {
		return "unknown"
	}
	return "SQLite " + v + " (modernc.org/sqlite)"
}

// Settings describes how the clients use the database.
func (s *sqliteSystem) Settings() string {
	return fmt.Sprintf("no server: each client is its own process opening the file with modernc.org/sqlite; "+
		"journal_mode=WAL, synchronous=FULL, busy_timeout=%s (then BEGIN again); each op is one BEGIN IMMEDIATE transaction "+
		"(decide: one read-only SELECT)", sqliteBusyTimeout)
}

// openSQLite opens the database at path with one connection: WAL,
// synchronous=FULL, and transactions that take the write lock at BEGIN.
func openSQLite(path string) (*sql.DB, error) {
	q := url.Values{}
	for _, p := range []string{
		fmt.Sprintf("busy_timeout(%d)", sqliteBusyTimeout.Milliseconds()),
		"journal_mode(WAL)",
		"synchronous(FULL)",
	} {
		q.Add("_pragma", p)
	}
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	return db, nil
}

// The statements of a sqliteClient.
const (
	sqlMessage     = `SELECT status, last_step FROM messages WHERE conversation = ? AND message_id = ?`
	sqlStep        = `SELECT output FROM steps WHERE conversation = ? AND message_id = ? AND step_index = ?`
	sqlNextSeq     = `INSERT INTO conversations (name, next_seq) VALUES (?, 1) ON CONFLICT (name) DO UPDATE SET next_seq = next_seq + 1 RETURNING next_seq - 1`
	sqlEvent       = `INSERT INTO events (conversation, seq, type, message_id, step_index, output, received_at, ts) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`
	sqlNewMessage  = `INSERT INTO messages (conversation, message_id, status) VALUES (?, ?, 'received')`
	sqlSetStatus   = `UPDATE messages SET status = ? WHERE conversation = ? AND message_id = ?`
	sqlNewStep     = `INSERT INTO steps (conversation, message_id, step_index, output) VALUES (?, ?, ?, ?)`
	sqlSetLastStep = `UPDATE messages SET last_step = max(coalesce(last_step, -1), ?) WHERE conversation = ? AND message_id = ?`
)

// sqliteClient is one connection to the database; its ops follow SPEC §2.
type sqliteClient struct {
	db    *sql.DB
	stmts map[string]*sql.Stmt
}

// dialSQLite opens a client of the database at path, which Start created.
func dialSQLite(ctx context.Context, path string) (*sqliteClient, error) {
	db, err := openSQLite(path)
	if err != nil {
		return nil, err
	}
	c := &sqliteClient{db: db, stmts: map[string]*sql.Stmt{}}
	for _, q := range []string{sqlMessage, sqlStep, sqlNextSeq, sqlEvent, sqlNewMessage, sqlSetStatus, sqlNewStep, sqlSetLastStep} {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("sqlite: prepare: %w", err)
		}
		c.stmts[q] = st
	}
	return c, nil
}

func (c *sqliteClient) Close() error { return c.db.Close() }

// sqliteTx is one op's transaction.
type sqliteTx struct {
	ctx context.Context
	c   *sqliteClient
	tx  *sql.Tx
}

func (t *sqliteTx) exec(q string, args ...any) error {
	_, err := t.tx.StmtContext(t.ctx, t.c.stmts[q]).ExecContext(t.ctx, args...)
	return err
}

func (t *sqliteTx) queryRow(q string, args ...any) *sql.Row {
	return t.tx.StmtContext(t.ctx, t.c.stmts[q]).QueryRowContext(t.ctx, args...)
}

// message returns the status and last step (-1: none) of a message; status
// "" when it was never received.
func (t *sqliteTx) message(conv, msg string) (status string, lastStep int64, err error) {
	var last sql.NullInt64
	err = t.queryRow(sqlMessage, conv, msg).Scan(&status, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return "", -1, nil
	}
	if !last.Valid {
		last.Int64 = -1
	}
	return status, last.Int64, err
}

// appendEvent appends an event at the conversation's next seq.
func (t *sqliteTx) appendEvent(conv, typ, msg string, stepIndex, output, receivedAt any) (int64, error) {
	var seq int64
	if err := t.queryRow(sqlNextSeq, conv).Scan(&seq); err != nil {
		return 0, err
	}
	return seq, t.exec(sqlEvent, conv, seq, typ, msg, stepIndex, output, receivedAt, time.Now().UnixMilli())
}

// inTx runs f in one BEGIN IMMEDIATE transaction and commits it (an
// fsync'd commit when f wrote), or rolls it back when f fails.
func (c *sqliteClient) inTx(ctx context.Context, f func(t *sqliteTx) error) error {
	tx, err := c.db.BeginTx(ctx, nil)
	// With hundreds of processes waiting for the write lock, SQLite's busy
	// handler is not fair: one may wait past busy_timeout. It tries again,
	// as an application would; the op's latency counts every wait.
	for isBusy(err) && ctx.Err() == nil {
		tx, err = c.db.BeginTx(ctx, nil)
	}
	if err != nil {
		return fmt.Errorf("sqlite: begin: %w", err)
	}
	if err := f(&sqliteTx{ctx: ctx, c: c, tx: tx}); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite: commit: %w", err)
	}
	return nil
}

// isBusy reports whether err is SQLite's "database is locked".
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// decide is the redelivery decision of SPEC §1 for a message of the given
// status and last step.
func decide(status string, lastStep int64) Decision {
	switch status {
	case "finished":
		return Decision{Action: "skip"}
	case "":
		return Decision{Action: "start"}
	}
	return Decision{Action: "resume", ResumeFrom: uint32(lastStep + 1)}
}

// Receive decides and, for a new message, appends its message_received.
func (c *sqliteClient) Receive(ctx context.Context, conv, msg string, receivedAt int64) (Decision, error) {
	var d Decision
	err := c.inTx(ctx, func(t *sqliteTx) error {
		status, last, err := t.message(conv, msg)
		if err != nil {
			return err
		}
		d = decide(status, last)
		if d.Action != "start" {
			return nil
		}
		if d.Seq, err = t.appendEvent(conv, "message_received", msg, nil, nil, receivedAt); err != nil {
			return err
		}
		return t.exec(sqlNewMessage, conv, msg)
	})
	return d, err
}

// Decide decides with one read, appending nothing.
func (c *sqliteClient) Decide(ctx context.Context, conv, msg string) (Decision, error) {
	var status string
	var last sql.NullInt64
	err := c.stmts[sqlMessage].QueryRowContext(ctx, conv, msg).Scan(&status, &last)
	if errors.Is(err, sql.ErrNoRows) {
		return decide("", -1), nil
	}
	if err != nil {
		return Decision{}, fmt.Errorf("sqlite: decide: %w", err)
	}
	if !last.Valid {
		last.Int64 = -1
	}
	return decide(status, last.Int64), nil
}

// writable returns the status of the message a write names, or
// ErrUnknownMessage if it was never received, or ErrAlreadyFinished if it
// finished and the write is not a finish.
func (t *sqliteTx) writable(conv, msg string, finish bool) (string, error) {
	status, _, err := t.message(conv, msg)
	switch {
	case err != nil:
		return "", err
	case status == "":
		return "", ErrUnknownMessage
	case status == "finished" && !finish:
		return "", ErrAlreadyFinished
	}
	return status, nil
}

// Start appends processing_started unless the message is in progress.
// Returns ErrUnknownMessage or ErrAlreadyFinished.
func (c *sqliteClient) Start(ctx context.Context, conv, msg string) error {
	return c.inTx(ctx, func(t *sqliteTx) error {
		status, err := t.writable(conv, msg, false)
		if err != nil || status == "in_progress" {
			return err // an in-progress message makes a duplicate
		}
		if _, err := t.appendEvent(conv, "processing_started", msg, nil, nil, nil); err != nil {
			return err
		}
		return t.exec(sqlSetStatus, "in_progress", conv, msg)
	})
}

// Step appends step_completed unless the step completed with the same
// output. Returns ErrUnknownMessage, ErrAlreadyFinished or ErrStepConflict.
func (c *sqliteClient) Step(ctx context.Context, conv, msg string, index uint32, output []byte) error {
	if output == nil {
		output = []byte{}
	}
	return c.inTx(ctx, func(t *sqliteTx) error {
		if _, err := t.writable(conv, msg, false); err != nil {
			return err
		}
		var prior []byte
		err := t.queryRow(sqlStep, conv, msg, index).Scan(&prior)
		switch {
		case err == nil && bytes.Equal(prior, output):
			return nil // a duplicate
		case err == nil:
			return ErrStepConflict
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if _, err := t.appendEvent(conv, "step_completed", msg, index, output, nil); err != nil {
			return err
		}
		if err := t.exec(sqlNewStep, conv, msg, index, output); err != nil {
			return err
		}
		return t.exec(sqlSetLastStep, index, conv, msg)
	})
}

// Finish appends processing_finished unless the message is finished.
// Returns ErrUnknownMessage.
func (c *sqliteClient) Finish(ctx context.Context, conv, msg string) error {
	return c.inTx(ctx, func(t *sqliteTx) error {
		status, err := t.writable(conv, msg, true)
		if err != nil || status == "finished" {
			return err // a finished message makes a duplicate
		}
		if _, err := t.appendEvent(conv, "processing_finished", msg, nil, nil, nil); err != nil {
			return err
		}
		return t.exec(sqlSetStatus, "finished", conv, msg)
	})
}
