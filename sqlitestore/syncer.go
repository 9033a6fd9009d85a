package sqlitestore

import (
	"fmt"
	"os"
	"slices"
	"time"

	"liminald/conversation"
)

// The writer commits each batch with synchronous=NORMAL: COMMIT writes the
// batch's WAL frames but does not wait for the disk. The syncer then makes
// them durable with one fdatasync of the WAL, and only then answers the
// batch's requests and publishes its events. While the disk works on one
// batch, the writer builds the next; batches that commit during an
// fdatasync share the next one. The WAL's frames of a committed
// transaction are what recovery replays, so an fdatasync of the WAL after
// COMMIT gives an acknowledged write the durability of synchronous=FULL;
// checkpoints run on connections with synchronous=FULL and sync the
// database file before the WAL is reused.
//
// A read may see a committed batch while its fdatasync is in flight, before
// its writers are answered; on power loss such a batch can be lost, but it
// was never acknowledged.

// committed is a batch that the writer committed, waiting to be durable.
type committed struct {
	reqs   []*request
	events []conversation.Event
	// maintained is set when it compacted, dropped or restored something
	// (see maintain): it needs a sync too, though it appended no event.
	maintained bool
	start      time.Time
	commit     time.Duration // from start to COMMIT
	seq        int64         // the writer's number of the batch
}

func (s *Store) syncLoop() {
	var pending []*committed
	for c := range s.synced {
		pending = append(pending[:0], c)
	gather:
		for {
			select {
			case c, ok := <-s.synced:
				if !ok {
					break gather
				}
				pending = append(pending, c)
			default:
				break gather
			}
		}
		var err error
		var took time.Duration
		if s.opts.Sync == SyncFull && slices.ContainsFunc(pending, func(c *committed) bool { return len(c.events) > 0 || c.maintained }) {
			t := time.Now()
			err = s.syncWAL()
			took = time.Since(t)
		}
		if err == nil {
			s.durable.Store(pending[len(pending)-1].seq)
		}
		for _, c := range pending {
			s.answer(c, err)
			s.report(Batch{Requests: len(c.reqs), Events: len(c.events), Commit: c.commit, Sync: took})
		}
		s.syncing.Add(-int64(len(pending)))
		s.poke()
		clear(pending)
	}
	if s.reports != nil {
		close(s.reports)
	}
}

// syncWAL flushes the WAL file to the disk. It opens the file anew each
// time, so that it always syncs the WAL SQLite writes now.
func (s *Store) syncWAL() error {
	if s.opts.syncFault != nil {
		if err := s.opts.syncFault(); err != nil {
			return fmt.Errorf("sync wal: %w: %w", conversation.ErrUnavailable, err)
		}
	}
	return s.fsyncWAL()
}

// fsyncWAL is syncWAL without its test hook.
func (s *Store) fsyncWAL() error {
	f, err := os.OpenFile(s.path+"-wal", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sync wal: %w: %w", conversation.ErrUnavailable, err)
	}
	defer f.Close()
	if err := datasync(int(f.Fd())); err != nil {
		return fmt.Errorf("sync wal: %w: %w", conversation.ErrUnavailable, err)
	}
	return nil
}

// answer tells the requests of a committed batch their outcome, or err if
// the batch could not be made durable.
//
// A failed fdatasync leaves the page cache in a state nobody can trust
// (the kernel may have dropped the pages it could not write), so the store
// stops taking writes until it is opened again, when SQLite recovers from
// what the disk holds. The batch is committed all the same, and readers may
// already see it: its events are still published, so that subscribers see
// what readers see, and a retry of one of its writes after the restart
// finds it there.
func (s *Store) answer(c *committed, err error) {
	if len(c.events) > 0 {
		s.feed.Publish(c.events)
	}
	if err != nil {
		s.stats.Fail()
		if s.broken.CompareAndSwap(nil, &err) {
			s.log.Error("sync of the WAL failed: refusing writes until liminald restarts", "err", err)
		}
		for _, r := range c.reqs {
			r.out, r.err = conversation.Outcome{}, err
			r.finish()
		}
		return
	}
	s.stats.Record(len(c.reqs), len(c.events), time.Since(c.start))
	for _, r := range c.reqs {
		r.finish()
	}
}
