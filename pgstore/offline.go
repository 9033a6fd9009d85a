package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"liminald/conversation"
	"liminald/internal/offline"
)

// The offline tools (SPEC §10: check, export, import) on a database that
// daemons may be serving: check and export read one snapshot (a read-only
// REPEATABLE READ transaction), which never waits for the writers nor
// holds them up; import writes through a Store, as a daemon does.

// Progress is told how far a long offline operation got: done of total
// units (events). It may be nil.
type Progress = offline.Progress

// Report is what Check found.
type Report = offline.Report

// ImportError is a line that Import refused.
type ImportError = offline.ImportError

// snapshot connects to the liminald database at url, which must exist and
// be of the schema version this liminald knows, and begins a read-only
// transaction on one snapshot of it. what names the operation in errors.
// Close the connection when done; the transaction ends with it.
func snapshot(ctx context.Context, url, what string) (*pgx.Conn, pgx.Tx, error) {
	cfg, err := pgxpool.ParseConfig(url) // as Open parses it: pool_max_conns and the like are the pool's
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, unavailable("connect", err))
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err == nil {
		err = schemaKnown(ctx, tx)
	}
	if err != nil {
		conn.Close(context.Background())
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	return conn, tx, nil
}

// schemaKnown refuses a database with no liminald schema, or one of
// another version than this liminald's.
func schemaKnown(ctx context.Context, tx pgx.Tx) error {
	var version *int
	err := tx.QueryRow(ctx, `SELECT (SELECT version FROM liminald_schema WHERE id = 1)
		WHERE to_regclass('liminald_schema') IS NOT NULL`).Scan(&version)
	switch {
	case errors.Is(err, pgx.ErrNoRows) || err == nil && version == nil:
		return errors.New("not a liminald database (it has no liminald_schema): a daemon creates the schema when it first opens the database")
	case err != nil:
		return unavailable("read schema version", err)
	case *version > SchemaVersion:
		return fmt.Errorf("%w: its schema is version %d, this liminald knows up to version %d; upgrade liminald", ErrNewerSchema, *version, SchemaVersion)
	case *version < SchemaVersion:
		return fmt.Errorf("its schema is version %d, older than this liminald's %d: start liminald serve on it once to migrate it", *version, SchemaVersion)
	}
	return nil
}

// snapshotOf is how the offline tools read the snapshot of tx.
func snapshotOf(ctx context.Context, tx pgx.Tx) offline.Snapshot {
	return offline.Snapshot{
		Query: func(query string, args ...any) (offline.Rows, func(), error) {
			rows, err := tx.Query(ctx, query, args...)
			if err != nil {
				return nil, nil, err
			}
			return rows, rows.Close, nil
		},
		Horizon: func(h *conversation.Horizon) any { return scanHorizon{h} },
	}
}

// Export writes the database at url to w as JSON lines, as the SQLite
// store's Export does (the line format is package offline's): a header
// line for each conversation that compacted messages or has a horizon,
// every event in pos order, then a line for each tombstone, in
// (conversation, seq) order. It reads one snapshot, beside the daemons
// that serve the database. Returns the number of events written.
func Export(ctx context.Context, url string, w io.Writer, progress Progress) (int64, error) {
	conn, tx, err := snapshot(ctx, url, "export")
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.Background())
	n, err := export(ctx, tx, w, progress)
	if err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	return n, nil
}

func export(ctx context.Context, tx pgx.Tx, w io.Writer, progress Progress) (int64, error) {
	n, err := offline.Export(w, offline.Source{
		Snapshot:    snapshotOf(ctx, tx),
		ScanEvent:   func(row offline.Rows, more ...any) (conversation.Event, error) { return scanEvent(row, "", more...) },
		ScanMessage: func(row offline.Rows, first ...any) (*conversation.Message, error) { return scanMessage(row, first...) },
		EventsSQL:   `SELECT ` + eventColumns + `, c.name FROM events e JOIN conversations c ON c.id = e.conversation_id ORDER BY e.pos`,
		TombstonesSQL: `SELECT c.name, m.message_id, ` + mColumns + ` FROM messages m
			JOIN conversations c ON c.id = m.conversation_id WHERE m.compacted ORDER BY c.name, m.last_seq`,
	}, progress)
	return n, err
}

// Import appends the lines read from r, as Export writes them, to the
// store, through its writer, as the SQLite store's Import does (see
// offline.Import for what it takes): events keep their conversation, seq,
// ts and content, and get positions anew, in the order of the input. The
// daemons serving the database may write meanwhile: an event of the input
// that is not the next of its conversation any more is refused, like any
// write the rules refuse. Returns the number of events appended, and an
// *ImportError naming the first line refused; the lines before it stay.
func (s *Store) Import(ctx context.Context, r io.Reader, progress Progress) (int64, error) {
	return offline.Import(ctx, r, progress, func(ctx context.Context, items []*offline.Item) {
		offline.WriteAll(ctx, items, func(it *offline.Item, then func(conversation.Outcome, error)) *request {
			req := &request{cmd: conversation.Command{Conversation: it.Conversation}, then: then}
			switch it.Kind {
			case offline.KindEvent:
				req.cmd, req.imported, req.ts = it.Command, true, it.Event.TS
			case offline.KindHeader:
				req.maint = &maintenance{header: &it.Header}
			case offline.KindTombstone:
				req.cmd.MessageID = it.Tombstone.MessageID
				req.maint = &maintenance{tomb: &it.Tombstone}
			}
			return req
		}, s.enqueue)
	})
}

// Check verifies the database at url as the SQLite store's Check does,
// but for SQLite's integrity check: every conversation's seqs contiguous
// but for compacted messages, every event one the write rules would
// append, every state row (conversations, messages, steps) equal to the
// replay of the remaining events and the tombstones, the totals in
// positions equal to what they count, and positions' next above every
// event's pos. It reads one snapshot, beside the daemons that serve the
// database. Problems go into the report; the error is for a database that
// cannot be read.
func Check(ctx context.Context, url string, progress Progress) (*Report, error) {
	conn, tx, err := snapshot(ctx, url, "check")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	r := &Report{}
	if err := check(ctx, tx, r, progress); err != nil {
		return nil, fmt.Errorf("check: %w", unavailable("read", err))
	}
	return r, nil
}

func check(ctx context.Context, tx pgx.Tx, r *Report, progress Progress) error {
	k := checker{ctx, tx}
	err := offline.CheckConversations(ctx, offline.Tables{Snapshot: snapshotOf(ctx, tx), Replay: k.replay, Messages: k.messages,
		StepsSQL: `SELECT message_id, step_index, seq FROM steps WHERE conversation_id = $1`}, progress, r)
	if err != nil {
		return err
	}
	var t, want totals
	var next, maxPos int64
	if err := tx.QueryRow(ctx, `SELECT next, conversations, messages, events, tombstones, forgotten_before,
		(SELECT coalesce(max(pos), 0) FROM events), (SELECT max(forgotten_before) FROM conversations) FROM positions WHERE id = 1`).
		Scan(&next, &t.conversations, &t.messages, &t.events, &t.tombstones, scanHorizon{&t.horizon}, &maxPos, scanHorizon{&want.horizon}); err != nil {
		return err
	}
	want.conversations, want.messages, want.events, want.tombstones = r.Conversations, r.Messages, r.Events, r.Tombstones
	if t != want {
		r.Problem("totals in positions are %+v, the log and the tombstones give %+v", t, want)
	}
	if next <= maxPos {
		r.Problem("positions' next is %d, not above the highest pos of an event, %d", next, maxPos)
	}
	return nil
}

// checker reads one conversation's rows for a check, in the snapshot of
// tx: its events and tombstones (replay), its messages.
type checker struct {
	ctx context.Context
	tx  pgx.Tx
}

// replay replays the events that remain of conversation id
// and its tombstones (see offline.Replay). The tombstones are read first:
// a connection runs one query at a time.
func (k checker) replay(c offline.Conversation, r *Report) (*conversation.State, error) {
	ctx, tx, id, sum := k.ctx, k.tx, c.ID, c.Sum
	rows, _ := tx.Query(ctx, `SELECT message_id, last_ts, last_seq, attempts, fingerprint FROM messages
		WHERE conversation_id = $1 AND compacted ORDER BY last_seq`, id)
	tombs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (conversation.Tombstone, error) {
		var t conversation.Tombstone
		var fingerprint []byte
		err := row.Scan(&t.MessageID, &t.FinishedAt, &t.Seq, &t.Attempts, &fingerprint)
		t.Fingerprint = string(fingerprint)
		return t, err
	})
	if err != nil {
		return nil, err
	}
	nextTomb := func() (*conversation.Tombstone, error) {
		if len(tombs) == 0 {
			return nil, nil
		}
		t := &tombs[0]
		tombs = tombs[1:]
		return t, nil
	}
	events, err := tx.Query(ctx, `SELECT `+eventColumns+` FROM events WHERE conversation_id = $1 ORDER BY seq`, id)
	if err != nil {
		return nil, err
	}
	defer events.Close()
	nextEvent := func() (*conversation.Event, error) {
		if !events.Next() {
			return nil, events.Err()
		}
		e, err := scanEvent(events, sum.Name)
		return &e, err
	}
	s, err := offline.Replay(sum, nextEvent, nextTomb, r)
	events.Close() // the replay may stop before the end
	return s, err
}

func (k checker) messages(c offline.Conversation, s *conversation.State, r *Report) error {
	ctx, tx, conv := k.ctx, k.tx, c.ID
	rows, err := tx.Query(ctx, `SELECT message_id, `+messageColumns+` FROM messages WHERE conversation_id = $1`, conv)
	if err != nil {
		return err
	}
	defer rows.Close()
	stored := make(map[string]*conversation.Message)
	var ids []string
	for rows.Next() {
		var id string
		m, err := scanMessage(rows, &id)
		if err != nil {
			return err
		}
		stored[id] = m
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return offline.CompareMessages(s, ids, func(id string) (*conversation.Message, error) { return stored[id], nil }, r)
}
