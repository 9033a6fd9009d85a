package offline

import (
	"context"

	"liminald/conversation"
)

// Replay replays the events that remain of conversation sum.Name and its
// tombstones, merged in seq order (SPEC §8): a conversation that compacted
// messages may skip their seqs, and keeps its horizon. nextEvent returns
// the conversation's events in seq order, nextTomb its tombstones in seq
// order, each nil at the end. A log the rules refuse is a problem of r;
// the replay stops at the first refused event. Counts the events and
// tombstones in r. The error is one of nextEvent or nextTomb.
func Replay(sum conversation.Summary, nextEvent func() (*conversation.Event, error), nextTomb func() (*conversation.Tombstone, error),
	r *Report) (*conversation.State, error) {
	name := sum.Name
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
				r.Problem("conversation %q: a tombstone of %q, but the conversation compacted nothing", name, t.MessageID)
			}
			if err := s.Restore(*t); err != nil {
				r.Problem("conversation %q: %v", name, err)
			}
		}
		return err
	}
	for {
		e, err := nextEvent()
		if err != nil {
			return nil, err
		}
		if e == nil {
			break
		}
		if err := restore(e.Seq); err != nil {
			return nil, err
		}
		if err := s.Apply(e); err != nil {
			r.Problem("conversation %q: %v", name, err)
			return s, nil
		}
		r.Events++
	}
	return s, restore(1 << 62)
}

// CompareConversation compares the stored summary of a conversation with
// its replay s. Seqs are never reused: a conversation whose latest
// messages were compacted keeps the next seq they left.
func CompareConversation(stored conversation.Summary, s *conversation.State, r *Report) {
	if stored.Next != s.Next && !(s.Gaps && stored.Next > s.Next) || stored.Counts != s.Counts {
		r.Problem("conversation %q: stored next_seq %d counts %+v, replay gives %d %+v", stored.Name, stored.Next, stored.Counts, s.Next, s.Counts)
	}
}

// CompareMessages compares the message rows of the conversation of s, ids
// (their message ids) and load (which reads one), with its replay s.
func CompareMessages(s *conversation.State, ids []string, load func(id string) (*conversation.Message, error), r *Report) error {
	if len(ids) != len(s.Messages) {
		r.Problem("conversation %q: %d message rows, replay gives %d messages", s.Name, len(ids), len(s.Messages))
	}
	for _, id := range ids {
		stored, err := load(id)
		if err != nil {
			return err
		}
		want := s.Messages[id]
		if want == nil {
			r.Problem("conversation %q: message row %q has no message_received", s.Name, id)
			continue
		}
		if *stored != *want {
			r.Problem("conversation %q: message %q stored as %+v, replay gives %+v", s.Name, id, *stored, *want)
		}
	}
	return nil
}

// CompareSteps compares the step rows of the conversation of s, rows of
// (message_id, step_index, seq), with its replay. The caller closes rows.
func CompareSteps(s *conversation.State, rows Rows, r *Report) error {
	n := 0
	err := Each(rows, func() error {
		var k conversation.StepKey
		var index, seq int64
		if err := rows.Scan(&k.MessageID, &index, &seq); err != nil {
			return err
		}
		k.Index = uint32(index)
		n++
		if want, ok := s.Steps[k]; !ok || want.Seq != seq {
			r.Problem("conversation %q: step %q/%d stored at seq %d, replay gives %+v", s.Name, k.MessageID, k.Index, seq, want)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if n != len(s.Steps) {
		r.Problem("conversation %q: %d step rows, replay gives %d steps", s.Name, n, len(s.Steps))
	}
	return nil
}

// Conversation is a conversation's row in a store: its id there and its
// stored summary.
type Conversation struct {
	ID  int64
	Sum conversation.Summary
}

// Tables is how a check reads one snapshot of a store, and the rows of
// one conversation there.
type Tables struct {
	Snapshot
	// Replay replays the conversation's remaining events and tombstones
	// (see Replay).
	Replay func(c Conversation, r *Report) (*conversation.State, error)
	// Messages compares the conversation's message rows with its replay s
	// (see CompareMessages).
	Messages func(c Conversation, s *conversation.State, r *Report) error
	// StepsSQL reads the step rows of the conversation whose id is its
	// one argument (see CompareSteps).
	StepsSQL string
}

// CheckConversations replays each conversation of the snapshot and
// compares the replay with the conversation's state rows, counting what
// it replays in r, and telling progress how many events it replayed.
// Events of no conversation are a problem. Stops at ctx's end.
func CheckConversations(ctx context.Context, t Tables, progress Progress, r *Report) error {
	var total, orphans int64
	if err := t.count(`SELECT count(*), (`+orphansSQL+`) FROM events`, &total, &orphans); err != nil {
		return err
	}
	if orphans > 0 {
		r.Problem("%d events belong to no conversation", orphans)
	}
	var list []Conversation
	err := t.each(conversationsSQL, func(rows Rows) error {
		var c Conversation
		s := &c.Sum
		if err := rows.Scan(&c.ID, &s.Name, &s.Next, &s.Counts.Received, &s.Counts.InProgress, &s.Counts.Errored, &s.Counts.Finished,
			&s.Compacted, t.Horizon(&s.Horizon)); err != nil {
			return err
		}
		list = append(list, c)
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range list {
		if err := ctx.Err(); err != nil {
			return err
		}
		s, err := t.Replay(c, r)
		if err != nil {
			return err
		}
		r.Conversations++
		r.Messages += int64(len(s.Messages))
		if progress != nil {
			progress(r.Events, total)
		}
		CompareConversation(c.Sum, s, r)
		if err := t.Messages(c, s, r); err != nil {
			return err
		}
		rows, done, err := t.Query(t.StepsSQL, c.ID)
		if err != nil {
			return err
		}
		err = CompareSteps(s, rows, r)
		done()
		if err != nil {
			return err
		}
	}
	return nil
}

// conversationsSQL reads every conversation's row, by id; orphansSQL
// counts the events of no conversation.
const (
	conversationsSQL = `SELECT id, name, next_seq, received, in_progress, errored, finished, compacted, forgotten_before
	FROM conversations ORDER BY id`
	orphansSQL = `SELECT count(*) FROM events WHERE conversation_id NOT IN (SELECT id FROM conversations)`
)
