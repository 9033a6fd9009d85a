// Package sqlitestore is the SQLite event log of liminald: the events of
// every conversation and the state tables that follow from them, kept in one
// database file in WAL mode through modernc.org/sqlite.
//
// One writer goroutine owns the single writer connection. Write requests
// from any number of callers wait in a bounded queue; the writer takes as
// many as are waiting, evaluates each against the current state with the
// conversation package (later requests seeing earlier ones), appends the
// accepted events and updates the state tables in one BEGIN IMMEDIATE
// transaction and commits. A syncer goroutine then fsyncs the WAL and only
// then answers every caller, while the writer builds the next batch. Many
// requests, one transaction, one fsync.
//
// Reads go through a small pool of read-only connections beside the writer,
// so they keep working when the writer cannot write. WAL checkpoints run in
// their own goroutine, off the write path.
package sqlitestore
