package conversation

import (
	"errors"
	"strings"
	"testing"
)

// TestLimits checks the §7 arguments that a request may leave out but
// not give empty: a fingerprint, a reason, a worker, a lease. (A Command
// holds one left out as "" or 0, so Command.Validate cannot see them.)
func TestLimits(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		wantField string // "" for valid
	}{
		{"FingerprintEmpty", ValidFingerprint(""), "fingerprint"},
		{"FingerprintOneByte", ValidFingerprint("a"), ""},
		{"FingerprintAt256Bytes", ValidFingerprint(strings.Repeat("f", MaxFingerprintBytes)), ""},
		{"FingerprintOver256Bytes", ValidFingerprint(strings.Repeat("f", MaxFingerprintBytes+1)), "fingerprint"},
		{"FingerprintInvalidUTF8", ValidFingerprint("\xc3("), "fingerprint"},
		{"ReasonEmpty", ValidText("reason", ""), "reason"},
		{"ReasonOneByte", ValidText("reason", "r"), ""},
		{"ReasonAt64KiB", ValidText("reason", strings.Repeat("r", MaxErrorBytes)), ""},
		{"ReasonOver64KiB", ValidText("reason", strings.Repeat("r", MaxErrorBytes+1)), "reason"},
		{"ReasonInvalidUTF8", ValidText("reason", "\xff"), "reason"},
		{"WorkerEmpty", ValidName("worker", ""), "worker"},
		{"WorkerAt256Bytes", ValidName("worker", strings.Repeat("w", MaxNameBytes)), ""},
		{"WorkerOver256Bytes", ValidName("worker", strings.Repeat("w", MaxNameBytes+1)), "worker"},
		{"WorkerControlCharacter", ValidName("worker", "w\x7f"), "worker"},
		{"LeaseZero", ValidLease(0), "lease_ms"},
		{"LeaseNegative", ValidLease(-1), "lease_ms"},
		{"LeaseOne", ValidLease(1), ""},
		{"LeaseADay", ValidLease(86_400_000), ""},
		{"LeaseOverADay", ValidLease(86_400_001), "lease_ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.wantField == "" {
				if tt.err != nil {
					t.Errorf("got %v, want nil", tt.err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(tt.err, &fe) || fe.Field != tt.wantField {
				t.Errorf("got %v, want a *FieldError naming %q", tt.err, tt.wantField)
			}
		})
	}
}
