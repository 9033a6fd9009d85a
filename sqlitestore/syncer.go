package sqlitestore

import (
	"fmt"
	"os"
	"syscall"
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
	start  time.Time
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
		if s.opts.Sync == SyncFull {
			err = s.syncWAL()
		}
		for _, c := range pending {
			s.answer(c, err)
		}
		s.syncing.Add(-int64(len(pending)))
		select {
		case s.syncDone <- struct{}{}:
		default:
		}
		clear(pending)
	}
}

// syncWAL flushes the WAL file to the disk. It opens the file anew each
// time, so that it always syncs the WAL SQLite writes now.
func (s *Store) syncWAL() error {
	f, err := os.OpenFile(s.path+"-wal", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("sync wal: %w: %w", conversation.ErrUnavailable, err)
	}
	defer f.Close()
	if err := syscall.Fdatasync(int(f.Fd())); err != nil {
		return fmt.Errorf("sync wal: %w: %w", conversation.ErrUnavailable, err)
	}
	return nil
}

// answer tells the requests of a committed batch their outcome, or err if
// the batch could not be made durable. Such a batch is committed all the
// same: a retry of one of its writes is answered as a duplicate.
func (s *Store) answer(c *committed, err error) {
	if err != nil {
		s.stats.fail()
		s.log.Error("sync failed; answering the batch unavailable", "requests", len(c.reqs), "err", err)
		for _, r := range c.reqs {
			r.out, r.err = conversation.Outcome{}, err
			close(r.done)
		}
		return
	}
	s.stats.record(len(c.reqs), len(c.events), time.Since(c.start))
	if len(c.events) > 0 {
		s.feed.publish(c.events)
	}
	for _, r := range c.reqs {
		close(r.done)
	}
}
