package pgstore

import (
	"context"
	"testing"

	"liminald/conversation"
)

// TestWriter_KnownConversationGone: a batch skips the insert of the
// conversations the store knows; when one of them is gone all the same (a
// database restored under the daemon), the batch is written again and
// creates it.
func TestWriter_KnownConversationGone(t *testing.T) {
	db := newTestDB(t)
	ctx := context.Background()
	s, err := Open(ctx, db.url, Options{manualCompaction: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	if got := s.known.unknown([]string{"c"}); len(got) != 0 {
		t.Fatalf("after a write to c, unknown conversations %q", got)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM events; DELETE FROM messages; DELETE FROM conversations`); err != nil {
		t.Fatal(err)
	}
	out := mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	if out.Decision.Action != conversation.Start || out.Seq != 0 {
		t.Errorf("receive after the conversation was deleted: %+v; want a start at seq 0", out)
	}
	if c, err := s.Conversation(ctx, "c"); err != nil || c.Next != 1 {
		t.Errorf("conversation c: %+v, %v; want next 1", c, err)
	}
}
