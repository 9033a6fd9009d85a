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

// appendDecision appends the fields of a redelivery decision.
func appendDecision(dst []byte, d conversation.Decision) []byte {
	dst = appendString(dst, "decision", d.Action.String())
	if d.Action == conversation.Resume {
		dst = appendInt(dst, "resume_from", d.ResumeFrom)
	}
	return dst
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
// when the message was never received.
func appendMessageState(dst []byte, m *conversation.Message, steps []conversation.StepRecord) []byte {
	if m == nil {
		return append(dst, `,"status":"unknown","received_at":null,"last_completed_step":null,"steps":[],"error":null`...)
	}
	dst = appendString(dst, "status", m.Status.String())
	dst = appendInt(dst, "received_at", m.ReceivedAt)
	last := m.LastStep
	if n := len(steps); n > 0 && int64(steps[n-1].Index) > last {
		last = int64(steps[n-1].Index) // a step committed between the two reads
	}
	if last == conversation.NoStep {
		dst = append(dst, `,"last_completed_step":null`...)
	} else {
		dst = appendInt(dst, "last_completed_step", last)
	}
	dst = append(dst, `,"steps":[`...)
	for i, s := range steps {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"step_index":`...)
		dst = strconv.AppendUint(dst, uint64(s.Index), 10)
		dst = appendInt(dst, "seq", s.Seq)
		dst = append(dst, `,"output":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, s.Output)
		dst = append(dst, `"}`...)
	}
	dst = append(dst, ']')
	if m.Error == "" {
		return append(dst, `,"error":null`...)
	}
	return appendString(dst, "error", m.Error)
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
