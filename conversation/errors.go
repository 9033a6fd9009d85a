package conversation

import (
	"errors"
	"fmt"
)

// The errors of the domain. Each maps one to one to a wire error code
// (SPEC §3): unknown_message, already_finished, step_conflict, unavailable
// and shutting_down. A *SequenceConflictError is sequence_conflict and a
// *FieldError is bad_request.
var (
	// ErrUnknownMessage: a start, step, finish or fail for a message that was
	// never received.
	ErrUnknownMessage = errors.New("message was never received")
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
)

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
