package conversation

import (
	"errors"
	"testing"
	"time"
)

// TestParseFilter: the messages op's status filters, and the rules that
// have the last word on each row a store's query returns.
func TestParseFilter(t *testing.T) {
	mo := Moment{Now: 1000, MaxAttempts: 2}
	leased := &Message{Status: StatusInProgress, LeaseUntil: 2000, Attempts: 5}
	expired := &Message{Status: StatusInProgress, LeaseUntil: 500, Attempts: 5}
	fresh := &Message{Status: StatusReceived, Attempts: 1}
	done := &Message{Status: StatusFinished, Attempts: 9}
	for _, c := range []struct {
		filter string
		keeps  []*Message
		drops  []*Message
	}{
		{"", []*Message{leased, expired, fresh, done}, nil},
		{"leased", []*Message{leased}, []*Message{expired, fresh, done}},
		{"quarantined", []*Message{expired}, []*Message{leased, fresh, done}},
		{"received", []*Message{fresh}, []*Message{leased, done}},
		{"finished", []*Message{done}, []*Message{fresh}},
	} {
		f, err := ParseFilter(c.filter)
		if err != nil {
			t.Fatalf("ParseFilter(%q): %v", c.filter, err)
		}
		for _, m := range c.keeps {
			if !f.Keep(m, mo) {
				t.Errorf("filter %q drops %+v", c.filter, m)
			}
		}
		for _, m := range c.drops {
			if f.Keep(m, mo) {
				t.Errorf("filter %q keeps %+v", c.filter, m)
			}
		}
	}
	for _, bad := range []string{"unknown", "done", "Leased"} {
		var fe *FieldError
		if _, err := ParseFilter(bad); !errors.As(err, &fe) || fe.Field != "status" {
			t.Errorf("ParseFilter(%q) = %v, want a FieldError naming status", bad, err)
		}
	}
}

// TestRetention_Every: half the deadline of the strictest setting, a
// deadline being max(1 s, a tenth of the setting); 0 keeps everything.
func TestRetention_Every(t *testing.T) {
	for _, c := range []struct {
		r    Retention
		want time.Duration
	}{
		{Retention{}, 0},
		{Retention{Finished: time.Millisecond}, 500 * time.Millisecond},
		{Retention{Finished: time.Hour}, 3 * time.Minute},
		{Retention{Finished: time.Hour, Tombstones: 10 * time.Minute}, 30 * time.Second},
	} {
		if got := c.r.Every(); got != c.want {
			t.Errorf("%+v.Every() = %v, want %v", c.r, got, c.want)
		}
	}
}
