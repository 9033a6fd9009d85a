package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"os"

	"liminald"
	"liminald/conversation"
	"liminald/internal/offline"
)

// Progress is told how far a long offline operation got: done of total
// units (events). It may be nil.
type Progress = offline.Progress

// Report is what Check found.
type Report = offline.Report

// openExisting opens the database at path for reading: it must exist and be
// of a schema version this liminald knows. It works beside a running daemon.
func openExisting(path string) (*sql.DB, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	db, err := sql.Open("sqlite", dsn(path, "query_only(1)"))
	if err != nil {
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	var version int
	if err := db.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
		db.Close()
		return nil, fmt.Errorf("open database %s: %w", path, err)
	}
	if version != liminald.SchemaVersion {
		db.Close()
		if version > liminald.SchemaVersion {
			return nil, fmt.Errorf("open database %s: %w: its schema is version %d, this liminald knows up to version %d", path, ErrNewerSchema, version, liminald.SchemaVersion)
		}
		if version > 0 {
			return nil, fmt.Errorf("open database %s: its schema is version %d, older than this liminald's %d: start liminald serve on it once to migrate it", path, version, liminald.SchemaVersion)
		}
		return nil, fmt.Errorf("open database %s: not a liminald database (schema version %d)", path, version)
	}
	return db, nil
}

// Check verifies the database at path: SQLite's integrity check, every
// conversation's seqs contiguous from 0, every event one the write rules
// would append, and every state row (conversations, messages, steps,
// totals) equal to the replay of the events. It reads one consistent
// snapshot and works beside a running daemon. Problems go into the report;
// the error is for a database that cannot be read.
func Check(ctx context.Context, path string, progress Progress) (*Report, error) {
	db, err := openExisting(path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	// One read transaction: one snapshot of the whole database.
	tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	defer tx.Rollback()
	r := &Report{}
	if err := checkIntegrity(ctx, tx, r); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	if err := checkConversations(ctx, tx, r, progress); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	var t, horizon totals
	if err := tx.QueryRowContext(ctx, `SELECT conversations, messages, events, tombstones, forgotten_before FROM totals WHERE id = 1`).
		Scan(&t.conversations, &t.messages, &t.events, &t.tombstones, scanHorizon{&t.horizon}); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	if err := tx.QueryRowContext(ctx, `SELECT max(forgotten_before) FROM conversations`).Scan(scanHorizon{&horizon.horizon}); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	want := totals{conversations: r.Conversations, messages: r.Messages, events: r.Events, tombstones: r.Tombstones, horizon: horizon.horizon}
	if t != want {
		r.Problem("totals row is %+v, the log and the tombstones give %+v", t, want)
	}
	return r, nil
}

func checkIntegrity(ctx context.Context, tx *sql.Tx, r *Report) error {
	rows, err := tx.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			return err
		}
		if line != "ok" {
			r.Problem("integrity: %s", line)
		}
	}
	return rows.Err()
}

// checkConversations replays each conversation's events and compares the
// replay with the conversation's state rows (see
// offline.CheckConversations).
func checkConversations(ctx context.Context, tx *sql.Tx, r *Report, progress Progress) error {
	k := checker{ctx, tx}
	return offline.CheckConversations(ctx, offline.Tables{Snapshot: snapshotOf(ctx, tx), Replay: k.replay, Messages: k.messages,
		StepsSQL: `SELECT message_id, step_index, seq FROM steps WHERE conversation_id = ?`}, progress, r)
}

// checker reads one conversation's rows for a check, in the snapshot of
// tx: its events and tombstones (replay), its messages.
type checker struct {
	ctx context.Context
	tx  *sql.Tx
}

// replay replays the events that remain of conversation id
// and its tombstones (see offline.Replay).
func (k checker) replay(c offline.Conversation, r *Report) (*conversation.State, error) {
	ctx, tx, id, sum := k.ctx, k.tx, c.ID, c.Sum
	rows, err := tx.QueryContext(ctx, `SELECT `+eventColumns+` FROM events WHERE conversation_id = ? ORDER BY seq`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	tombs, err := tx.QueryContext(ctx, `SELECT message_id, last_ts, last_seq, attempts, fingerprint FROM messages
		WHERE conversation_id = ? AND compacted = 1 ORDER BY last_seq`, id)
	if err != nil {
		return nil, err
	}
	defer tombs.Close()
	nextEvent := func() (*conversation.Event, error) {
		if !rows.Next() {
			return nil, rows.Err()
		}
		e, err := scanEvent(rows, sum.Name)
		return &e, err
	}
	nextTomb := func() (*conversation.Tombstone, error) {
		if !tombs.Next() {
			return nil, tombs.Err()
		}
		t := &conversation.Tombstone{}
		var fingerprint sql.NullString
		err := tombs.Scan(&t.MessageID, &t.FinishedAt, &t.Seq, &t.Attempts, &fingerprint)
		t.Fingerprint = fingerprint.String
		return t, err
	}
	return offline.Replay(sum, nextEvent, nextTomb, r)
}

func (k checker) messages(c offline.Conversation, s *conversation.State, r *Report) error {
	ctx, tx, conv := k.ctx, k.tx, c.ID
	rows, err := tx.QueryContext(ctx, `SELECT message_id FROM messages WHERE conversation_id = ?`, conv)
	if err != nil {
		return err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return err
		}
		ids = append(ids, id)
	}
	rows.Close()
	sel, err := tx.PrepareContext(ctx, selMessageSQL)
	if err != nil {
		return err
	}
	defer sel.Close()
	return offline.CompareMessages(s, ids, func(id string) (*conversation.Message, error) {
		return scanMessage(sel.QueryRowContext(ctx, conv, id), id)
	}, r)
}
