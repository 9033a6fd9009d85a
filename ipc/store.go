package ipc

import (
	"context"
	"time"

	"liminald/conversation"
)

// Store is the event log the server serves. The daemon implements it with
// a small adapter around *sqlitestore.Store or *pgstore.Store.
//
// WriteAsync, Decide and the reads give the errors of the domain
// (*conversation.FieldError, ErrUnknownMessage, ErrAlreadyFinished,
// ErrStepConflict, *SequenceConflictError, *BusyError, *FencedError,
// ErrQuarantined, ErrNotQuarantined, *FingerprintMismatchError, errors
// wrapping ErrUnavailable, ErrClosed); the server maps them to wire codes
// through the table of codes.
type Store interface {
	// WriteAsync queues cmd and returns; then is called exactly once with
	// its outcome, once the write is durable, or at once when it is
	// refused before it is queued. then may run on the store's own
	// goroutine between two commits, so it must not block: the server's
	// only hands the outcome to the connection's writer goroutine, which
	// encodes the reply.
	WriteAsync(ctx context.Context, cmd conversation.Command, then func(conversation.Outcome, error))
	// Decide decides delivery d of message id at the store's Moment,
	// without appending.
	Decide(ctx context.Context, conv, id string, d conversation.Delivery) (conversation.Decision, error)
	// Horizon returns the forgotten_before of conversation conv (SPEC §8).
	Horizon(ctx context.Context, conv string) (conversation.Horizon, error)
	// Moment is what the rules judge a message by now: the store's clock
	// and the max_attempts in force.
	Moment() conversation.Moment
	// Message returns nil if the message was never received.
	Message(ctx context.Context, conv, id string) (*conversation.Message, error)
	// Messages lists up to limit messages of conv after message id after,
	// by id; filter is "" or a status, "leased" or "quarantined", judged
	// at mo.
	Messages(ctx context.Context, conv, filter, after string, limit int, mo conversation.Moment) ([]conversation.Message, error)
	// MessageEvents returns the latest limit events of message m, by seq.
	MessageEvents(ctx context.Context, conv string, m *conversation.Message, limit int) ([]conversation.Event, error)
	Steps(ctx context.Context, conv, id string) ([]conversation.StepRecord, error)
	Conversation(ctx context.Context, name string) (conversation.Summary, error)
	Conversations(ctx context.Context, after string, limit int) ([]conversation.Summary, error)
	Events(ctx context.Context, conv string, fromSeq int64, limit int) ([]conversation.Event, error)
	EventsFrom(ctx context.Context, fromPos int64, limit int) ([]conversation.Event, error)
	// Subscribe starts a subscription to every batch committed from now on,
	// holding up to capacity batches not yet received.
	Subscribe(capacity int) Subscription
	Stats(ctx context.Context) (StoreStats, error)
}

// Subscription is a store's live feed of committed batches.
type Subscription interface {
	// Events returns the committed batches, in pos order, from the
	// subscription on; it is closed when the subscription ends. The batches
	// are shared and must not be modified.
	Events() <-chan []conversation.Event
	// Lagged reports, once the channel is closed, whether the subscription
	// ended because it fell behind.
	Lagged() bool
	// Close ends the subscription; it may be called more than once.
	Close()
}

// StoreStats are the figures of a store that the stats op reports.
type StoreStats struct {
	Conversations, Messages, Events, DBBytes int64
	// Since the store opened:
	Commits, FailedBatches, Requests, Appended int64
	MaxBatch                                   int
	CommitTotal, CommitMax                     time.Duration
	// Retention (SPEC §8): in the database, then since the store opened.
	Compacted, Tombstones, Dropped       int64
	Horizon                              conversation.Horizon
	CompactionPasses, CompactionFailures int64
	CompactionTotal, CompactionMax       time.Duration
}
