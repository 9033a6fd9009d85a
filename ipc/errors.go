package ipc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"liminald/conversation"
)

// The fixed errors of package ipc.
var (
	// ErrForbidden: the peer is not allowed. An Admit hook returns it (or an
	// error wrapping it) to refuse a connection with the forbidden code.
	ErrForbidden = errors.New("peer is not allowed")
	// ErrServerClosed: Serve was called after Shutdown began, or returns
	// because it did.
	ErrServerClosed = errors.New("ipc: server closed")
	// ErrClientClosed: the client was closed, or its connection ended.
	ErrClientClosed = errors.New("ipc: client closed")
	// ErrUnsubscribed: the subscription was ended by Unsubscribe or Close.
	ErrUnsubscribed = errors.New("ipc: unsubscribed")
)

// Code is a wire error code (SPEC §3). Codes are stable: new ones may be
// added, none changed.
//
// A Code is an error itself, so that errors.Is(err, ipc.CodeStepConflict)
// reports whether err is an *Error with that code.
type Code string

// The wire error codes.
const (
	CodeBadRequest       Code = "bad_request"
	CodeLineTooLong      Code = "line_too_long"
	CodeUnknownOp        Code = "unknown_op"
	CodeUnknownMessage   Code = "unknown_message"
	CodeAlreadyFinished  Code = "already_finished"
	CodeStepConflict     Code = "step_conflict"
	CodeSequenceConflict Code = "sequence_conflict"
	CodeForbidden        Code = "forbidden"
	CodeUnavailable      Code = "unavailable"
	CodeShuttingDown     Code = "shutting_down"
	CodeInternal         Code = "internal"
)

// Error returns the code itself.
func (c Code) Error() string { return string(c) }

// Retryable reports whether a request that failed with c may succeed if
// sent again unchanged: true for unavailable, shutting_down and internal.
func (c Code) Retryable() bool {
	switch c {
	case CodeUnavailable, CodeShuttingDown, CodeInternal:
		return true
	}
	return false
}

// Known reports whether c is one of the codes of SPEC §3.
func (c Code) Known() bool {
	switch c {
	case CodeBadRequest, CodeLineTooLong, CodeUnknownOp, CodeUnknownMessage, CodeAlreadyFinished,
		CodeStepConflict, CodeSequenceConflict, CodeForbidden, CodeUnavailable, CodeShuttingDown, CodeInternal:
		return true
	}
	return false
}

// Error is a failure reply: its code, message, whether it may be retried,
// and the details the error object carries beside them (numbers as
// json.Number): "field" for bad_request, "expected" and "actual" for
// sequence_conflict.
//
// errors.Is(err, code) matches its Code; it also unwraps to the domain
// error of its code, so errors.Is(err, conversation.ErrStepConflict) and
// errors.As(err, &sequenceConflict) work on the client side too.
type Error struct {
	Code      Code
	Message   string
	Retryable bool
	Details   map[string]any
}

func (e *Error) Error() string {
	if e.Message == "" {
		return string(e.Code)
	}
	return string(e.Code) + ": " + e.Message
}

// Is reports whether target is e's Code.
func (e *Error) Is(target error) bool {
	c, ok := target.(Code)
	return ok && c == e.Code
}

// Unwrap returns the domain error of e's code: conversation.ErrUnknownMessage,
// ErrAlreadyFinished, ErrStepConflict, ErrUnavailable, ErrClosed (for
// shutting_down), a *conversation.SequenceConflictError, a
// *conversation.FieldError naming the field, or ErrForbidden; nil for the
// others.
func (e *Error) Unwrap() error {
	switch e.Code {
	case CodeUnknownMessage:
		return conversation.ErrUnknownMessage
	case CodeAlreadyFinished:
		return conversation.ErrAlreadyFinished
	case CodeStepConflict:
		return conversation.ErrStepConflict
	case CodeUnavailable:
		return conversation.ErrUnavailable
	case CodeShuttingDown:
		return conversation.ErrClosed
	case CodeForbidden:
		return ErrForbidden
	case CodeSequenceConflict:
		return &conversation.SequenceConflictError{Expected: e.detailInt("expected"), Actual: e.detailInt("actual")}
	case CodeBadRequest:
		if f, ok := e.Details["field"].(string); ok {
			return &conversation.FieldError{Field: f, Problem: strings.TrimPrefix(e.Message, f+" ")}
		}
	}
	return nil
}

func (e *Error) detailInt(key string) int64 {
	switch v := e.Details[key].(type) {
	case json.Number:
		n, _ := v.Int64()
		return n
	case float64:
		return int64(v)
	case int64:
		return v
	}
	return 0
}

// errorCodes is the one table from errors to wire codes, tried in order
// with errors.Is after the structured errors (see wireError).
var errorCodes = []struct {
	err  error
	code Code
}{
	{conversation.ErrUnknownMessage, CodeUnknownMessage},
	{conversation.ErrAlreadyFinished, CodeAlreadyFinished},
	{conversation.ErrStepConflict, CodeStepConflict},
	{conversation.ErrUnavailable, CodeUnavailable},
	{conversation.ErrClosed, CodeShuttingDown},
	{ErrForbidden, CodeForbidden},
	// The store's context is only cancelled when Shutdown gives up waiting.
	{context.Canceled, CodeShuttingDown},
}

// wireError returns the wire error of err: an *Error as it is, a
// *conversation.FieldError as bad_request naming the field, a
// *conversation.SequenceConflictError as sequence_conflict with expected
// and actual, the errors of errorCodes by their code, and anything else as
// internal.
func wireError(err error) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	var fe *conversation.FieldError
	if errors.As(err, &fe) {
		return &Error{Code: CodeBadRequest, Message: fe.Error(), Details: map[string]any{"field": fe.Field}}
	}
	var sc *conversation.SequenceConflictError
	if errors.As(err, &sc) {
		return &Error{Code: CodeSequenceConflict, Message: sc.Error(), Details: map[string]any{"expected": sc.Expected, "actual": sc.Actual}}
	}
	for _, m := range errorCodes {
		if errors.Is(err, m.err) {
			return &Error{Code: m.code, Message: err.Error(), Retryable: m.code.Retryable()}
		}
	}
	return &Error{Code: CodeInternal, Message: "internal error: " + err.Error(), Retryable: true}
}

// badRequest returns a bad_request error without a field.
func badRequest(format string, args ...any) *Error {
	return &Error{Code: CodeBadRequest, Message: fmt.Sprintf(format, args...)}
}

// fieldError returns the bad_request error of field.
func fieldError(field, problem string) error {
	return &conversation.FieldError{Field: field, Problem: problem}
}
