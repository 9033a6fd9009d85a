package pgstore

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"

	"liminald/conversation"
	"liminald/internal/feed"
)

// notifyChannel is the channel every batch that appends notifies as it
// commits, with its store's id as the payload.
const notifyChannel = "liminald_events"

// Subscription receives the committed events of every daemon on the
// database, batch by batch in pos order, from the position the store's
// feed had reached when it was made. It holds up to its capacity of
// batches; one that falls further behind is ended with Lagged set, so
// that nothing waits on it.
type Subscription = feed.Subscription

// Subscribe starts a subscription to the events committed from now on,
// holding up to capacity batches not yet received. Its channel is closed
// when it lags, when it is closed, or when the store closes.
//
// The tailer publishes what it reads of the log, which may be behind the
// commits: the subscription starts at the end of the log as committed
// when it is made, so that it never gets an event committed before it.
// If the end cannot be read, it starts where the tailer is.
func (s *Store) Subscribe(capacity int) *Subscription {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var end int64
	if err := s.pool.QueryRow(ctx, `SELECT next FROM positions WHERE id = 1`).Scan(&end); err != nil {
		s.log.Warn("subscribe: cannot read the end of the log; starting where the feed is", "err", err)
		end = 0
	}
	sub := s.feed.SubscribeFrom(capacity, end)
	select {
	case s.tail.subscribed <- struct{}{}:
	default:
	}
	return sub
}

// tailerPage is how many events the tailer reads at a time.
const tailerPage = 1000

// tailer reads the log in pos order from where it reached, and publishes
// what it reads to the store's feed. Only its goroutine touches next.
type tailer struct {
	s    *Store
	next int64         // the position of the next event to publish
	wake chan struct{} // a notification came
	own  chan []conversation.Event
	// subscribed is sent to (without waiting) by Subscribe: the listener
	// listens again.
	subscribed chan struct{}
}

func newTailer(ctx context.Context, s *Store) (*tailer, error) {
	t := &tailer{s: s, wake: make(chan struct{}, 1), own: make(chan []conversation.Event, 64), subscribed: make(chan struct{}, 1)}
	if err := s.pool.QueryRow(ctx, `SELECT next FROM positions WHERE id = 1`).Scan(&t.next); err != nil {
		return nil, unavailable("read positions", err)
	}
	return t, nil
}

// committed tells the tailer of the events of a batch this store committed,
// in pos order; it never waits: a tailer that is behind reads them from
// the table.
func (t *tailer) committed(events []conversation.Event) {
	select {
	case t.own <- events:
	default:
		t.poke()
	}
}

func (t *tailer) poke() {
	select {
	case t.wake <- struct{}{}:
	default:
	}
}

func (t *tailer) run() {
	tick := time.NewTicker(t.s.opts.Poll)
	defer tick.Stop()
	failing := false
	for {
		select {
		case <-t.s.stop:
			return
		case events := <-t.own:
			last := events[len(events)-1].Pos
			switch {
			case last < t.next: // read already
				continue
			case t.s.feed.Len() == 0:
				// Nobody to hand them to, and a subscription made from
				// now on wants what commits later, after them.
				t.next = last + 1
				continue
			case events[0].Pos == t.next:
				// They follow on what was published: no need to read them.
				t.s.feed.Publish(events)
				t.next = last + 1
				continue
			}
		case <-t.wake:
		case <-tick.C:
		}
		err := t.catchUp()
		switch {
		case err != nil && !failing:
			t.s.log.Warn("subscriptions cannot read the log; they try again", "err", err)
		case err == nil && failing:
			t.s.log.Info("subscriptions read the log again")
		}
		failing = err != nil
	}
}

// catchUp reads and publishes the events from next on, up to the end of
// the log. Without subscriptions it only moves next to the end: a
// subscription made later wants the events committed after it was made,
// and they all come at or after that end.
func (t *tailer) catchUp() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for {
		if t.s.feed.Len() == 0 {
			var end int64
			if err := t.s.pool.QueryRow(ctx, `SELECT next FROM positions WHERE id = 1`).Scan(&end); err != nil {
				return unavailable("read positions", err)
			}
			// Looked at after the read: a subscription made since may
			// want events from before end, which the next look reads.
			if t.s.feed.Len() == 0 {
				t.next = max(t.next, end)
				return nil
			}
		}
		events, err := t.s.EventsFrom(ctx, t.next, tailerPage)
		if err != nil {
			return err
		}
		if len(events) == 0 {
			return nil
		}
		t.s.feed.Publish(events)
		t.next = events[len(events)-1].Pos + 1
		if len(events) < tailerPage {
			return nil
		}
	}
}

// listen wakes the tailer on every notification of notifyChannel from
// another store (the payload is the store's id), on a connection of its
// own, which it opens again, after a pause, when it breaks. It listens
// only while the store has subscriptions: a notification of every batch of
// every daemon wakes each listener's server process, and this goroutine,
// for nothing when no subscription wants the events. Once a notification
// finds none, it stops until Subscribe.
func (t *tailer) listen() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() { <-t.s.stop; cancel() }()
	defer cancel()
	for ctx.Err() == nil {
		if t.s.feed.Len() == 0 {
			select {
			case <-ctx.Done():
			case <-t.subscribed:
			}
			continue
		}
		err := t.listenOnce(ctx)
		if ctx.Err() != nil || err == nil {
			continue
		}
		t.s.log.Debug("notifications stopped; listening again", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// listenOnce listens until its connection breaks (an error) or a
// notification comes while the store has no subscriptions (nil).
func (t *tailer) listenOnce(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, t.s.pool.Config().ConnConfig.Copy())
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, "LISTEN "+notifyChannel); err != nil {
		return err
	}
	t.poke() // what was notified while it did not listen
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if t.s.feed.Len() == 0 {
			return nil
		}
		if n.Payload != t.s.id { // its own batches' events come by committed
			t.poke()
		}
	}
}
