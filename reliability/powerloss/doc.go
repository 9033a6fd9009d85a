// Package powerloss tests that liminald loses nothing it acknowledged when
// the power goes out. It has no non-test code: its tests run the real
// liminald binary (built once by TestMain) with its database on a lazy
// filesystem (internal/lazyfs), which forgets on a power cut what was never
// synced, data and directory entries alike, as a disk may; they talk to it
// with the Go client of package ipc.
//
// The database is state/liminald/liminald.db on that filesystem, in
// directories the daemon makes, as it makes ~/.local/state/liminald on a
// new machine.
//
// TestPowerCut runs 16 clients through message lifecycles (receive, start,
// steps 0..2, finish) over 3 conversations, against liminald serve --sync
// full, and cuts the power at chosen moments (kind in powerloss_test.go):
// while a fresh database is being created (at one of the first operations
// on its files: the db file, the journal that turns it to WAL mode, the WAL
// and its directory entry, the schema, the first acknowledgements), just
// after its first acknowledgements, in the middle of a checkpoint (at its
// sync of the WAL, or at one of its writes to the database file or its
// sync), during compaction (serve --retain-finished 1ms --retain-tombstones
// 1s, cut as soon as stats shows a compaction pass at work), during the
// schema migration of sqlitestore/testdata/v1/liminald.db (at one of the
// operations on the database and its WAL that a first run, without a cut,
// counted until ready), just after a clean restart (SIGTERM, which removes
// the WAL, then a new WAL), and at a random operation under load. After
// each cut liminald restarts on what the filesystem kept, and before the
// clients go on:
//
//   - every acknowledged write is in the log at its seq with its type,
//     message, step index and output, or its message was compacted: then
//     decide answers skip, and finish again answers a duplicate at the
//     acknowledged finish's seq (or the message was forgotten, its
//     tombstone dropped, after its finish was sent);
//   - no two acknowledged appends share a seq;
//   - decide agrees with every message's acknowledged history (finished:
//     skip; received: never start; resume from at least the highest
//     acknowledged step + 1);
//   - the migrated conversations hold exactly the events a migration
//     without a cut leaves (less those of the messages compaction took);
//   - liminald check passes.
//
// The clients check the same as they go: a receive after a cut must not
// start a message whose receive was acknowledged, nor resume before a step
// that was. Every fdatasync the filesystem sees must be of the WAL: the
// syncer's, since SQLite syncs with fsync.
//
// The test can fail: TestPowerCut_SyncNormalLoses runs the load with
// --sync normal and cuts the power at a checkpoint's sync of the WAL when
// WAL frames were written since its last sync; it must find lost
// acknowledged writes. TestPowerCut_WithoutFdatasyncLoses does the same
// with --sync full on a filesystem whose fdatasync keeps nothing: the
// syncer's fdatasync is the only one liminald makes, so this is the daemon
// without it, and it must lose writes too.
//
// Commands, from the module root (as root, with /dev/fuse):
//
//	go test ./reliability/powerloss/                               # short: 6 cuts
//	LIMINALD_LONG=1 go test -timeout 30m ./reliability/powerloss/  # long: 23 cuts
package powerloss
