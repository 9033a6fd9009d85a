package sqlitestore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"liminald/conversation"
)

// fillUntilUnavailable writes lifecycles with 4 KiB step outputs until a
// write gets conversation.ErrUnavailable, and returns the acknowledged
// appends by conversation seq and the write that failed.
func fillUntilUnavailable(t *testing.T, s *Store) (map[int64]conversation.Command, conversation.Command) {
	t.Helper()
	acked := map[int64]conversation.Command{}
	big := strings.Repeat("x", 4096)
	for i := 0; i < 100000; i++ {
		for _, c := range lifecycle("c", fmt.Sprintf("m%d", i)) {
			if c.Op == conversation.OpStep {
				c.Output = []byte(big + string(c.Output))
			}
			o, err := s.Write(context.Background(), c)
			if errors.Is(err, conversation.ErrUnavailable) {
				return acked, c
			}
			if err != nil {
				t.Fatalf("Write(%v %s): %v", c.Op, c.MessageID, err)
			}
			if o.Append {
				acked[o.Seq] = c
			}
		}
	}
	t.Fatal("the disk never filled")
	return nil, conversation.Command{}
}

// verifyLog checks that every acknowledged append is in the log of "c".
func verifyLog(t *testing.T, s *Store, acked map[int64]conversation.Command) {
	t.Helper()
	events := mustEvents(t, s, "c")
	for seq, c := range acked {
		if seq >= int64(len(events)) {
			t.Fatalf("acknowledged seq %d lost: the log has %d events", seq, len(events))
		}
		if e := events[seq]; e.MessageID != c.MessageID || conversation.Op(e.Type) != c.Op || string(e.Output) != string(c.Output) {
			t.Fatalf("seq %d: stored %v of %s, acknowledged %v of %s", seq, e.Type, e.MessageID, c.Op, c.MessageID)
		}
	}
}

// TestStore_MaxPageCount fills the database to its page limit, the way a
// full disk looks to SQLite, on any machine.
func TestStore_MaxPageCount(t *testing.T) {
	path := filepath.Join(t.TempDir(), "capped.db")
	s, err := Open(path, Options{maxPageCount: 64})
	if err != nil {
		t.Fatal(err)
	}
	acked, _ := fillUntilUnavailable(t, s)
	if d, err := s.Decide(context.Background(), "c", "m0", conversation.Delivery{}); err != nil || d.Action != conversation.Skip {
		t.Errorf("Decide while full = %+v, %v; want skip", d, err)
	}
	verifyLog(t, s, acked)
	if n := s.unstaged.Load(); n != 0 { // the failed batches left the count
		t.Errorf("%d requests counted as unstaged after the failed batches", n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, path)
	// Without the cap the same database takes writes again.
	s = mustOpenPath(t, path, Options{})
	if o, err := s.Write(context.Background(), cmd(conversation.OpReceive, "after")); err != nil || !o.Append {
		t.Fatalf("Write after reopening = %+v, %v", o, err)
	}
	verifyLog(t, s, acked)
}
