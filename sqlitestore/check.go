package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"os"

	"liminald"
	"liminald/conversation"
)

// Progress is told how far a long offline operation got: done of total
// units (events). It may be nil.
type Progress func(done, total int64)

// Report is what Check found.
type Report struct {
	Conversations int64
	Messages      int64 // tombstones included
	Events        int64
	Tombstones    int64
	Problems      []string // empty when the database is sound
}

// maxProblems bounds the problems a Report lists.
const maxProblems = 100

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

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
		r.problem("totals row is %+v, the log and the tombstones give %+v", t, want)
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
			r.problem("integrity: %s", line)
		}
	}
	return rows.Err()
}

// checkConversations replays each conversation's events, in one pass over
// the log in (conversation, seq) order, and compares the replay with the
// conversation's state rows.
func checkConversations(ctx context.Context, tx *sql.Tx, r *Report, progress Progress) error {
	var total int64
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM events").Scan(&total); err != nil {
		return err
	}
	var orphans int64
	if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM events WHERE conversation_id NOT IN (SELECT id FROM conversations)`).Scan(&orphans); err != nil {
		return err
	}
	if orphans > 0 {
		r.problem("%d events belong to no conversation", orphans)
	}
	convs, err := tx.QueryContext(ctx, `SELECT id, name, next_seq, received, in_progress, errored, finished, compacted, forgotten_before
		FROM conversations ORDER BY id`)
	if err != nil {
		return err
	}
	var list []struct {
		id  int64
		sum conversation.Summary
	}
	for convs.Next() {
		var c struct {
			id  int64
			sum conversation.Summary
		}
		if err := convs.Scan(&c.id, &c.sum.Name, &c.sum.Next, &c.sum.Counts.Received, &c.sum.Counts.InProgress, &c.sum.Counts.Errored, &c.sum.Counts.Finished,
			&c.sum.Compacted, scanHorizon{&c.sum.Horizon}); err != nil {
			convs.Close()
			return err
		}
		list = append(list, c)
	}
	convs.Close()
	if err := convs.Err(); err != nil {
		return err
	}
	for _, c := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := replayConversation(ctx, tx, c.id, c.sum, r)
		if err != nil {
			return err
		}
		r.Conversations++
		r.Messages += int64(len(s.Messages))
		if progress != nil {
			progress(r.Events, total)
		}
		// Seqs are never reused: a conversation whose latest messages were
		// compacted keeps the next seq they left.
		if c.sum.Next != s.Next && !(s.Gaps && c.sum.Next > s.Next) || c.sum.Counts != s.Counts {
			r.problem("conversation %q: stored next_seq %d counts %+v, replay gives %d %+v", c.sum.Name, c.sum.Next, c.sum.Counts, s.Next, s.Counts)
		}
		if err := compareMessages(ctx, tx, c.id, s, r); err != nil {
			return err
		}
		if err := compareSteps(ctx, tx, c.id, s, r); err != nil {
			return err
		}
	}
	return nil
}

// replayConversation replays the events that remain of conversation id
// and its tombstones, merged in seq order (SPEC §8): a conversation that
// compacted messages may skip their seqs, and keeps its horizon. A log the
// rules refuse is a problem; the replay stops at the first refused event.
func replayConversation(ctx context.Context, tx *sql.Tx, id int64, sum conversation.Summary, r *Report) (*conversation.State, error) {
	name := sum.Name
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
	s := conversation.NewState(name)
	s.Gaps, s.Horizon = sum.Compacted > 0, sum.Horizon
	t, err := nextTomb()
	if err != nil {
		return nil, err
	}
	restore := func(before int64) error {
		for ; t != nil && t.Seq < before; t, err = nextTomb() {
			r.Tombstones++
			if !s.Gaps {
				r.problem("conversation %q: a tombstone of %q, but the conversation compacted nothing", name, t.MessageID)
			}
			if err := s.Restore(*t); err != nil {
				r.problem("conversation %q: %v", name, err)
			}
		}
		return err
	}
	for rows.Next() {
		e, err := scanEvent(rows, name)
		if err != nil {
			return nil, err
		}
		if err := restore(e.Seq); err != nil {
			return nil, err
		}
		if err := s.Apply(&e); err != nil {
			r.problem("conversation %q: %v", name, err)
			return s, nil
		}
		r.Events++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return s, restore(1 << 62)
}

func compareMessages(ctx context.Context, tx *sql.Tx, conv int64, s *conversation.State, r *Report) error {
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
	if len(ids) != len(s.Messages) {
		r.problem("conversation %q: %d message rows, replay gives %d messages", s.Name, len(ids), len(s.Messages))
	}
	sel, err := tx.PrepareContext(ctx, selMessageSQL)
	if err != nil {
		return err
	}
	defer sel.Close()
	for _, id := range ids {
		stored, err := scanMessage(sel.QueryRowContext(ctx, conv, id), id)
		if err != nil {
			return err
		}
		want := s.Messages[id]
		if want == nil {
			r.problem("conversation %q: message row %q has no message_received", s.Name, id)
			continue
		}
		if *stored != *want {
			r.problem("conversation %q: message %q stored as %+v, replay gives %+v", s.Name, id, *stored, *want)
		}
	}
	return nil
}

func compareSteps(ctx context.Context, tx *sql.Tx, conv int64, s *conversation.State, r *Report) error {
	rows, err := tx.QueryContext(ctx, `SELECT message_id, step_index, seq FROM steps WHERE conversation_id = ?`, conv)
	if err != nil {
		return err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var k conversation.StepKey
		var index, seq int64
		if err := rows.Scan(&k.MessageID, &index, &seq); err != nil {
			return err
		}
		k.Index = uint32(index)
		n++
		if want, ok := s.Steps[k]; !ok || want.Seq != seq {
			r.problem("conversation %q: step %q/%d stored at seq %d, replay gives %+v", s.Name, k.MessageID, k.Index, seq, want)
		}
	}
	if n != len(s.Steps) {
		r.problem("conversation %q: %d step rows, replay gives %d steps", s.Name, n, len(s.Steps))
	}
	return rows.Err()
}
