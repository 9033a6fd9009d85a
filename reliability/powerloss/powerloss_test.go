//go:build linux

package powerloss

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/internal/lazyfs"
)

// kind is where in the daemon's work a cut falls.
type kind string

const (
	// created: a fresh database; at a random one of the first 100
	// operations on its files, from its creation on (the db file, the
	// journal that turns it to WAL mode, the WAL and its directory entry,
	// the schema, the first acknowledgements): mostly before the daemon
	// is ready.
	created kind = "database being created"
	// fresh: a fresh database; at one of the 20 operations after its first
	// 1 to 20 acknowledgements.
	fresh kind = "fresh database"
	// migration: a copy of a version-1 database; at a random one of the
	// operations its migration makes before the daemon is ready.
	migration kind = "schema migration"
	// restarted: the daemon stopped with SIGTERM (its WAL checkpointed and
	// removed) and started again; at one of the first 100 operations
	// after (a new WAL and its directory entry).
	restarted kind = "restart"
	// checkpoint: under load; at a checkpoint's fsync of the WAL, or at one
	// of its writes to the database file, its truncation or its sync.
	checkpoint kind = "checkpoint"
	// compaction: under load with compaction running all the time; as soon
	// as stats shows a compaction pass has compacted more.
	compaction kind = "compaction"
	// random: under load; at a random operation.
	random kind = "random operation"
	// unsynced: under load; at a checkpoint's fsync of the WAL after WAL
	// frames were written since its last sync: what --sync full must have
	// synced already, and what --sync normal acknowledged without a sync.
	unsynced kind = "checkpoint after unsynced frames"
)

const (
	wal = dbName + "-wal"
	// v1 is a database written by liminald 1, migrated on open.
	v1 = "../../sqlitestore/testdata/v1/liminald.db"
)

// args are the serve arguments of the daemon of the i-th cut of kinds:
// from the first compaction cut on, the daemons compact every finished
// message at the next pass, which comes twice a second, and drop its
// tombstone a second later.
func args(kinds []kind, i int) []string {
	if slices.Contains(kinds[:min(i+1, len(kinds))], compaction) {
		return []string{"--retain-finished", "1ms", "--retain-tombstones", "1s"}
	}
	return nil
}

// figures add up what a run did.
type figures struct {
	cuts, beforeReady int
	byKind            map[kind]int
	acks, events      int
	messages          int
	compacted         int // messages, at the end
	forgotten         int
	lostAcks          int
	lost              []string
	loss              lazyfs.Loss
}

func (f *figures) add(g figures) {
	f.cuts += g.cuts
	f.beforeReady += g.beforeReady
	for k, n := range g.byKind {
		if f.byKind == nil {
			f.byKind = make(map[kind]int)
		}
		f.byKind[k] += n
	}
	f.acks += g.acks
	f.events += g.events
	f.messages += g.messages
	f.compacted += g.compacted
	f.forgotten += g.forgotten
	f.lostAcks += g.lostAcks
	f.lost = append(f.lost, g.lost...)
	f.loss.Files += g.loss.Files
	f.loss.Bytes += g.loss.Bytes
	f.loss.Entries += g.loss.Entries
}

func (f *figures) String() string {
	var kinds []string
	for _, k := range []kind{created, fresh, migration, restarted, checkpoint, compaction, random, unsynced} {
		if n := f.byKind[k]; n > 0 {
			kinds = append(kinds, fmt.Sprintf("%d at a %s", n, k))
		}
	}
	return fmt.Sprintf("%d power cuts (%s; %d of them before the daemon was ready) took away what was not synced, %d bytes of %d files and %d directory entries in all; %d acknowledged writes verified against %d events; %d messages decided (%d of them compacted, %d forgotten)",
		f.cuts, strings.Join(kinds, ", "), f.beforeReady, f.loss.Bytes, f.loss.Files, f.loss.Entries, f.acks, f.events, f.messages, f.compacted, f.forgotten)
}

func TestPowerCut(t *testing.T) {
	began := time.Now()
	plan := [][]kind{{created}, {fresh, checkpoint, compaction, restarted}, {migration}}
	if long() {
		plan = [][]kind{
			{created}, {created}, {created},
			{fresh, checkpoint, compaction, random, restarted, checkpoint, compaction, random, restarted, checkpoint, compaction, random},
			{fresh, random, checkpoint, restarted},
			{migration, checkpoint, compaction},
			{migration},
		}
	}
	var all figures
	for _, kinds := range plan {
		f := epoch(t, "full", false, kinds)
		if len(f.lost) > 0 {
			t.Fatalf("after %d cuts, %d acknowledged writes or decisions were lost:\n%s", all.cuts+f.cuts, len(f.lost), strings.Join(f.lost[:min(len(f.lost), 20)], "\n"))
		}
		all.add(f)
	}
	t.Logf("--sync full: %v; liminald check ok after every restart; %v", &all, time.Since(began).Round(time.Millisecond))
}

func TestPowerCut_SyncNormalLoses(t *testing.T) {
	mustLose(t, "normal", false)
}

func TestPowerCut_WithoutFdatasyncLoses(t *testing.T) {
	mustLose(t, "full", true)
}

// mustLose cuts the power at a checkpoint's sync of the WAL after frames
// were written since its last sync, once for each of up to three fresh
// databases until one loses acknowledged writes, and fails if none does.
func mustLose(t *testing.T, sync string, ignoreDatasync bool) {
	began := time.Now()
	var all figures
	for range 3 {
		all.add(epoch(t, sync, ignoreDatasync, []kind{unsynced}))
		if all.lostAcks > 0 {
			break
		}
	}
	what := "--sync " + sync
	if ignoreDatasync {
		what += " on a filesystem that drops fdatasync"
	}
	if all.lostAcks == 0 {
		t.Fatalf("%s: %v; no acknowledged write was lost, the power cuts show nothing", what, &all)
	}
	t.Logf("%s: %v; %d of the acknowledged writes lost, as they must be (and %d wrong decisions), such as: %s; %v",
		what, &all, all.lostAcks, len(all.lost)-all.lostAcks, all.lost[0], time.Since(began).Round(time.Millisecond))
}

// epoch runs the clients on one database through cuts of the kinds given,
// in order, and checks after each restart and at the end that nothing
// acknowledged was lost. The database is a copy of the version-1 one if
// the first kind is migration, else a new one, which the first kind
// (created, fresh or unsynced) must expect. With unsynced (the runs that
// must lose writes) the clients stop at the first cut, since what follows a
// loss contradicts the ledger, and the figures report the losses; else the
// figures stop at the first loss, which fails the test.
func epoch(t *testing.T, sync string, ignoreDatasync bool, kinds []kind) figures {
	t.Helper()
	f := figures{byKind: make(map[kind]int)}
	var seed func(string)
	var keep map[string][]conversation.Event
	var migrationOps int
	if kinds[0] == migration {
		migrationOps, keep = calibrate(t)
		seed = func(backing string) { copyFile(t, v1, filepath.Join(backing, dbName)) }
	}
	r := newRig(t, sync, ignoreDatasync, seed)
	l := newLedger()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wait := run(ctx, r, l)
	negative := kinds[0] == unsynced
	spread := int64(300) // the most acknowledgements between a cut and the next, less 30
	if long() {
		spread = 3000
	}

	for i, k := range kinds {
		if i == 0 { // this start makes the database, or migrates it
			switch k {
			case created:
				r.arm(atOp(1 + rand.IntN(100)))
			case migration:
				r.arm(atOpOn(1+rand.IntN(migrationOps), logFiles))
			}
			if r.start(args(kinds, i)...) {
				r.release()
			} else {
				f.beforeReady++
			}
		}
		switch k {
		case fresh:
			waitAcks(t, l, 1+rand.Int64N(20))
			r.arm(atOp(1 + rand.IntN(20)))
		case restarted:
			waitAcks(t, l, l.n.Load()+30+rand.Int64N(spread))
			if !r.cleanRestart(atOp(1+rand.IntN(100)), args(kinds, i)...) {
				f.beforeReady++
			}
		case checkpoint:
			waitAcks(t, l, l.n.Load()+30+rand.Int64N(spread))
			r.arm(inCheckpoint(rand.IntN(2) == 0, 1+rand.IntN(4)))
		case unsynced:
			// Long enough for checkpoints (every 100 ms) to have synced
			// some of the acknowledged writes, and not the last ones.
			waitAcks(t, l, l.n.Load()+1000+rand.Int64N(2000))
			r.arm(afterUnsyncedFrames(ignoreDatasync || sync == "normal"))
		case random:
			waitAcks(t, l, l.n.Load()+30+rand.Int64N(spread))
			r.arm(atOp(1 + rand.IntN(50)))
		case compaction:
			waitAcks(t, l, l.n.Load()+30+rand.Int64N(spread))
			cutWhenCompacting(t, r)
		}
		r.mu.Lock()
		dead := r.fs.Dead()
		r.mu.Unlock()
		select {
		case <-dead:
		case <-time.After(2 * time.Minute):
			t.Fatalf("cut %d (%s): the power was never cut", r.cuts+1, k)
		}
		if negative {
			l.stop.Store(true)
		}
		loss := r.cut()
		f.cuts++
		f.byKind[k]++
		f.loss.Files += loss.Files
		f.loss.Bytes += loss.Bytes
		f.loss.Entries += loss.Entries
		r.restart(args(kinds, i+1)...)
		v := verify(t, r, l, keep)
		r.check()
		if negative {
			r.onlySyncerDatasyncs()
			f.take(v)
			r.release()
			wait() // the clients end at their next call
			r.stop()
			return f
		}
		if len(v.lost) > 0 {
			f.take(v)
			return f
		}
		r.release()
	}

	// The clients go on after the last restart, until a tombstone was
	// dropped if the daemon compacts, then stop between calls.
	waitAcks(t, l, l.n.Load()+100)
	if args(kinds, len(kinds)) != nil {
		waitDropped(t, r)
	}
	l.stop.Store(true)
	if err := wait(); err != nil {
		t.Fatal(err)
	}
	v := verify(t, r, l, keep)
	r.check()
	r.stop()
	r.onlySyncerDatasyncs()
	f.take(v)
	return f
}

// take takes the figures of the epoch's last verdict.
func (f *figures) take(v verdict) {
	f.acks, f.events, f.messages = v.acks, v.events, v.messages
	f.compacted, f.forgotten = v.compacted, v.forgotten
	f.lostAcks, f.lost = v.lostAcks, v.lost
}

// atOp cuts the power at the k-th operation from now on.
func atOp(k int) func(lazyfs.Op) bool {
	return atOpOn(k, func(lazyfs.Op) bool { return true })
}

// atOpOn cuts the power at the k-th operation from now on that counts.
func atOpOn(k int, counts func(lazyfs.Op) bool) func(lazyfs.Op) bool {
	n := 0
	return func(op lazyfs.Op) bool {
		if counts(op) {
			n++
		}
		return n >= k
	}
}

// logFiles counts the operations on the database file and its WAL: those
// of a migration, and of the checkpoint after it.
func logFiles(op lazyfs.Op) bool { return op.Path == dbName || op.Path == wal }

// inCheckpoint cuts the power in the next checkpoint: at its fsync of the
// WAL (atSync), or at its m-th operation on the database file (a write, the
// truncation, the sync: nothing else writes to the database file of a WAL
// database).
func inCheckpoint(atSync bool, m int) func(lazyfs.Op) bool {
	n := 0
	return func(op lazyfs.Op) bool {
		switch {
		case atSync:
			return op.Path == wal && op.Kind == lazyfs.Fsync
		case op.Path == dbName:
			n++
			return n >= m
		}
		return false
	}
}

// afterUnsyncedFrames cuts the power at the next fsync of the WAL (a
// checkpoint's) that comes after WAL frames were written since the WAL's
// last sync; with noDatasync, an fdatasync does not count as one.
func afterUnsyncedFrames(noDatasync bool) func(lazyfs.Op) bool {
	frames := false
	return func(op lazyfs.Op) bool {
		if op.Path != wal {
			return false
		}
		switch op.Kind {
		case lazyfs.Write:
			// The header, at 0, is written and synced alone when the WAL
			// starts over; frames follow it.
			frames = frames || op.Off >= 32
		case lazyfs.Fdatasync:
			frames = frames && noDatasync
		case lazyfs.Fsync:
			return frames
		}
		return false
	}
}

// cutWhenCompacting cuts the power as soon as stats shows that compaction
// compacted more messages than at its previous look: a pass at work.
func cutWhenCompacting(t *testing.T, r *rig) {
	t.Helper()
	ctx, c, done := r.dialCheck()
	defer done()
	last := int64(-1)
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if last >= 0 && st.Compacted > last {
			if _, err := r.fs.Cut(); err != nil {
				t.Fatal(err)
			}
			return
		}
		last = st.Compacted
		time.Sleep(2 * time.Millisecond) // polling stats, with a deadline
	}
	t.Fatal("compaction compacted nothing for a minute")
}

// waitDropped waits until the daemon dropped a tombstone, or fails the
// test after a minute.
func waitDropped(t *testing.T, r *rig) {
	t.Helper()
	ctx, c, done := r.dialCheck()
	defer done()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		st, err := c.Stats(ctx)
		if err != nil {
			t.Fatalf("stats: %v", err)
		}
		if st.TombstonesDropped > 0 {
			return
		}
	}
	t.Fatal("no tombstone was dropped for a minute")
}

// calibrate opens a copy of the version-1 database on a lazy filesystem
// without a cut, and returns the number of operations on the database file
// and its WAL until the daemon is ready (its migration, and the checkpoint
// after it at the most) and the events of its conversations once migrated.
func calibrate(t *testing.T) (ops int, keep map[string][]conversation.Event) {
	t.Helper()
	r := newRig(t, "full", false, func(backing string) { copyFile(t, v1, filepath.Join(backing, dbName)) })
	var n atomic.Int64
	r.arm(func(op lazyfs.Op) bool {
		if logFiles(op) {
			n.Add(1)
		}
		return false
	})
	if !r.start() {
		t.Fatal("liminald did not start on a version-1 database")
	}
	ops = int(n.Load())
	r.arm(nil)
	ctx, c, done := r.dialCheck()
	defer done()
	convs, err := c.Conversations(ctx, "", 1000)
	if err != nil || len(convs) == 0 {
		t.Fatalf("conversations of the version-1 database: %v, %v", convs, err)
	}
	keep = make(map[string][]conversation.Event)
	for _, conv := range convs {
		keep[conv.Name] = readAll(t, ctx, c, conv.Name)
	}
	r.stop()
	return ops, keep
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
