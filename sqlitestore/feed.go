package sqlitestore

import (
	"sync"
	"sync/atomic"

	"liminald/conversation"
)

// feed hands every committed batch of events to the subscriptions, without
// ever waiting on one.
type feed struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
}

// Subscription receives the events of every commit after it was made, batch
// by batch in pos order. It holds up to its capacity of batches; a
// subscription that falls further behind is ended with Lagged set, so that
// no writer waits on it.
type Subscription struct {
	f      *feed
	c      chan []conversation.Event
	lagged atomic.Bool
}

// Subscribe starts a subscription to the events committed from now on,
// holding up to capacity batches not yet received. Its channel is closed
// when it lags, when it is closed, or when the store closes.
func (s *Store) Subscribe(capacity int) *Subscription {
	sub := &Subscription{f: &s.feed, c: make(chan []conversation.Event, capacity)}
	f := &s.feed
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		close(sub.c)
		return sub
	}
	if f.subs == nil {
		f.subs = make(map[*Subscription]struct{})
	}
	f.subs[sub] = struct{}{}
	return sub
}

// Events returns the channel of committed batches. The batches are shared:
// do not modify them.
func (sub *Subscription) Events() <-chan []conversation.Event { return sub.c }

// Lagged reports whether the subscription ended because it fell behind.
func (sub *Subscription) Lagged() bool { return sub.lagged.Load() }

// Close ends the subscription. It may be called more than once.
func (sub *Subscription) Close() {
	f := sub.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.subs[sub]; ok {
		delete(f.subs, sub)
		close(sub.c)
	}
}

// publish hands a committed batch to every subscription; one that has no
// room lags and ends.
func (f *feed) publish(events []conversation.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for sub := range f.subs {
		select {
		case sub.c <- events:
		default:
			sub.lagged.Store(true)
			delete(f.subs, sub)
			close(sub.c)
		}
	}
}

func (f *feed) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for sub := range f.subs {
		delete(f.subs, sub)
		close(sub.c)
	}
}
