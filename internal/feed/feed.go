// Package feed hands the committed batches of a store's events to its
// subscriptions, without ever waiting on one: the live half of subscribe
// (SPEC §3), the same for every store.
package feed

import (
	"sync"
	"sync/atomic"

	"liminald/conversation"
)

// Feed fans the batches published to it out to its subscriptions. The
// zero Feed is ready to use.
type Feed struct {
	mu     sync.Mutex
	subs   map[*Subscription]struct{}
	closed bool
}

// Subscription receives the batches published after it was made, in the
// order they were published. It holds up to its capacity of batches; a
// subscription that falls further behind is ended with Lagged set, so
// that nothing waits on it.
type Subscription struct {
	f      *Feed
	c      chan []conversation.Event
	lagged atomic.Bool
	from   int64 // the first position it wants (see SubscribeFrom)
}

// Subscribe starts a subscription to the batches published from now on,
// holding up to capacity batches not yet received. Its channel is closed
// when it lags, when it is closed, or when the feed closes.
func (f *Feed) Subscribe(capacity int) *Subscription { return f.SubscribeFrom(capacity, 0) }

// SubscribeFrom is Subscribe for a subscription that wants only the
// events at position from and after: of a batch published later that
// starts before from, it gets the rest, or nothing. A feed that may publish
// batches committed before a subscription was made (one that reads the
// log behind the commits) gives it the end of the log as from.
func (f *Feed) SubscribeFrom(capacity int, from int64) *Subscription {
	sub := &Subscription{f: f, c: make(chan []conversation.Event, capacity), from: from}
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

// Len returns how many subscriptions are open.
func (f *Feed) Len() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// Publish hands a committed batch to every subscription; one that has no
// room lags and ends.
func (f *Feed) Publish(events []conversation.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for sub := range f.subs {
		batch := events
		if sub.from > 0 && len(batch) > 0 && batch[0].Pos < sub.from {
			i := 0
			for i < len(batch) && batch[i].Pos < sub.from {
				i++
			}
			if batch = batch[i:]; len(batch) == 0 {
				continue
			}
		}
		select {
		case sub.c <- batch:
		default:
			sub.lagged.Store(true)
			delete(f.subs, sub)
			close(sub.c)
		}
	}
}

// Close ends every subscription, and those made later at once.
func (f *Feed) Close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for sub := range f.subs {
		delete(f.subs, sub)
		close(sub.c)
	}
}
