package conversation

import (
	"errors"
	"fmt"
)

// The errors of the domain. Each maps one to one to a wire error code
// (SPEC §3 and §7): unknown_message, already_finished, step_conflict,
// unavailable, shutting_down, quarantined and not_quarantined. A
// *SequenceConflictError is sequence_conflict, a *FieldError bad_request,
// a *BusyError busy, a *FencedError fenced and a
// *FingerprintMismatchError fingerprint_mismatch.
var (
	// ErrUnknownMessage: a start, step, finish or fail for a message that was
	// never received.
	ErrUnknownMessage = errors.New("message was never received")
	// errForgottenMessage is ErrUnknownMessage in a conversation that
	// dropped tombstones: the message may be one it forgot.
	errForgottenMessage = fmt.Errorf("%w, or it finished before the conversation's forgotten_before and was forgotten", ErrUnknownMessage)
	// ErrAlreadyFinished: a start, step or fail after the message finished.
	ErrAlreadyFinished = errors.New("message already finished")
	// ErrStepConflict: a completed step recorded again with other output.
	ErrStepConflict = errors.New("step already completed with different output")

	// ErrUnavailable: the log cannot be written now (disk full, read-only
	// file, I/O error); nothing acknowledged is lost and the write may be
	// retried. Stores wrap it with what failed.
	ErrUnavailable = errors.New("log cannot be written now")
	// ErrClosed: the log is closing or closed.
	ErrClosed = errors.New("log is closed")

	// ErrQuarantined: a start that would append, for a message started
	// max_attempts times since it was received or released.
	ErrQuarantined = errors.New("message is quarantined: it was started max_attempts times; release it to try again")
	// ErrNotQuarantined: a release of a message that is not quarantined.
	ErrNotQuarantined = errors.New("message is not quarantined")
)

// BusyError is returned for a start of a message that another worker (or
// a start without a worker) holds a live lease on.
type BusyError struct {
	Worker       string // the lease holder, "" if it gave none
	Token        int64  // its token
	RetryAfterMS int64  // until the lease lapses, at least 1
}

func (e *BusyError) Error() string {
	holder := "a worker"
	if e.Worker != "" {
		holder = fmt.Sprintf("worker %q", e.Worker)
	}
	return fmt.Sprintf("%s holds the message with token %d for %d ms more", holder, e.Token, e.RetryAfterMS)
}

// FencedError is returned for a step, finish, fail or renew whose token is
// not the message's current one, and for a renew of a message not in
// progress.
type FencedError struct {
	Token        int64 // the request's token
	CurrentToken int64 // the message's token, 0 if it was never started or is compacted
	// Compacted is set when the message is a tombstone, which keeps no
	// token (SPEC §8).
	Compacted bool
}

func (e *FencedError) Error() string {
	switch {
	case e.Compacted:
		return fmt.Sprintf("token %d is not current: the message finished and was compacted, and its tombstone keeps no token", e.Token)
	case e.CurrentToken == 0:
		return fmt.Sprintf("token %d is not current: the message was never started", e.Token)
	case e.CurrentToken == e.Token: // a renew of a message no longer in progress
		return fmt.Sprintf("token %d is current, but the message is no longer in progress: there is no lease to renew", e.Token)
	}
	return fmt.Sprintf("token %d is not current: the message's token is %d", e.Token, e.CurrentToken)
}

// FingerprintMismatchError is returned for a receive or decide whose
// fingerprint differs from the one the message was received with.
type FingerprintMismatchError struct {
	Stored string
}

func (e *FingerprintMismatchError) Error() string {
	return fmt.Sprintf("the message id was received with another fingerprint (%q): it names another payload", e.Stored)
}

// SequenceConflictError is returned when a request's expected_seq is not the
// conversation's next seq and the request is not a retry of the event stored
// at expected_seq.
type SequenceConflictError struct {
	Expected int64 // the request's expected_seq
	Actual   int64 // the conversation's next seq
}

func (e *SequenceConflictError) Error() string {
	return fmt.Sprintf("expected seq %d, but the next seq is %d", e.Expected, e.Actual)
}

// FieldError is an argument that is missing or outside its limits.
type FieldError struct {
	Field   string
	Problem string
}

func (e *FieldError) Error() string { return e.Field + " " + e.Problem }
