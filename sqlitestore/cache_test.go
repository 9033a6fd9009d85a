package sqlitestore

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"liminald/conversation"
)

// TestMsgCache_Add: a state a reader read is added only while the message
// is absent, nothing was forgotten since its read began, and the cache is
// below its limit.
func TestMsgCache_Add(t *testing.T) {
	c := newMsgCache()
	k, other := msgKey{1, "m"}, msgKey{1, "other"}
	old, newer := &conversation.Message{ID: "m", LastSeq: 1}, &conversation.Message{ID: "m", LastSeq: 2}

	epoch := c.epoch.Load()
	c.put(k, newer, 3)
	c.add(k, old, 2, epoch, 10)
	if e := c.entry(k); e.m != newer || e.batch != 3 {
		t.Fatalf("add over a state the writer put: %+v, want the writer's", e)
	}

	c.del(k)
	epoch = c.epoch.Load()
	c.put(other, newer, 4)
	c.del(other) // forgotten while the read ran
	c.add(k, old, 4, epoch, 10)
	if e := c.entry(k); e.m != nil {
		t.Fatalf("add after a del since the read began: %+v, want nothing", e)
	}
	epoch = c.epoch.Load()
	c.put(other, newer, 5)
	c.clear()
	c.add(k, old, 5, epoch, 10)
	if e := c.entry(k); e.m != nil || c.len() != 0 {
		t.Fatalf("add after a clear since the read began: %+v (%d held), want nothing", e, c.len())
	}

	epoch = c.epoch.Load()
	c.add(k, old, 6, epoch, 1)
	if e := c.entry(k); e.m != old || e.batch != 6 || c.len() != 1 {
		t.Fatalf("add = %+v (%d held), want the state read", e, c.len())
	}
	c.add(other, newer, 6, epoch, 1)
	if e := c.entry(other); e.m != nil || c.len() != 1 {
		t.Fatalf("add at the limit: %+v (%d held), want nothing more", e, c.len())
	}
}

// TestStore_ReadsKeepTheCacheCurrent: readers that miss fill the cache
// while writers change the same messages and the cache is cleared again
// and again (CacheSize 4); afterwards every state cached is the state in
// the database, and a message read once is served from the cache.
func TestStore_ReadsKeepTheCacheCurrent(t *testing.T) {
	s := mustOpenStore(t, Options{CacheSize: 4})
	ctx := context.Background()
	const msgs = 12
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Message(ctx, "c", fmt.Sprintf("m%d", (i+r)%msgs)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	var writers sync.WaitGroup
	for w := range 3 {
		writers.Go(func() {
			for i := w; i < msgs; i += 3 {
				m := fmt.Sprintf("m%d", i)
				cmds := []conversation.Command{cmd(conversation.OpReceive, m), cmd(conversation.OpStart, m)}
				for st := range 3 {
					c := cmd(conversation.OpStep, m)
					c.StepIndex, c.Output = uint32(st), []byte("x")
					cmds = append(cmds, c)
				}
				for _, c := range append(cmds, cmd(conversation.OpFinish, m)) {
					if _, err := s.Write(ctx, c); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	writers.Wait()
	close(stop)
	wg.Wait()

	cid, ok := s.convIDs.Load("c")
	if !ok {
		t.Fatal("conversation c is not known to the cache")
	}
	for i := range msgs {
		id := fmt.Sprintf("m%d", i)
		k := msgKey{cid.(int64), id}
		db, err := scanMessage(s.reads.msg.QueryRowContext(ctx, "c", id), id)
		if err != nil {
			t.Fatal(err)
		}
		if m := s.msgs.get(k); m != nil && *m != *db {
			t.Errorf("message %s: cached %+v, database %+v", id, *m, *db)
		}
	}
	s.msgs.clear()
	if _, err := s.Message(ctx, "c", "m0"); err != nil {
		t.Fatal(err)
	}
	if m := s.msgs.get(msgKey{cid.(int64), "m0"}); m == nil || m.Status != conversation.StatusFinished {
		t.Fatalf("after a read of m0 the cache holds %+v, want its finished state", m)
	}
}
