package sqlitestore

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"liminald/conversation"
)

// msgCache holds committed message states: the writer's cache, which the
// readers share and fill. It always holds a message's latest committed
// state, or nothing for it:
//
//   - The writer puts the state of every message a batch changed, after
//     its COMMIT, over whatever was there.
//   - A reader that missed and read a state from the database adds it only
//     if the message is still absent (a state the writer put since is
//     newer, or the same) and nothing was forgotten (clear, del) since
//     before its read began: that is what the epoch tells it. A state a
//     reader read is the latest committed unless a later batch changed the
//     message, and that batch's put comes after its COMMIT, so either it
//     is there already, and the reader adds nothing, or it overwrites the
//     reader's.
//
// A *Message in the cache is never modified (the writer works on copies),
// so a reader may copy one without a lock held.
//
// Each state carries the batch after whose sync it is durable (see
// Store.durable): a state put by the writer, the batch that committed or
// read it; a state a reader added, the batch the writer was committing
// when the read ended (Store.writing), which cannot be older than the
// batch that committed it.
type msgCache struct {
	seed   maphash.Seed
	shards [64]cacheShard
	n      atomic.Int64  // the states held
	epoch  atomic.Uint64 // how many times states were forgotten
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[msgKey]cached
}

// cached is a message's committed state, durable once batch is synced.
type cached struct {
	m     *conversation.Message
	batch int64
}

func newMsgCache() *msgCache {
	c := &msgCache{seed: maphash.MakeSeed()}
	for i := range c.shards {
		c.shards[i].m = make(map[msgKey]cached)
	}
	return c
}

func (c *msgCache) shard(k msgKey) *cacheShard {
	return &c.shards[(maphash.String(c.seed, k.id)^uint64(k.conv))%uint64(len(c.shards))]
}

// get returns the committed state of message k, or nil if it is not cached.
func (c *msgCache) get(k msgKey) *conversation.Message { return c.entry(k).m }

// entry returns the committed state of message k and the batch after whose
// sync it is durable; its m is nil if it is not cached.
func (c *msgCache) entry(k msgKey) cached {
	s := c.shard(k)
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.m[k]
}

// put caches m, committed, as the state of message k, durable once batch
// is synced. Writer only.
func (c *msgCache) put(k msgKey, m *conversation.Message, batch int64) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[k]; !ok {
		c.n.Add(1)
	}
	s.m[k] = cached{m, batch}
}

// add caches m, read from the database by a reader whose read began at
// epoch, as the state of message k, unless k is cached already, states
// were forgotten since epoch, or limit states are held.
func (c *msgCache) add(k msgKey, m *conversation.Message, batch int64, epoch uint64, limit int) {
	if c.n.Load() >= int64(limit) {
		return
	}
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[k]; ok || c.epoch.Load() != epoch {
		return
	}
	c.n.Add(1)
	s.m[k] = cached{m, batch}
}

// len returns the number of messages cached.
func (c *msgCache) len() int { return int(c.n.Load()) }

// clear forgets every message. Writer only.
func (c *msgCache) clear() {
	c.epoch.Add(1)
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		c.n.Add(-int64(len(s.m)))
		clear(s.m)
		s.mu.Unlock()
	}
}

// del forgets message k: it was dropped. Writer only.
func (c *msgCache) del(k msgKey) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	c.epoch.Add(1)
	if _, ok := s.m[k]; ok {
		c.n.Add(-1)
		delete(s.m, k)
	}
}
