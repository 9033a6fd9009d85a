package conversation

import (
	"errors"
	"fmt"
)

// The rule errors. Each maps one to one to a wire error code (SPEC §3):
// unknown_message, already_finished and step_conflict. A
// *SequenceConflictError is sequence_conflict and a *FieldError is
// bad_request.
var (
	// ErrUnknownMessage: a start, step, finish or fail for a message that was
	// never received.
	ErrUnknownMessage = errors.New("message was never received")
	// ErrAlreadyFinished: a start, step or fail after the message finished.
	ErrAlreadyFinished = errors.New("message already finished")
	// ErrStepConflict: a completed step recorded again with other output.
	ErrStepConflict = errors.New("step already completed with different output")
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
