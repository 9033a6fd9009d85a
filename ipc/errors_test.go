package ipc

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"liminald/conversation"
)

// TestError_RoundTrip sends every domain error of the table of codes over
// the wire and back: the server's wire error has the row's code and
// retryability, and the client's error unwraps to the same domain error.
func TestError_RoundTrip(t *testing.T) {
	domain := []error{
		&conversation.FieldError{Field: "message_id", Problem: "is required"},
		conversation.ErrUnknownMessage,
		conversation.ErrAlreadyFinished,
		conversation.ErrStepConflict,
		&conversation.SequenceConflictError{Expected: 2, Actual: 5},
		ErrForbidden,
		fmt.Errorf("append events: %w: disk full", conversation.ErrUnavailable),
		conversation.ErrClosed,
	}
	for _, err := range domain {
		w := wireError(err)
		if !w.Code.Known() || w.Code == CodeInternal {
			t.Errorf("wireError(%v).Code = %q, want its own code", err, w.Code)
			continue
		}
		if w.Retryable != w.Code.Retryable() {
			t.Errorf("wireError(%v).Retryable = %v, want %v", err, w.Retryable, w.Code.Retryable())
		}
		// The client parses the reply line.
		line := appendFailure(nil, nil, w)
		var reply struct{ Error json.RawMessage }
		if err := json.Unmarshal(line, &reply); err != nil {
			t.Fatalf("failure line %s: %v", line, err)
		}
		got := decodeError(reply.Error)
		if got.Code != w.Code || got.Retryable != w.Retryable || got.Message != err.Error() {
			t.Errorf("%v over the wire = %+v, want code %q, message %q", err, got, w.Code, err.Error())
		}
		var fe *conversation.FieldError
		var sc *conversation.SequenceConflictError
		switch want := err.(type) {
		case *conversation.FieldError:
			if !errors.As(got, &fe) || fe.Field != want.Field {
				t.Errorf("%v unwraps to %v, want a field error of %q", got, fe, want.Field)
			}
		case *conversation.SequenceConflictError:
			if !errors.As(got, &sc) || *sc != *want {
				t.Errorf("%v unwraps to %v, want %v", got, sc, want)
			}
		default:
			if !errors.Is(got, errors.Unwrap(err)) && !errors.Is(got, err) {
				t.Errorf("%v does not unwrap to %v", got, err)
			}
		}
	}
	if w := wireError(errors.New("boom")); w.Code != CodeInternal || !w.Retryable {
		t.Errorf("wireError(boom) = %+v, want retryable internal", w)
	}
	for _, c := range []Code{CodeLineTooLong, CodeUnknownOp, CodeInternal} {
		if err := (&Error{Code: c}).Unwrap(); err != nil {
			t.Errorf("Error{%q}.Unwrap() = %v, want nil", c, err)
		}
	}
}
