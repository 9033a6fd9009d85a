package conversation

import (
	"strings"
	"testing"
)

// TestReason: each rule's sentence names the events behind the decision.
func TestReason(t *testing.T) {
	mo := Moment{Now: 5000, MaxAttempts: 2}
	leased := &Message{ID: "m", Status: StatusInProgress, StartedSeq: 3, Worker: "w1", LeaseUntil: 9000, LastStep: NoStep, Attempts: 1}
	for _, tt := range []struct {
		name string
		m    *Message
		want []string
	}{
		{"NeverSeen", nil, []string{"No message_received", "never seen"}},
		{"Finished", &Message{Status: StatusFinished, LastSeq: 7}, []string{"processing_finished is at seq 7", "skip"}},
		{"Leased", leased, []string{"processing_started at seq 3", `worker "w1"`, "lease_renewed", "4000 ms from now"}},
		{"Quarantined", &Message{Status: StatusErrored, StartedSeq: 4, Attempts: 2, Error: "boom", LastStep: NoStep},
			[]string{"started 2 times", "max_attempts is 2", "quarantined"}},
		{"InProgressWithoutLease", &Message{Status: StatusInProgress, StartedSeq: 2, LastStep: 1, Attempts: 1},
			[]string{"processing_started at seq 2", "held no lease", "resume it from step 2", "highest completed step 1"}},
		{"InProgressLapsed", &Message{Status: StatusInProgress, StartedSeq: 2, LastStep: NoStep, LeaseUntil: 4000, Attempts: 1},
			[]string{"lapsed at 1970-01-01T00:00:04.000Z", "no step completed"}},
		{"Received", &Message{Status: StatusReceived, ReceivedSeq: 1, LastStep: NoStep}, []string{"message_received is at seq 1", "never started"}},
		{"Errored", &Message{Status: StatusErrored, StartedSeq: 6, Error: "boom", LastStep: NoStep, Attempts: 1},
			[]string{"latest start (seq 6)", `error_occurred ("boom")`}},
		{"ErroredNeverStarted", &Message{Status: StatusErrored, Error: "bad input", LastStep: NoStep},
			[]string{"never started", `error_occurred ("bad input")`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := Redelivery(tt.m, mo.Now, mo.MaxAttempts)
			got := Reason(d, tt.m, mo)
			for _, want := range tt.want {
				if !strings.Contains(got, want) {
					t.Errorf("Reason(%v) = %q, want it to say %q", d.Rule, got, want)
				}
			}
			if strings.Contains(got, "seq 0)") && tt.name == "ErroredNeverStarted" {
				t.Errorf("Reason names seq 0, the conversation's first event, as a start: %q", got)
			}
		})
	}
}
