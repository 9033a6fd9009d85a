package ipc

import "testing"

// TestRequest_Strings: escapes that encoding/json would turn into U+FFFD
// (an unpaired surrogate) are refused, so that two different ids never
// name one message; a paired surrogate is a character like any other.
func TestRequest_Strings(t *testing.T) {
	tests := []struct {
		raw  string
		lone bool
	}{
		{`"plain"`, false},
		{`"\u00e9"`, false},
		{`"\ud83d\ude00"`, false}, // 😀
		{`"a\\ud800"`, false},     // an escaped backslash, then text
		{`"\ud800"`, true},
		{`"\udc00"`, true},
		{`"\ud800x"`, true},
		{`"\ud800\u0041"`, true},
		{`"\ud800\ud800\udc00"`, true},
		{`"\ude00\ud83d"`, true},
	}
	for _, tt := range tests {
		if got := loneSurrogate([]byte(tt.raw)); got != tt.lone {
			t.Errorf("loneSurrogate(%s) = %v, want %v", tt.raw, got, tt.lone)
		}
	}
}
