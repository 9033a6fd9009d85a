package conversation

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// Limits of SPEC §3 and §7.
const (
	MaxNameBytes        = 256        // conversation, message_id and worker
	MaxErrorBytes       = 64 << 10   // error text, and a release's reason
	MaxStepIndex        = 1<<32 - 1  // step_index
	MaxLeaseMS          = 86_400_000 // lease_ms: a day
	MaxFingerprintBytes = 256        // fingerprint
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
func ValidError(s string) error { return ValidText("error", s) }

// ValidText checks the text of field, an error or a reason: 1 byte to
// 64 KiB of valid UTF-8. Returns a *FieldError naming field.
func ValidText(field, s string) error { return validString(field, s, MaxErrorBytes) }

// ValidFingerprint checks a fingerprint: 1 to 256 bytes of valid UTF-8.
// Returns a *FieldError naming "fingerprint".
func ValidFingerprint(s string) error { return validString("fingerprint", s, MaxFingerprintBytes) }

// validString checks that s is 1 to limit bytes of valid UTF-8. Returns a
// *FieldError naming field.
func validString(field, s string, limit int) error {
	switch {
	case len(s) == 0:
		return &FieldError{Field: field, Problem: "must not be empty"}
	case len(s) > limit:
		return &FieldError{Field: field, Problem: fmt.Sprintf("is %d bytes, over the limit of %d", len(s), limit)}
	case !utf8.ValidString(s):
		return &FieldError{Field: field, Problem: "is not valid UTF-8"}
	}
	return nil
}

// ValidLease checks a lease_ms: 1 to 86,400,000 (a day). Returns a
// *FieldError naming "lease_ms".
func ValidLease(ms int64) error {
	if ms < 1 || ms > MaxLeaseMS {
		return &FieldError{Field: "lease_ms", Problem: fmt.Sprintf("must be from 1 to %d", MaxLeaseMS)}
	}
	return nil
}
