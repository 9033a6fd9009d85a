package sqlitestore

import "liminald/internal/feed"

// Subscription receives the events of every commit after it was made, batch
// by batch in pos order. It holds up to its capacity of batches; a
// subscription that falls further behind is ended with Lagged set, so that
// no writer waits on it.
type Subscription = feed.Subscription

// Subscribe starts a subscription to the events committed from now on,
// holding up to capacity batches not yet received. Its channel is closed
// when it lags, when it is closed, or when the store closes.
func (s *Store) Subscribe(capacity int) *Subscription { return s.feed.Subscribe(capacity) }
