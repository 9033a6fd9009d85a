// Package ipc is the wire side of liminald: the JSON-lines protocol of SPEC
// §3 over a stream socket, the server loop over connections, and the Go
// client.
//
// # Wire format
//
// A request is one JSON object on one line; a reply is one JSON object on
// one line, in request order on its connection. Replies and pushes are
// encoded by hand (strconv appends, conversation.AppendJSONString and
// Event.AppendJSON) into reused buffers; requests are decoded by a small
// scanner over the line, after the line is checked to be valid UTF-8 and
// valid JSON. Field names match exactly (encoding/json would match them
// case-insensitively), a known field given twice is a bad_request, and
// unknown fields are ignored. A JSON null counts as an absent field.
//
// A line's length is its bytes before the "\n" (and a "\r" before it). A
// last line without "\n" before the client closes its writing half is still
// a line. A line of JSON whitespace only is blank and ignored.
//
// # Connections
//
// Each connection has a reader goroutine that reads lines and dispatches
// requests, a writer goroutine that writes replies in request order and
// pushes as they come, and a goroutine per read in flight beside others
// (at most 64 requests in flight; with 64 unanswered the reader stops
// reading until replies drain). A read on an idle connection runs on the
// reader. A write has no goroutine of its own unless it waits for an
// earlier request: the store's WriteAsync calls back with its outcome once
// it is durable, and the callback only hands that outcome to the writer
// goroutine, which encodes the reply and tells Observe. So no reply is
// encoded, and no metric observed, on the store's goroutines.
//
// Requests run concurrently, so that the writes of one pipelining client
// are group-committed together, but the requests of one connection that
// name the same conversation run one after another, in request order: a
// pipelined receive then start of a message are never reordered, a read
// sees the writes before it, and writes with expected_seq land in the order
// they were sent. The store answers a write only after its commit and does
// not say when it was queued, so ordering by conversation is the finest
// order that keeps these promises. A conversations request waits for
// every request before it on the connection.
//
// Replies are buffered and flushed when no further reply or push is ready;
// a write that does not complete within the write timeout ends the
// connection, so a client that never reads cannot stall the daemon.
//
// A client that closes its writing half is done: its requests are
// answered, its subscriptions end, and the connection closes.
//
// # Subscriptions
//
// A subscription first subscribes to the store's live feed, then reads the
// log from the requested position page by page, then delivers the live
// batches, skipping what it already delivered (by pos). Its catch-up goes at
// the client's pace; while live, a batch that finds the connection's
// outgoing queue full, or a store subscription that overflowed, ends the
// subscription with a lagged push giving where to resume. No writer ever
// waits on a subscriber.
//
// # Shutdown
//
// Server.Shutdown stops accepting, answers every request already read,
// answers requests read during a short grace period with shutting_down,
// flushes and closes. See Server.Shutdown.
package ipc
