package conversation

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// AppendJSON appends the event object of e (SPEC §3) to dst: the common
// fields and only the fields of its type, output as standard base64.
func (e *Event) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"conversation":`...)
	dst = AppendJSONString(dst, e.Conversation)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendInt(dst, e.Seq, 10)
	dst = append(dst, `,"pos":`...)
	dst = strconv.AppendInt(dst, e.Pos, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, e.TS, 10)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, e.Type.String()...)
	dst = append(dst, `","message_id":`...)
	dst = AppendJSONString(dst, e.MessageID)
	switch e.Type {
	case MessageReceived:
		dst = append(dst, `,"received_at":`...)
		dst = strconv.AppendInt(dst, e.ReceivedAt, 10)
		dst = appendOptionalString(dst, `,"fingerprint":`, e.Fingerprint)
	case ProcessingStarted:
		dst = appendOptionalString(dst, `,"worker":`, e.Worker)
		if e.LeaseMS > 0 {
			dst = append(dst, `,"lease_ms":`...)
			dst = strconv.AppendInt(dst, e.LeaseMS, 10)
		}
	case LeaseRenewed:
		dst = append(dst, `,"token":`...)
		dst = strconv.AppendInt(dst, e.Token, 10)
		dst = append(dst, `,"lease_ms":`...)
		dst = strconv.AppendInt(dst, e.LeaseMS, 10)
	case MessageReleased:
		dst = appendOptionalString(dst, `,"reason":`, e.Reason)
	case StepCompleted:
		dst = append(dst, `,"step_index":`...)
		dst = strconv.AppendUint(dst, uint64(e.StepIndex), 10)
		dst = append(dst, `,"output":"`...)
		dst = base64.StdEncoding.AppendEncode(dst, e.Output)
		dst = append(dst, '"')
	case ErrorOccurred:
		dst = append(dst, `,"error":`...)
		dst = AppendJSONString(dst, e.Error)
	}
	return append(dst, '}')
}

// appendOptionalString appends key and s as a JSON string, unless s is "".
func appendOptionalString(dst []byte, key, s string) []byte {
	if s == "" {
		return dst
	}
	return AppendJSONString(append(dst, key...), s)
}

// MarshalJSON returns the event object of e.
func (e Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(nil), nil
}

// UnmarshalJSON reads an event object. It checks that the fields of the
// event's type are present and within the limits of SPEC §3; it does not
// check the event against a log (see State.Apply for that).
func (e *Event) UnmarshalJSON(b []byte) error {
	var raw struct {
		Conversation *string `json:"conversation"`
		Seq          *int64  `json:"seq"`
		Pos          *int64  `json:"pos"`
		TS           *int64  `json:"ts"`
		Type         *string `json:"type"`
		MessageID    *string `json:"message_id"`
		ReceivedAt   *int64  `json:"received_at"`
		Fingerprint  string  `json:"fingerprint"`
		Worker       string  `json:"worker"`
		LeaseMS      *int64  `json:"lease_ms"`
		StepIndex    *uint32 `json:"step_index"`
		Output       *[]byte `json:"output"`
		Error        *string `json:"error"`
		Token        *int64  `json:"token"`
		Reason       string  `json:"reason"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("event object: %w", err)
	}
	missing := func(field string) error { return &FieldError{Field: field, Problem: "is required"} }
	switch {
	case raw.Conversation == nil:
		return missing("conversation")
	case raw.Seq == nil:
		return missing("seq")
	case raw.TS == nil:
		return missing("ts")
	case raw.Type == nil:
		return missing("type")
	case raw.MessageID == nil:
		return missing("message_id")
	}
	t, ok := ParseType(*raw.Type)
	if !ok {
		return &FieldError{Field: "type", Problem: fmt.Sprintf("%q is not an event type", *raw.Type)}
	}
	*e = Event{Conversation: *raw.Conversation, Seq: *raw.Seq, TS: *raw.TS, Type: t, MessageID: *raw.MessageID}
	if raw.Pos != nil {
		e.Pos = *raw.Pos
	}
	switch t {
	case MessageReceived:
		if raw.ReceivedAt == nil {
			return missing("received_at")
		}
		e.ReceivedAt, e.Fingerprint = *raw.ReceivedAt, raw.Fingerprint
	case ProcessingStarted:
		e.Worker = raw.Worker
		if raw.LeaseMS != nil {
			e.LeaseMS = *raw.LeaseMS
		}
	case LeaseRenewed:
		if raw.Token == nil {
			return missing("token")
		}
		if raw.LeaseMS == nil {
			return missing("lease_ms")
		}
		e.Token, e.LeaseMS = *raw.Token, *raw.LeaseMS
	case MessageReleased:
		e.Reason = raw.Reason
	case StepCompleted:
		if raw.StepIndex == nil {
			return missing("step_index")
		}
		if raw.Output == nil {
			return missing("output")
		}
		e.StepIndex, e.Output = *raw.StepIndex, *raw.Output
	case ErrorOccurred:
		if raw.Error == nil {
			return missing("error")
		}
		e.Error = *raw.Error
	}
	if e.Seq < 0 {
		return &FieldError{Field: "seq", Problem: "must not be negative"}
	}
	return errors.Join(ValidName("conversation", e.Conversation), ValidName("message_id", e.MessageID), e.validFields())
}

// validFields checks the type-specific fields of e against the limits.
func (e *Event) validFields() error {
	switch e.Type {
	case MessageReceived:
		if e.ReceivedAt < 0 {
			return &FieldError{Field: "received_at", Problem: "must not be negative"}
		}
		if e.Fingerprint != "" {
			return ValidFingerprint(e.Fingerprint)
		}
	case ProcessingStarted:
		if e.Worker != "" {
			if err := ValidName("worker", e.Worker); err != nil {
				return err
			}
		}
		if e.LeaseMS != 0 {
			return ValidLease(e.LeaseMS)
		}
	case LeaseRenewed:
		if e.Token <= 0 {
			return &FieldError{Field: "token", Problem: "must be positive"}
		}
		return ValidLease(e.LeaseMS)
	case MessageReleased:
		if e.Reason != "" {
			return ValidText("reason", e.Reason)
		}
	case ErrorOccurred:
		return ValidError(e.Error)
	}
	return nil
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s to dst as a JSON string. Invalid UTF-8 is
// replaced by U+FFFD, as encoding/json does.
func AppendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
