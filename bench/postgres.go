package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"liminald/pgtest"
)

// postgresSchema is the PostgreSQL peer's schema and its ops. Each op is
// one PL/pgSQL function, called in a transaction of its own, that makes the
// decision and its append atomically. A write locks its conversation's row
// first, so that the writes of a conversation are serialized and each one
// decides on the committed state of the ones before it (READ COMMITTED
// takes a new snapshot for each statement of a VOLATILE function; no
// serialization failure can happen). A rejected write raises an error with
// one of the SQLSTATEs of postgresErrors, which rolls it back.
//
// Event and message codes are those of schema.sql: type 1 message_received,
// 2 processing_started, 3 step_completed, 4 processing_finished; status
// 1 received, 2 in_progress, 4 finished.
const postgresSchema = `
CREATE TABLE IF NOT EXISTS conversations (
    name     text   PRIMARY KEY,
    next_seq bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    conversation text     NOT NULL,
    seq          bigint   NOT NULL,
    ts           bigint   NOT NULL, -- epoch ms
    type         smallint NOT NULL,
    message_id   text     NOT NULL,
    received_at  bigint,
    step_index   bigint,
    output       bytea,
    PRIMARY KEY (conversation, seq)
);
CREATE TABLE IF NOT EXISTS messages (
    conversation text     NOT NULL,
    message_id   text     NOT NULL,
    status       smallint NOT NULL,
    received_at  bigint   NOT NULL,
    received_seq bigint   NOT NULL,
    last_step    bigint, -- the highest completed step index, NULL if none
    PRIMARY KEY (conversation, message_id)
);
CREATE TABLE IF NOT EXISTS steps (
    conversation text   NOT NULL,
    message_id   text   NOT NULL,
    step_index   bigint NOT NULL,
    output       bytea  NOT NULL,
    PRIMARY KEY (conversation, message_id, step_index)
);

-- inbox_append appends an event at seq at_seq, which the caller read from
-- the conversation's locked row, and advances the conversation.
CREATE OR REPLACE FUNCTION inbox_append(conv text, at_seq bigint, kind integer, msg text,
    recv_at bigint DEFAULT NULL, idx bigint DEFAULT NULL, outp bytea DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO events (conversation, seq, ts, type, message_id, received_at, step_index, output)
    VALUES (conv, at_seq, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint,
            kind, msg, recv_at, idx, outp);
    UPDATE conversations SET next_seq = at_seq + 1 WHERE name = conv;
$$;

-- inbox_decide is the redelivery decision: n is resume_from with resume.
CREATE OR REPLACE FUNCTION inbox_decide(conv text, msg text, OUT action text, OUT n bigint)
LANGUAGE plpgsql AS $$
DECLARE
    st       smallint;
    max_step bigint;
BEGIN
    SELECT status, last_step INTO st, max_step FROM messages
     WHERE conversation = conv AND message_id = msg;
    IF NOT FOUND THEN
        action := 'start';
        n := 0;
    ELSIF st = 4 THEN
        action := 'skip';
        n := 0;
    ELSE
        action := 'resume';
        n := coalesce(max_step, -1) + 1;
    END IF;
END $$;

-- inbox_receive is the decision, appending message_received for a new
-- message: n is then its seq.
CREATE OR REPLACE FUNCTION inbox_receive(conv text, msg text, recv_at bigint, OUT action text, OUT n bigint)
LANGUAGE plpgsql AS $$
DECLARE
    nxt bigint;
BEGIN
    SELECT d.action, d.n INTO action, n FROM inbox_decide(conv, msg) d;
    IF action <> 'start' THEN
        RETURN;
    END IF;
    -- New so far: lock the conversation, making it if need be, and decide
    -- again, since a concurrent receive may have appended the message while
    -- this one waited for the lock.
    INSERT INTO conversations (name, next_seq) VALUES (conv, 0) ON CONFLICT (name) DO NOTHING;
    SELECT next_seq INTO nxt FROM conversations WHERE name = conv FOR UPDATE;
    SELECT d.action, d.n INTO action, n FROM inbox_decide(conv, msg) d;
    IF action <> 'start' THEN
        RETURN;
    END IF;
    INSERT INTO messages (conversation, message_id, status, received_at, received_seq)
    VALUES (conv, msg, 1, recv_at, nxt);
    PERFORM inbox_append(conv, nxt, 1, msg, recv_at);
    n := nxt;
END $$;

-- inbox_message locks the conversation and returns its next seq and the
-- message's status and highest step; it raises unknown_message for a
-- message never received and, unless finish_ok, already_finished for a
-- finished one.
CREATE OR REPLACE FUNCTION inbox_message(conv text, msg text, finish_ok boolean,
    OUT nxt bigint, OUT st smallint, OUT max_step bigint)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT next_seq INTO nxt FROM conversations WHERE name = conv FOR UPDATE;
    SELECT status, last_step INTO st, max_step FROM messages
     WHERE conversation = conv AND message_id = msg;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown_message' USING ERRCODE = 'LM001';
    END IF;
    IF st = 4 AND NOT finish_ok THEN
        RAISE EXCEPTION 'already_finished' USING ERRCODE = 'LM002';
    END IF;
END $$;

-- The writes return true when they append, false for a duplicate.
CREATE OR REPLACE FUNCTION inbox_start(conv text, msg text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    m record;
BEGIN
    SELECT * INTO m FROM inbox_message(conv, msg, false);
    IF m.st = 2 THEN
        RETURN false;
    END IF;
    UPDATE messages SET status = 2 WHERE conversation = conv AND message_id = msg;
    PERFORM inbox_append(conv, m.nxt, 2, msg);
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION inbox_step(conv text, msg text, idx bigint, outp bytea) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    m     record;
    prior bytea;
BEGIN
    SELECT * INTO m FROM inbox_message(conv, msg, false);
    SELECT output INTO prior FROM steps
     WHERE conversation = conv AND message_id = msg AND step_index = idx;
    IF FOUND THEN
        IF prior = outp THEN
            RETURN false;
        END IF;
        RAISE EXCEPTION 'step_conflict' USING ERRCODE = 'LM003';
    END IF;
    INSERT INTO steps (conversation, message_id, step_index, output) VALUES (conv, msg, idx, outp);
    UPDATE messages SET last_step = greatest(last_step, idx) WHERE conversation = conv AND message_id = msg;
    PERFORM inbox_append(conv, m.nxt, 3, msg, NULL, idx, outp);
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION inbox_finish(conv text, msg text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    m record;
BEGIN
    SELECT * INTO m FROM inbox_message(conv, msg, true);
    IF m.st = 4 THEN
        RETURN false;
    END IF;
    UPDATE messages SET status = 4 WHERE conversation = conv AND message_id = msg;
    PERFORM inbox_append(conv, m.nxt, 4, msg);
    RETURN true;
END $$;
`

// postgresErrors maps the SQLSTATEs the functions raise to the errors of
// SPEC §2.
var postgresErrors = map[string]error{
	"LM001": ErrUnknownMessage,
	"LM002": ErrAlreadyFinished,
	"LM003": ErrStepConflict,
}

// postgresStatements are the statements each client prepares, by name.
var postgresStatements = map[string]string{
	"receive": `SELECT action, n FROM inbox_receive($1, $2, $3)`,
	"decide":  `SELECT action, n FROM inbox_decide($1, $2)`,
	"start":   `SELECT inbox_start($1, $2)`,
	"step":    `SELECT inbox_step($1, $2, $3, $4)`,
	"finish":  `SELECT inbox_finish($1, $2)`,
}

// postgresSettings are the server's settings that matter for durability
// and for the benchmark; fsync, synchronous_commit and full_page_writes
// are the defaults, set so that the report can cite them.
var postgresSettings = []string{
	"fsync=on",
	"synchronous_commit=on",
	"full_page_writes=on",
	"max_connections=300",
}

// postgresSystem runs its own PostgreSQL server, reachable only on a unix
// socket, as the postgres user when run as root (the server refuses root).
type postgresSystem struct {
	socketDir string
	bare      bool // the server alone, without the peer's schema (for liminald on it)
	running
}

// newPostgres returns the PostgreSQL peer.
// SIGINT asks postgres for a fast shutdown: roll back open transactions,
// checkpoint, exit.
func newPostgres() System {
	return &postgresSystem{running: running{name: "postgres", quit: syscall.SIGINT}}
}

func (s *postgresSystem) Name() string { return "postgres" }

// Start makes a cluster in dir/pg (initdb, on the first start only), runs
// postgres on it, waits until it accepts connections and creates the
// schema (unless bare). The postgres user must be able to reach dir: Start makes dir
// itself searchable, its parents must already be.
func (s *postgresSystem) Start(ctx context.Context, dir string) error {
	s.socketDir = filepath.Join(dir, "pg")
	cmd, err := s.prepare(dir)
	if err != nil {
		return err
	}
	srv, err := startPeerServer(cmd, filepath.Join(dir, "postgres.log"))
	if err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	ping := func(ctx context.Context) error {
		conn, err := pgx.Connect(ctx, s.connString())
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	}
	if err := srv.waitReady(ctx, ping); err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	if s.bare {
		s.srv = srv
		return nil
	}
	if err := s.createSchema(ctx); err != nil {
		srv.kill()
		return err
	}
	s.srv = srv
	return nil
}

// prepare makes the cluster's directory in dir and the cluster itself if
// it is not there yet, and returns the command that runs the server. The
// pieces are liminald/pgtest's, which the daemon's tests run their
// clusters with.
func (s *postgresSystem) prepare(dir string) (*exec.Cmd, error) {
	bin, err := pgtest.BinDir()
	if err != nil {
		return nil, err
	}
	owner, err := pgtest.Owner()
	if err != nil {
		return nil, err
	}
	if err := checkSocketPath(filepath.Join(s.socketDir, ".s.PGSQL.5432")); err != nil {
		return nil, err
	}
	if err := postgresMkdir(dir, s.socketDir, owner); err != nil {
		return nil, err
	}
	data := filepath.Join(s.socketDir, "data")
	if _, err := os.Stat(filepath.Join(data, "PG_VERSION")); errors.Is(err, os.ErrNotExist) {
		if err := pgtest.Initdb(bin, data, owner); err != nil {
			return nil, err
		}
	}
	return pgtest.Command(bin, data, s.socketDir, owner, postgresSettings...), nil
}

// postgresMkdir makes dir searchable by everyone and makes base, owned by
// the cluster's owner, unless it is there already.
func postgresMkdir(dir, base string, owner *syscall.Credential) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if err := os.Chmod(dir, fi.Mode().Perm()|0o011); err != nil {
		return err
	}
	if _, err := os.Stat(base); err == nil {
		return nil
	}
	return pgtest.MakeDir(base, owner)
}

func (s *postgresSystem) connString() string {
	return "host=" + s.socketDir + " user=postgres dbname=postgres"
}

// url is the database's URL, as liminald serve --db takes it.
func (s *postgresSystem) url() string {
	return "postgres:///postgres?host=" + s.socketDir + "&user=postgres"
}

// createSchema creates the tables and functions; it is a no-op on a
// cluster that has them.
func (s *postgresSystem) createSchema(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, s.connString())
	if err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, postgresSchema); err != nil {
		return fmt.Errorf("postgres: create schema: %w", err)
	}
	return nil
}

// Dial opens one connection and prepares the ops' statements on it.
func (s *postgresSystem) Dial(ctx context.Context) (Client, error) {
	if s.srv == nil {
		return nil, errors.New("postgres: not started")
	}
	conn, err := pgx.Connect(ctx, s.connString())
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	for name, sql := range postgresStatements {
		if _, err := conn.Prepare(ctx, name, sql); err != nil {
			conn.Close(ctx)
			return nil, fmt.Errorf("postgres: prepare %s: %w", name, err)
		}
	}
	return &postgresClient{conn: conn}, nil
}

// Version is the server's version, as postgres --version prints it.
func (s *postgresSystem) Version() string {
	bin, err := pgtest.BinDir()
	if err != nil {
		return "unknown"
	}
	out, err := exec.Command(filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

// Settings describes how the server runs and how the clients use it.
func (s *postgresSystem) Settings() string {
	return "postgres on a unix socket only, " + strings.Join(postgresSettings, ", ") +
		", other settings default; one connection per client (pgx), each op one prepared call of a " +
		"PL/pgSQL function, in its own transaction, that locks the conversation's row, decides and appends"
}

// postgresClient is a Client over one PostgreSQL connection.
type postgresClient struct{ conn *pgx.Conn }

// postgresError maps the errors the functions raise to the errors of
// SPEC §2, keeping the others as they are.
func postgresError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		if e, ok := postgresErrors[pgErr.Code]; ok {
			return fmt.Errorf("%w: %v", e, err)
		}
	}
	return err
}

// decision runs the prepared statement name, which returns an action and
// a number: resume_from with resume, the seq of message_received with
// start from a receive.
func (c *postgresClient) decision(ctx context.Context, name string, args ...any) (Decision, error) {
	var action string
	var n int64
	if err := c.conn.QueryRow(ctx, name, args...).Scan(&action, &n); err != nil {
		return Decision{}, postgresError(err)
	}
	switch action {
	case "start":
		return Decision{Action: action, Seq: n}, nil
	case "resume":
		return Decision{Action: action, ResumeFrom: uint32(n)}, nil
	}
	return Decision{Action: action}, nil
}

func (c *postgresClient) Receive(ctx context.Context, conv, msg string, receivedAt int64) (Decision, error) {
	return c.decision(ctx, "receive", conv, msg, receivedAt)
}

func (c *postgresClient) Decide(ctx context.Context, conv, msg string) (Decision, error) {
	return c.decision(ctx, "decide", conv, msg)
}

func (c *postgresClient) Start(ctx context.Context, conv, msg string) error {
	_, err := c.conn.Exec(ctx, "start", conv, msg)
	return postgresError(err)
}

func (c *postgresClient) Step(ctx context.Context, conv, msg string, index uint32, output []byte) error {
	if output == nil {
		output = []byte{} // an empty output, not NULL
	}
	_, err := c.conn.Exec(ctx, "step", conv, msg, int64(index), output)
	return postgresError(err)
}

func (c *postgresClient) Finish(ctx context.Context, conv, msg string) error {
	_, err := c.conn.Exec(ctx, "finish", conv, msg)
	return postgresError(err)
}

func (c *postgresClient) Close() error { return c.conn.Close(context.Background()) }
