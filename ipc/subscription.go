package ipc

import (
	"context"
	"math"
	"sync/atomic"

	"liminald/conversation"
)

// catchUpPage is how many events a subscription reads from the log at a
// time while it catches up.
const catchUpPage = 256

// catchUpFirstPage is the size of a catch-up's first page; the next ones
// grow to catchUpPage while the events are small.
const catchUpFirstPage = 32

// catchUpPushBytes is the most a catch-up push carries, unless one event
// is larger.
const catchUpPushBytes = 256 << 10

// subscription is a subscribe request's feed to its connection. Its
// goroutine (run) answers the request, catches up from the log, then
// delivers the live batches.
type subscription struct {
	c      *conn
	id     int64
	ctx    context.Context
	cancel context.CancelFunc
	// unsubscribed is set by unsubscribe: the writer drops its pushes still
	// queued, so that none follows the unsubscribe reply.
	unsubscribed atomic.Bool
	// counted is set while the subscription is in the server's count of
	// subscribers; release takes it out, once.
	counted atomic.Bool

	conv    string // "" for every conversation
	hasFrom bool   // catch up from fromSeq (conv only) or fromPos first
	byPos   bool   // the from position is fromPos
	fromSeq int64
	fromPos int64

	// What has been delivered: the next event delivered has pos >= cursor
	// (and seq >= nextSeq for one conversation). resume is the position to
	// subscribe again from after a lag: nothing before it was skipped; -1
	// until it is known.
	cursor   int64
	nextSeq  int64
	seqKnown bool // nextSeq is known: from_seq was given or an event was delivered
	resume   int64
}

// subscribe starts the subscription of the subscribe request in sl, once
// the requests in after are done; done, if not nil, is closed once it is
// subscribed. Its goroutine answers the request.
func (c *conn) subscribe(sl *slot, after []chan struct{}, done chan struct{}) {
	r := &sl.req
	c.lastSub++
	s := &subscription{c: c, id: c.lastSub, conv: r.conv, hasFrom: r.hasFrom, byPos: r.hasFromPos,
		fromSeq: r.fromSeq, fromPos: r.fromPos, resume: -1}
	switch {
	case s.hasFrom && s.byPos:
		s.cursor, s.resume = s.fromPos, s.fromPos
	case s.hasFrom:
		s.nextSeq, s.seqKnown, s.resume = s.fromSeq, true, 0
	}
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	c.mu.Lock()
	c.active[s.id] = s
	c.mu.Unlock()
	c.subs.Add(1)
	go func() {
		defer c.subs.Done()
		s.run(sl, after, done)
	}()
}

// unsubscribe ends subscription r.sub of the connection and appends the
// reply. A subscription that already ended (it lagged) is unsubscribed
// without error; a number this connection never gave is a bad_request
// naming sub.
func (c *conn) unsubscribe(dst []byte, r *request) []byte {
	if r.sub < 1 || r.sub > c.lastSub {
		return c.srv.appendError(dst, r, fieldError("sub", "is not a subscription of this connection"))
	}
	c.mu.Lock()
	s := c.active[r.sub]
	delete(c.active, r.sub)
	c.mu.Unlock()
	if s != nil {
		s.unsubscribed.Store(true)
		s.release() // now, so that a stats after the reply counts it out
		s.cancel()
	}
	return appendEnd(appendOK(dst, r.id))
}

// release takes the subscription out of the server's count of
// subscribers, if it is in it.
func (s *subscription) release() {
	if s.counted.CompareAndSwap(true, false) {
		s.c.srv.subscribers.Add(-1)
	}
}

// run answers the subscribe request in sl, then pushes events until the
// subscription lags or ends.
func (s *subscription) run(sl *slot, after []chan struct{}, done chan struct{}) {
	c, srv := s.c, s.c.srv
	defer s.end()
	var live Subscription
	if c.wait(s.ctx, after) && s.ctx.Err() == nil {
		// Subscribe to the live feed before reading the log: every event is
		// then in the log pages, in the feed, or in both.
		live = srv.store.Subscribe(srv.subBuffer)
		srv.subscribers.Add(1)
		s.counted.Store(true)
		defer func() {
			live.Close()
			s.release()
		}()
	}
	if done != nil {
		close(done)
	}
	replied := make(chan struct{})
	sl.written = replied
	c.reply(sl, appendEnd(appendInt(appendOK(sl.buf, sl.req.id), "sub", s.id)))
	if live == nil {
		return
	}
	select {
	case <-replied: // no push before the reply
	case <-s.ctx.Done():
		return
	}
	if s.hasFrom {
		var ok bool
		if live, ok = s.catchUp(live); !ok {
			return
		}
	}
	s.follow(live)
}

// end forgets the subscription.
func (s *subscription) end() {
	s.cancel()
	s.c.mu.Lock()
	if s.c.active[s.id] == s {
		delete(s.c.active, s.id)
	}
	s.c.mu.Unlock()
}

// catchUp pushes the events of the log from the requested position on, page
// by page, at the client's pace. A live feed that overflows meanwhile is
// replaced by a new one: the pages still to read cover what it dropped.
// Returns the live feed to follow, and false if the subscription ended.
//
// Memory is bounded whatever the events' size and however many
// subscriptions a connection that does not read opens: the catch-ups of a
// connection take turns, each holding one page and one push until the push
// is written; a page starts small and grows only while its events are
// small, and a push carries at most catchUpPushBytes (or one event).
func (s *subscription) catchUp(live Subscription) (Subscription, bool) {
	srv := s.c.srv
	seq, pos := s.fromSeq, s.fromPos
	limit := catchUpFirstPage
	for {
		if live.Lagged() {
			live.Close()
			live = srv.store.Subscribe(srv.subBuffer)
		}
		select {
		case s.c.catchUpTurn <- struct{}{}:
		case <-s.ctx.Done():
			return live, false
		}
		var page []conversation.Event
		var err error
		if s.byPos {
			page, err = srv.store.EventsFrom(s.ctx, pos, limit)
		} else {
			page, err = srv.store.Events(s.ctx, s.conv, seq, limit)
		}
		if err != nil {
			<-s.c.catchUpTurn
			if s.ctx.Err() == nil {
				s.c.log.Warn("subscription catch-up failed", "sub", s.id, "err", err)
				s.lag()
			}
			return live, false
		}
		buf, n, cursor, nextSeq := s.pushesUpTo(page, catchUpPushBytes)
		if len(buf) > 0 {
			written := make(chan struct{})
			select {
			case s.c.pushes <- push{sub: s, buf: buf, written: written}:
				s.delivered(cursor, nextSeq)
			case <-s.ctx.Done():
				<-s.c.catchUpTurn
				return live, false
			}
			select { // one catch-up push queued per connection
			case <-written:
			case <-s.ctx.Done():
				<-s.c.catchUpTurn
				return live, false
			}
		}
		<-s.c.catchUpTurn
		if n == len(page) && len(page) < limit {
			return live, true
		}
		if n < len(page) {
			limit = max(n, 1) // large events: read fewer at a time
		} else {
			limit = min(2*limit, catchUpPage)
		}
		last := &page[n-1]
		seq, pos = last.Seq+1, last.Pos+1
		if s.byPos {
			s.resume = max(s.resume, pos)
		}
	}
}

// pushes returns the push lines of the events the subscription wants, and
// where it will stand once they are delivered.
func (s *subscription) pushes(events []conversation.Event) (buf []byte, cursor, nextSeq int64) {
	buf, _, cursor, nextSeq = s.pushesUpTo(events, math.MaxInt)
	return buf, cursor, nextSeq
}

// pushesUpTo is pushes for the first n events of events, as many as fit in
// maxBytes (at least one).
func (s *subscription) pushesUpTo(events []conversation.Event, maxBytes int) (buf []byte, n int, cursor, nextSeq int64) {
	cursor, nextSeq = s.cursor, s.nextSeq
	for n < len(events) && (n == 0 || len(buf) < maxBytes) {
		if e := &events[n]; s.wants(e, cursor, nextSeq) {
			buf = appendPush(buf, s.id, e)
			cursor, nextSeq = e.Pos+1, e.Seq+1
		}
		n++
	}
	return buf, n, cursor, nextSeq
}

// follow pushes the live batches, skipping what catch-up delivered, until
// the subscription ends. A batch that finds the outgoing queue full, or a
// feed that overflowed, ends it with a lagged push. A feed the store closed
// (it is closing: the daemon is stopping) ends it without one.
func (s *subscription) follow(live Subscription) {
	for {
		var batch []conversation.Event
		var ok bool
		select {
		case batch, ok = <-live.Events():
		case <-s.ctx.Done():
			return
		}
		if !ok {
			if live.Lagged() {
				s.lag()
			}
			return
		}
		if len(batch) == 0 {
			continue
		}
		if s.resume < 0 {
			s.resume = batch[0].Pos // nothing was committed between subscribing and it
		}
		buf, cursor, nextSeq := s.pushes(batch)
		if len(buf) > 0 {
			select {
			case s.c.pushes <- push{sub: s, buf: buf}:
				s.delivered(cursor, nextSeq)
			default:
				s.lag()
				return
			}
		}
		s.resume = max(s.resume, batch[len(batch)-1].Pos+1)
	}
}

// wants reports whether e is to be delivered after the events before
// cursor (and, for one conversation, before nextSeq).
func (s *subscription) wants(e *conversation.Event, cursor, nextSeq int64) bool {
	if e.Pos < cursor {
		return false
	}
	return s.conv == "" || (e.Conversation == s.conv && e.Seq >= nextSeq)
}

// delivered records that the events before cursor (nextSeq) are pushed.
func (s *subscription) delivered(cursor, nextSeq int64) {
	s.cursor, s.nextSeq, s.seqKnown = cursor, nextSeq, true
	s.resume = max(s.resume, cursor)
}

// lag pushes the line that ends a lagging subscription, with where to
// subscribe again from.
func (s *subscription) lag() {
	nextSeq := int64(-1)
	if s.conv != "" && s.seqKnown {
		nextSeq = s.nextSeq
	}
	s.c.log.Debug("subscription lagged", "sub", s.id, "next_pos", max(s.resume, 0))
	select {
	case s.c.pushes <- push{sub: s, buf: appendLagged(nil, s.id, max(s.resume, 0), nextSeq)}:
	case <-s.ctx.Done():
	}
}
