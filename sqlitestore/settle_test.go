package sqlitestore

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"liminald/conversation"
)

// TestStore_SettleOnlyDurableStates: Settle answers the redelivery of a
// message from its cached state, without the writer, only once the batch
// that committed that state is synced: while the finish's sync is held,
// the finish is committed (a read sees it) but settles nothing, and once
// it is durable the redelivery is a skip. A write that appends, a message
// not cached and a receive with expected_seq are never settled, and no
// state is once a sync failed.
func TestStore_SettleOnlyDurableStates(t *testing.T) {
	var hold, fail atomic.Bool
	syncing, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	s := mustOpenStore(t, Options{syncFault: func() error {
		if hold.Load() {
			once.Do(func() { close(syncing); <-release })
		}
		if fail.Load() {
			return errors.New("injected EIO")
		}
		return nil
	}})
	unhold := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unhold)

	receive := cmd(conversation.OpReceive, "m")
	if o, ok := s.Settle(&receive); ok {
		t.Fatalf("Settle before the message exists = %+v; want it left to the writer", o)
	}
	mustWrite(t, s, receive)
	mustWrite(t, s, cmd(conversation.OpStart, "m"))
	if o, ok := s.Settle(&receive); !ok || o.Append || o.Decision.Action != conversation.Resume {
		t.Fatalf("Settle of a message in progress = %+v, %v; want a resume", o, ok)
	}
	start := cmd(conversation.OpStart, "m")
	if o, ok := s.Settle(&start); ok {
		t.Fatalf("Settle(start) = %+v; want only receives settled", o)
	}

	hold.Store(true)
	finished := make(chan error, 1)
	go func() {
		_, err := s.Write(context.Background(), cmd(conversation.OpFinish, "m"))
		finished <- err
	}()
	<-syncing // the finish is committed, its sync held
	if m, err := s.Message(context.Background(), "c", "m"); err != nil || m.Status != conversation.StatusFinished {
		t.Fatalf("Message while the finish syncs = %+v, %v; want it finished (committed)", m, err)
	}
	if o, ok := s.Settle(&receive); ok {
		t.Fatalf("Settle while the finish is not durable = %+v; want it left to the writer", o)
	}
	unhold()
	if err := <-finished; err != nil {
		t.Fatal(err)
	}
	o, ok := s.Settle(&receive)
	if !ok || o.Append || o.Decision.Action != conversation.Skip {
		t.Fatalf("Settle once the finish is durable = %+v, %v; want a skip", o, ok)
	}
	expect := receive
	expect.ExpectedSeq = 3
	if o, ok := s.Settle(&expect); ok {
		t.Fatalf("Settle of a receive with expected_seq = %+v; want it left to the writer", o)
	}

	fail.Store(true)
	if _, err := s.Write(context.Background(), cmd(conversation.OpReceive, "other")); !errors.Is(err, conversation.ErrUnavailable) {
		t.Fatalf("Write with a failing sync: %v, want unavailable", err)
	}
	if o, ok := s.Settle(&receive); ok {
		t.Fatalf("Settle after a failed sync = %+v; want nothing settled", o)
	}
}
