package sqlitestore

import (
	"hash/maphash"
	"sync"

	"liminald/conversation"
)

// msgCache holds committed message states: the writer's cache, which the
// readers share. Only the writer puts, and only states it committed; a
// *Message in the cache is never modified (the writer works on copies), so
// a reader may copy one without a lock held. Readers that miss go to the
// database; they never fill the cache, so it cannot go stale behind the
// writer's back.
//
// Each state carries the batch after whose sync it is durable (see
// Store.durable): a state the writer put is the latest committed, and once
// that batch is synced, no newer state of the message is committed.
type msgCache struct {
	seed   maphash.Seed
	shards [64]cacheShard
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
	s.m[k] = cached{m, batch}
}

// len returns the number of messages cached.
func (c *msgCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}

// clear forgets every message. Writer only.
func (c *msgCache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}

// del forgets message k: it was dropped. Writer only.
func (c *msgCache) del(k msgKey) {
	s := c.shard(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
}
