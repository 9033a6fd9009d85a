package conversation

import "time"

// Retention is how long a store keeps what it no longer needs (SPEC §8).
// Zero keeps it forever.
type Retention struct {
	// Finished: a message finished longer ago than this is compacted: its
	// events and steps are deleted and a tombstone keeps what its
	// redeliveries and writes need.
	Finished time.Duration
	// Tombstones: a tombstone whose message finished longer ago than this
	// is dropped, and its conversation's horizon (forgotten_before) moves
	// to its finished_at.
	Tombstones time.Duration
}

// Every returns how often compaction looks for work under r: often enough
// that what became eligible goes within max(1 s, a tenth of its setting),
// even when a pass finds it just after it became eligible; 0 when r keeps
// everything.
func (r Retention) Every() time.Duration {
	var d time.Duration
	for _, set := range []time.Duration{r.Finished, r.Tombstones} {
		if set > 0 {
			deadline := max(time.Second, set/10)
			if d == 0 || deadline < d {
				d = deadline
			}
		}
	}
	return d / 2
}
