package ipc

import (
	"context"
	"fmt"

	"liminald/conversation"
)

// DefaultStreamBuffer is how many pushed events a Stream holds for its
// reader before the client ends it as lagging.
const DefaultStreamBuffer = 4096

// Stream is a subscription opened by Client.Subscribe: the events pushed
// for it, in order. The client's reader never waits on a Stream: one whose
// reader falls DefaultStreamBuffer events behind ends with a *LaggedError,
// as a slow subscriber does on the server, and the client unsubscribes it.
//
// A Stream lives on the connection it was opened on, and ends with it
// when it is lost, with an *UnavailableError: subscribe again from the
// position after the last event Next returned, FromPos(e.Pos+1), or
// FromSeq(e.Seq+1) for one conversation, to go on without a gap.
type Stream struct {
	cc     *clientConn
	id     int64
	conv   string
	events chan conversation.Event
	err    error         // why it ended; set before events is closed
	ended  chan struct{} // closed when it ended, with events maybe still held
}

// LaggedError ends a subscription that fell behind. Subscribe again with
// FromPos(NextPos), or for one conversation FromSeq(NextSeq) when NextSeq
// is not -1, to go on without a gap.
type LaggedError struct {
	Sub     int64
	NextPos int64
	NextSeq int64 // -1 when not known
}

func (e *LaggedError) Error() string {
	if e.NextSeq >= 0 {
		return fmt.Sprintf("subscription %d lagged; subscribe again from seq %d (pos %d)", e.Sub, e.NextSeq, e.NextPos)
	}
	return fmt.Sprintf("subscription %d lagged; subscribe again from pos %d", e.Sub, e.NextPos)
}

// ID returns the subscription's number on its connection.
func (s *Stream) ID() int64 { return s.id }

// Next returns the next event of the subscription, waiting for it.
//
// Once the subscription ended, Next returns, after the events it still
// holds, a *LaggedError if it fell behind, ErrUnsubscribed after
// Unsubscribe or Close, an *UnavailableError when its connection was lost
// (the client dials again for the next call; subscribe again), or an error
// wrapping ErrClientClosed when the client ended. Returns ctx's error if
// it ends first; the client's CallTimeout does not apply.
func (s *Stream) Next(ctx context.Context) (conversation.Event, error) {
	select {
	case e, ok := <-s.events:
		if !ok {
			return conversation.Event{}, s.err
		}
		return e, nil
	case <-ctx.Done():
		return conversation.Event{}, ctx.Err()
	}
}

// Close unsubscribes, on the connection the subscription lives on. Events
// already received are still returned by Next. Returns the error of the
// unsubscribe request; nil when the subscription ended with a lost
// connection.
func (s *Stream) Close() error {
	return s.cc.unsubscribe(context.Background(), s.id)
}

// deliver queues e for Next, without waiting. Returns false if the stream
// is full. It runs in the client's reader goroutine.
func (s *Stream) deliver(e conversation.Event) bool {
	if s.done() {
		return true
	}
	select {
	case s.events <- e:
		return true
	default:
		return false
	}
}

// end ends the stream with err; it runs in the client's reader goroutine.
func (s *Stream) end(err error) {
	if s.done() {
		return
	}
	s.err = err
	close(s.events)
	close(s.ended)
}

func (s *Stream) done() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}
