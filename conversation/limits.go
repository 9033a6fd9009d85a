package conversation

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Limits of SPEC §3.
const (
	MaxNameBytes  = 256       // conversation and message_id
	MaxErrorBytes = 64 << 10  // error text
	MaxStepIndex  = 1<<32 - 1 // step_index
)

// ValidName checks a conversation name or message id: 1 to 256 bytes of valid
// UTF-8 with no control characters. Returns a *FieldError naming field.
func ValidName(field, s string) error {
	switch {
	case len(s) == 0:
		return &FieldError{Field: field, Problem: "must not be empty"}
	case len(s) > MaxNameBytes:
		return &FieldError{Field: field, Problem: fmt.Sprintf("is %d bytes, over the limit of %d", len(s), MaxNameBytes)}
	case !utf8.ValidString(s):
		return &FieldError{Field: field, Problem: "is not valid UTF-8"}
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return &FieldError{Field: field, Problem: "must not contain control characters"}
		}
	}
	return nil
}

// ValidError checks an error text: 1 byte to 64 KiB of valid UTF-8.
// Returns a *FieldError naming "error".
func ValidError(s string) error {
	switch {
	case len(s) == 0:
		return &FieldError{Field: "error", Problem: "must not be empty"}
	case len(s) > MaxErrorBytes:
		return &FieldError{Field: "error", Problem: fmt.Sprintf("is %d bytes, over the limit of %d", len(s), MaxErrorBytes)}
	case !utf8.ValidString(s):
		return &FieldError{Field: "error", Problem: "is not valid UTF-8"}
	}
	return nil
}
