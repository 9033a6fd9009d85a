package conversation

import (
	"fmt"
	"time"
)

// Reason returns one English sentence saying why a delivery of a message
// whose known state is m (nil if never received) gets decision d at mo:
// the events and the setting behind it.
func Reason(d Decision, m *Message, mo Moment) string {
	switch d.Rule {
	case RuleNeverSeen:
		if d.Horizon.Set {
			return fmt.Sprintf("No message_received event or tombstone names this message, so it is not known; the conversation forgot the messages that finished up to %s, and a message sent after that was not among them (given without sent_at, the caller judges): a receive appends a message_received and the caller starts it from step 0.",
				MillisTime(d.Horizon.Before))
		}
		return "No message_received event names this message, so it was never seen: a receive appends one and the caller starts it from step 0."
	case RuleForgotten:
		return fmt.Sprintf("No message_received event or tombstone names this message, and it was sent at or before %s, when the conversation forgot the messages finished up to then: it may have been processed and forgotten, so nothing is appended and the caller chooses.",
			MillisTime(d.Horizon.Before))
	case RuleCompacted:
		return fmt.Sprintf("Its processing_finished was at seq %d, at %s, and its events were compacted since; its tombstone says it is done: skip it.",
			m.LastSeq, MillisTime(m.LastTS))
	case RuleFinished:
		return fmt.Sprintf("Its processing_finished is at seq %d, so it is done: skip it.", m.LastSeq)
	case RuleLeased:
		return fmt.Sprintf("Its processing_started at seq %d%s holds a lease, set by that start or its latest lease_renewed, until %s, %d ms from now: another worker is on it, so try again after the lease lapses.",
			m.StartedSeq, byWorker(m.Worker), MillisTime(m.LeaseUntil), d.RetryAfterMS)
	case RuleQuarantined:
		return fmt.Sprintf("It was started %d times (processing_started events) since it was received or released, and max_attempts is %d, so it is quarantined: an operator releases it to try again.",
			m.Attempts, mo.MaxAttempts)
	case RuleInProgress:
		lease := "held no lease"
		if m.LeaseUntil > 0 {
			lease = "held a lease that lapsed at " + MillisTime(m.LeaseUntil)
		}
		return fmt.Sprintf("Its processing_started at seq %d%s %s, and no processing_finished or error_occurred followed: resume it from step %d%s.",
			m.StartedSeq, byWorker(m.Worker), lease, d.ResumeFrom, completed(m))
	case RuleReceived:
		return fmt.Sprintf("Its message_received is at seq %d and it was never started since: resume it from step %d%s.", m.ReceivedSeq, d.ResumeFrom, completed(m))
	case RuleErrored:
		if m.StartedSeq == 0 {
			return fmt.Sprintf("It was never started, and an error_occurred (%q) was recorded for it, which allows a retry: resume it from step %d%s.",
				m.Error, d.ResumeFrom, completed(m))
		}
		return fmt.Sprintf("Its latest start (seq %d) was followed by an error_occurred (%q), which allows a retry: resume it from step %d%s.",
			m.StartedSeq, m.Error, d.ResumeFrom, completed(m))
	}
	return "The decision follows no known rule."
}

func byWorker(w string) string {
	if w == "" {
		return ""
	}
	return fmt.Sprintf(" by worker %q", w)
}

// completed names the highest completed step of m, if any.
func completed(m *Message) string {
	if m.LastStep == NoStep {
		return ", as no step completed"
	}
	return fmt.Sprintf(", after its highest completed step %d", m.LastStep)
}

// MillisTime formats epoch ms, the times of the log (ts, received_at,
// lease expiries), as an RFC 3339 time in UTC to the millisecond.
func MillisTime(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}
