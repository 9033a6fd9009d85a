package ipc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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
	// Protocol 2 (SPEC §7).
	CodeBusy                Code = "busy"
	CodeFenced              Code = "fenced"
	CodeQuarantined         Code = "quarantined"
	CodeNotQuarantined      Code = "not_quarantined"
	CodeFingerprintMismatch Code = "fingerprint_mismatch"
)

// Error returns the code itself.
func (c Code) Error() string { return string(c) }

// Retryable reports whether a request that failed with c may succeed if
// sent again unchanged: true for unavailable, shutting_down, internal and
// busy.
func (c Code) Retryable() bool {
	row := rowOf(c)
	return row != nil && row.retryable
}

// Known reports whether c is one of the codes of SPEC §3 and §7.
func (c Code) Known() bool { return rowOf(c) != nil }

// Error is a failure reply: its code, message, whether it may be retried,
// and the details the error object carries beside them (numbers as
// json.Number): "field" for bad_request, "expected" and "actual" for
// sequence_conflict, "worker", "token" and "retry_after_ms" for busy,
// "token" and "current_token" for fenced, "stored" for
// fingerprint_mismatch.
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

// Unwrap returns the domain error of e's code, as the table of codes
// gives it: conversation.ErrUnknownMessage, ErrAlreadyFinished,
// ErrStepConflict, ErrUnavailable, ErrClosed (for shutting_down),
// ErrQuarantined, ErrNotQuarantined, a *conversation.SequenceConflictError,
// *BusyError, *FencedError or *FingerprintMismatchError built from the
// details, a *conversation.FieldError naming the field of the "field"
// detail (its Problem is the whole message), or ErrForbidden; nil for the
// others.
func (e *Error) Unwrap() error {
	row := rowOf(e.Code)
	switch {
	case row == nil:
		return nil
	case row.fromWire != nil:
		return row.fromWire(e)
	case len(row.errs) > 0:
		return row.errs[0]
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

// codeRow is a row of codes: a wire code and the domain errors it stands
// for. A code stands for sentinel errors (errs, matched with errors.Is; the
// first is the one a client unwraps to), or for a structured error, which
// toWire recognises and gives its details and fromWire builds back from
// them, or for no domain error at all.
type codeRow struct {
	code      Code
	retryable bool
	errs      []error
	toWire    func(err error) (details map[string]any, ok bool)
	fromWire  func(e *Error) error
}

// codes is the one table between domain errors and wire codes, read both
// ways: wireError finds the first row whose domain error err is, and
// (*Error).Unwrap the domain error of a code. A code is known when it has
// a row.
var codes = []codeRow{
	structured(CodeBadRequest, false,
		func(e *conversation.FieldError) map[string]any { return map[string]any{"field": e.Field} },
		func(w *Error) (*conversation.FieldError, bool) {
			f, ok := w.Details["field"].(string)
			return &conversation.FieldError{Field: f, Problem: w.Message}, ok
		}),
	{code: CodeLineTooLong},
	{code: CodeUnknownOp},
	{code: CodeUnknownMessage, errs: []error{conversation.ErrUnknownMessage}},
	{code: CodeAlreadyFinished, errs: []error{conversation.ErrAlreadyFinished}},
	{code: CodeStepConflict, errs: []error{conversation.ErrStepConflict}},
	structured(CodeSequenceConflict, false,
		func(e *conversation.SequenceConflictError) map[string]any {
			return map[string]any{"expected": e.Expected, "actual": e.Actual}
		},
		func(w *Error) (*conversation.SequenceConflictError, bool) {
			return &conversation.SequenceConflictError{Expected: w.detailInt("expected"), Actual: w.detailInt("actual")}, true
		}),
	{code: CodeForbidden, errs: []error{ErrForbidden}},
	{code: CodeUnavailable, retryable: true, errs: []error{conversation.ErrUnavailable}},
	// A store call's context is cancelled when Shutdown gives up waiting,
	// or when its connection ended before the call was answered.
	{code: CodeShuttingDown, retryable: true, errs: []error{conversation.ErrClosed, context.Canceled}},
	{code: CodeInternal, retryable: true},
	structured(CodeBusy, true,
		func(e *conversation.BusyError) map[string]any {
			return map[string]any{"worker": nullable(e.Worker), "token": e.Token, "retry_after_ms": e.RetryAfterMS}
		},
		func(w *Error) (*conversation.BusyError, bool) {
			worker, _ := w.Details["worker"].(string)
			return &conversation.BusyError{Worker: worker, Token: w.detailInt("token"), RetryAfterMS: w.detailInt("retry_after_ms")}, true
		}),
	structured(CodeFenced, false,
		func(e *conversation.FencedError) map[string]any {
			var current any // null for a message never started
			if e.CurrentToken > 0 {
				current = e.CurrentToken
			}
			return map[string]any{"token": e.Token, "current_token": current}
		},
		func(w *Error) (*conversation.FencedError, bool) {
			return &conversation.FencedError{Token: w.detailInt("token"), CurrentToken: w.detailInt("current_token")}, true
		}),
	{code: CodeQuarantined, errs: []error{conversation.ErrQuarantined}},
	{code: CodeNotQuarantined, errs: []error{conversation.ErrNotQuarantined}},
	structured(CodeFingerprintMismatch, false,
		func(e *conversation.FingerprintMismatchError) map[string]any {
			return map[string]any{"stored": e.Stored}
		},
		func(w *Error) (*conversation.FingerprintMismatchError, bool) {
			stored, _ := w.Details["stored"].(string)
			return &conversation.FingerprintMismatchError{Stored: stored}, true
		}),
}

// structured returns the row of code for the structured domain error T:
// details gives the wire details of one, and build makes one back from a
// wire error's details (false when they do not hold it).
func structured[T error](code Code, retryable bool, details func(T) map[string]any, build func(*Error) (T, bool)) codeRow {
	return codeRow{
		code:      code,
		retryable: retryable,
		toWire: func(err error) (map[string]any, bool) {
			var t T
			if !errors.As(err, &t) {
				return nil, false
			}
			return details(t), true
		},
		fromWire: func(w *Error) error {
			if t, ok := build(w); ok {
				return t
			}
			return nil
		},
	}
}

// rowOf returns the row of code c, or nil for a code it does not know.
func rowOf(c Code) *codeRow {
	for i := range codes {
		if codes[i].code == c {
			return &codes[i]
		}
	}
	return nil
}

// nullable is s, or nil (JSON null) for "".
func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// wireError returns the wire error of err: an *Error as it is, a domain
// error by its row of codes (with its details), and anything else as
// internal.
func wireError(err error) *Error {
	var we *Error
	if errors.As(err, &we) {
		return we
	}
	for _, row := range codes {
		if row.toWire != nil {
			if details, ok := row.toWire(err); ok {
				return &Error{Code: row.code, Message: err.Error(), Retryable: row.retryable, Details: details}
			}
		}
		for _, target := range row.errs {
			if errors.Is(err, target) {
				return &Error{Code: row.code, Message: err.Error(), Retryable: row.retryable}
			}
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
