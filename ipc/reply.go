package ipc

import (
	"encoding/base64"
	"encoding/json"
	"slices"
	"strconv"
	"time"

	"liminald/conversation"
)

// Replies are built by appending to a reused buffer: a success is
// appendOK, then the result's fields each as `,"key":value`, then
// appendEnd; a failure is appendFailure.

// appendOK starts a success reply to a request with the raw id (nil: null).
func appendOK(dst, id []byte) []byte {
	dst = appendID(dst, id)
	return append(dst, `,"ok":true`...)
}

func appendID(dst, id []byte) []byte {
	dst = append(dst, `{"id":`...)
	if id == nil {
		return append(dst, "null"...)
	}
	return append(dst, id...)
}

// appendEnd ends a reply or a push line.
func appendEnd(dst []byte) []byte { return append(dst, '}', '\n') }

// appendFailure appends the whole failure line of e to a request with the
// raw id (nil: null). Its details follow code, message and retryable, by
// key.
func appendFailure(dst, id []byte, e *Error) []byte {
	dst = appendID(dst, id)
	dst = append(dst, `,"ok":false,"error":{"code":`...)
	dst = conversation.AppendJSONString(dst, string(e.Code))
	dst = append(dst, `,"message":`...)
	dst = conversation.AppendJSONString(dst, e.Message)
	dst = append(dst, `,"retryable":`...)
	dst = strconv.AppendBool(dst, e.Code.Retryable())
	keys := make([]string, 0, len(e.Details))
	for k := range e.Details {
		if k != "code" && k != "message" && k != "retryable" {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		dst = append(dst, ',')
		dst = conversation.AppendJSONString(dst, k)
		dst = append(dst, ':')
		dst = appendAny(dst, e.Details[k])
	}
	return append(dst, "}}\n"...)
}

// appendAny appends a detail value: the types errors carry here, and
// anything else through encoding/json.
func appendAny(dst []byte, v any) []byte {
	switch v := v.(type) {
	case nil:
		return append(dst, "null"...)
	case string:
		return conversation.AppendJSONString(dst, v)
	case int64:
		return strconv.AppendInt(dst, v, 10)
	case int:
		return strconv.AppendInt(dst, int64(v), 10)
	case bool:
		return strconv.AppendBool(dst, v)
	case json.Number:
		return append(dst, v...)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return append(dst, "null"...)
	}
	return append(dst, b...)
}

// appendKey appends `,"key":`.
func appendKey(dst []byte, key string) []byte {
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	return append(dst, '"', ':')
}

func appendInt(dst []byte, key string, v int64) []byte {
	return strconv.AppendInt(appendKey(dst, key), v, 10)
}

func appendString(dst []byte, key, v string) []byte {
	return conversation.AppendJSONString(appendKey(dst, key), v)
}

// appendMillis appends d in milliseconds, to the microsecond.
func appendMillis(dst []byte, key string, d time.Duration) []byte {
	return strconv.AppendFloat(appendKey(dst, key), float64(d.Microseconds())/1000, 'f', -1, 64)
}

// appendDecisionFields appends the fields of a redelivery decision.
func appendDecisionFields(dst []byte, d conversation.Decision) []byte {
	dst = appendString(dst, "decision", d.Action.String())
	switch d.Action {
	case conversation.Resume:
		dst = appendInt(dst, "resume_from", d.ResumeFrom)
	case conversation.Busy:
		dst = appendNullable(dst, "worker", d.Worker)
		dst = appendInt(dst, "token", d.Token)
		dst = appendInt(dst, "retry_after_ms", d.RetryAfterMS)
	case conversation.Quarantined:
		dst = appendInt(dst, "attempts", d.Attempts)
		dst = appendNullable(dst, "error", d.Error)
	case conversation.Skip:
		if d.Compacted {
			dst = append(dst, `,"compacted":true`...)
		}
	case conversation.Forgotten:
		dst = appendHorizon(dst, d.Horizon)
	case conversation.Start:
		if d.Horizon.Set {
			dst = appendHorizon(dst, d.Horizon)
		}
	}
	return dst
}

// appendHorizon appends "forgotten_before": h's, or null when not set.
func appendHorizon(dst []byte, h conversation.Horizon) []byte {
	if !h.Set {
		return append(dst, `,"forgotten_before":null`...)
	}
	return appendInt(dst, "forgotten_before", h.Before)
}

// appendReceivedAt appends "received_at": m's, or null for a tombstone,
// which does not keep it.
func appendReceivedAt(dst []byte, m *conversation.Message) []byte {
	if m.Compacted {
		return append(dst, `,"received_at":null`...)
	}
	return appendInt(dst, "received_at", m.ReceivedAt)
}

// appendNullable appends v as a string, or null for "".
func appendNullable(dst []byte, key, v string) []byte {
	if v == "" {
		return append(appendKey(dst, key), "null"...)
	}
	return appendString(dst, key, v)
}

// appendSteps appends "steps": the completed steps, with their seq when
// withSeq is set.
func appendSteps(dst []byte, steps []conversation.StepRecord, withSeq bool) []byte {
	dst = append(dst, `,"steps":[`...)
	for i, s := range steps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"step_index":`...)
		dst = strconv.AppendUint(dst, uint64(s.Index), 10)
		if withSeq {
			dst = appendInt(dst, "seq", s.Seq)
		}
		dst = append(dst, `,"output":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, s.Output)
		dst = append(dst, `"}`...)
	}
	return append(dst, ']')
}

// appendLastStep appends "last_completed_step": last, or null for none.
func appendLastStep(dst []byte, last int64) []byte {
	if last == conversation.NoStep {
		return append(dst, `,"last_completed_step":null`...)
	}
	return appendInt(dst, "last_completed_step", last)
}

// appendLease appends the worker, lease_expires_at (null when not leased
// at mo) and quarantined of m.
func appendLease(dst []byte, m *conversation.Message, mo conversation.Moment) []byte {
	dst = appendNullable(dst, "worker", m.Worker)
	if m.Leased(mo.Now) {
		dst = appendInt(dst, "lease_expires_at", m.LeaseUntil)
	} else {
		dst = append(dst, `,"lease_expires_at":null`...)
	}
	dst = appendKey(dst, "quarantined")
	return strconv.AppendBool(dst, m.Quarantined(mo.Now, mo.MaxAttempts))
}

// appendSeq appends the seq of an outcome, and "duplicate":true when it is
// one.
func appendSeq(dst []byte, o conversation.Outcome) []byte {
	dst = appendInt(dst, "seq", o.Seq)
	if o.Duplicate {
		dst = append(dst, `,"duplicate":true`...)
	}
	return dst
}

// appendMessageState appends the fields of state with a message: m is nil
// when the message was never received. mo judges its lease and quarantine.
func appendMessageState(dst []byte, m *conversation.Message, steps []conversation.StepRecord, mo conversation.Moment) []byte {
	if m == nil {
		return append(dst, `,"status":"unknown","received_at":null,"last_completed_step":null,"steps":[],"error":null,`+
			`"attempts":0,"token":null,"worker":null,"lease_expires_at":null,"quarantined":false,"fingerprint":null,"compacted":false`...)
	}
	dst = appendString(dst, "status", m.Status.String())
	dst = appendReceivedAt(dst, m)
	last := m.LastStep
	if n := len(steps); n > 0 && int64(steps[n-1].Index) > last {
		last = int64(steps[n-1].Index) // a step committed between the two reads
	}
	dst = appendLastStep(dst, last)
	dst = appendSteps(dst, steps, true)
	dst = appendNullable(dst, "error", m.Error)
	dst = appendInt(dst, "attempts", m.Attempts)
	if m.Token() > 0 {
		dst = appendInt(dst, "token", m.Token())
	} else {
		dst = append(dst, `,"token":null`...)
	}
	dst = appendLease(dst, m, mo)
	dst = appendNullable(dst, "fingerprint", m.Fingerprint)
	dst = appendKey(dst, "compacted")
	return strconv.AppendBool(dst, m.Compacted)
}

// appendCounts appends the messages of a conversation counted by status.
func appendCounts(dst []byte, c conversation.Counts) []byte {
	dst = append(dst, `,"messages":{"received":`...)
	dst = strconv.AppendInt(dst, c.Received, 10)
	dst = appendInt(dst, "in_progress", c.InProgress)
	dst = appendInt(dst, "errored", c.Errored)
	dst = appendInt(dst, "finished", c.Finished)
	dst = appendInt(dst, "total", c.Total())
	return append(dst, '}')
}

// appendPush appends the push line of event e of subscription sub.
func appendPush(dst []byte, sub int64, e *conversation.Event) []byte {
	dst = append(dst, `{"sub":`...)
	dst = strconv.AppendInt(dst, sub, 10)
	dst = append(dst, `,"event":`...)
	dst = e.AppendJSON(dst)
	return appendEnd(dst)
}

// appendLagged appends the push line that ends lagging subscription sub:
// nextPos is where to resume, nextSeq too for a subscription to one
// conversation (-1 when it is not known).
func appendLagged(dst []byte, sub, nextPos, nextSeq int64) []byte {
	dst = append(dst, `{"sub":`...)
	dst = strconv.AppendInt(dst, sub, 10)
	dst = append(dst, `,"lagged":true`...)
	dst = appendInt(dst, "next_pos", nextPos)
	if nextSeq >= 0 {
		dst = appendInt(dst, "next_seq", nextSeq)
	}
	return appendEnd(dst)
}
