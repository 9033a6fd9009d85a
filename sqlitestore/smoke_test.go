package sqlitestore

import (
	"context"
	"testing"

	"liminald/conversation"
)

func TestSmoke(t *testing.T) {
	s := mustOpenStore(t, Options{})
	o := mustWrite(t, s, conversation.Command{Op: conversation.OpReceive, Conversation: "c", MessageID: "m"})
	t.Logf("%+v", o)
	o = mustWrite(t, s, conversation.Command{Op: conversation.OpStart, Conversation: "c", MessageID: "m"})
	o = mustWrite(t, s, conversation.Command{Op: conversation.OpStep, Conversation: "c", MessageID: "m", Output: []byte("hi")})
	o = mustWrite(t, s, conversation.Command{Op: conversation.OpStep, Conversation: "c", MessageID: "m", Output: []byte("hi")})
	t.Logf("%+v", o)
	d, err := s.Decide(context.Background(), "c", "m")
	t.Logf("%+v %v", d, err)
	ev, err := s.Events(context.Background(), "c", 0, 10)
	t.Logf("%+v %v", ev, err)
	st, err := s.Stats(context.Background())
	t.Logf("%+v %v", st, err)
}
