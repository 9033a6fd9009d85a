// Package ui is liminald's web view for local debugging (SPEC §9): a
// read-only HTTP server on a loopback address that shows what the daemon
// knows, as any client sees it: it speaks the protocol through an
// ipc.Client and never opens a database, so it works with every store.
//
// Pages: the conversations (counts by status, a name filter, paging); a
// conversation's messages (status filters, with an "in flight" preset and
// "quarantined", kept in the URL); one message's timeline (its events,
// steps' outputs as text or hex, errors, attempts, lease, and the explain
// sentence); and a live tail of a conversation or of everything, fed by a
// subscription as server-sent events. Everything it serves is embedded;
// the pages work without JavaScript but for the live parts.
//
// Access: the server only answers requests whose Host is a loopback name
// or address (so a DNS name rebound to 127.0.0.1 is refused), and only
// those that carry its random token, in the URL it prints or, after the
// first visit, in a cookie. Other local users cannot read payloads.
package ui
