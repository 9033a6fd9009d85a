package ipc

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"liminald/conversation"
)

// op is a request's operation.
type op uint8

// The ops, in the order hello lists them.
const (
	opHello op = iota + 1
	opPing
	opReceive
	opDecide
	opStart
	opStep
	opFinish
	opFail
	opState
	opRead
	opSubscribe
	opUnsubscribe
	opConversations
	opStats
	opRenew
	opRelease
	opMessages
	opExplain
)

var opNames = [...]string{
	opHello: "hello", opPing: "ping", opReceive: "receive", opDecide: "decide",
	opStart: "start", opStep: "step", opFinish: "finish", opFail: "fail",
	opState: "state", opRead: "read", opSubscribe: "subscribe", opUnsubscribe: "unsubscribe",
	opConversations: "conversations", opStats: "stats",
	opRenew: "renew", opRelease: "release", opMessages: "messages", opExplain: "explain",
}

func (o op) String() string {
	if o >= opHello && int(o) < len(opNames) {
		return opNames[o]
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

func lookupOp(name []byte) op {
	for o := opHello; int(o) < len(opNames); o++ {
		if opNames[o] == string(name) {
			return o
		}
	}
	return 0
}

// writeOps maps the write ops to their domain op.
var writeOps = [...]conversation.Op{
	opReceive: conversation.OpReceive, opStart: conversation.OpStart, opStep: conversation.OpStep,
	opFinish: conversation.OpFinish, opFail: conversation.OpFail,
	opRenew: conversation.OpRenew, opRelease: conversation.OpRelease,
}

// isWrite reports whether o appends through Store.WriteAsync.
func (o op) isWrite() bool { return int(o) < len(writeOps) && writeOps[o] != 0 }

// field is a known request field.
type field uint8

const (
	fID field = iota
	fOp
	fConversation
	fMessageID
	fReceivedAt
	fExpectedSeq
	fStepIndex
	fOutput
	fError
	fFromSeq
	fFromPos
	fLimit
	fAfter
	fSub
	fClient
	fFingerprint
	fWithSteps
	fWorker
	fLeaseMS
	fToken
	fReason
	fStatus
	fSentAt
	numFields
)

var fieldNames = [numFields]string{
	fID: "id", fOp: "op", fConversation: "conversation", fMessageID: "message_id",
	fReceivedAt: "received_at", fExpectedSeq: "expected_seq", fStepIndex: "step_index",
	fOutput: "output", fError: "error", fFromSeq: "from_seq", fFromPos: "from_pos",
	fLimit: "limit", fAfter: "after", fSub: "sub", fClient: "client",
	fFingerprint: "fingerprint", fWithSteps: "with_steps", fWorker: "worker", fLeaseMS: "lease_ms",
	fToken: "token", fReason: "reason", fStatus: "status", fSentAt: "sent_at",
}

func lookupField(key []byte) (field, bool) {
	for f := range numFields {
		if fieldNames[f] == string(key) {
			return f, true
		}
	}
	return 0, false
}

// request is one decoded request. A connection reuses it from request to
// request; what it holds never points into the line it was decoded from.
type request struct {
	id []byte // the raw JSON id, echoed byte for byte; nil when absent
	op op

	cmd conversation.Command // the write ops

	conv, msg           string                // decide, state, read, subscribe, messages, explain
	delivery            conversation.Delivery // decide, explain
	withSteps           bool                  // receive, decide, explain
	status              string                // messages
	fromSeq, fromPos    int64
	hasFrom, hasFromPos bool // subscribe: a from position was given; it is from_pos
	limit               int
	after               string
	sub                 int64
	client              string

	raw [numFields][]byte // the raw values, during parse only
}

// parse decodes line into r and checks its arguments for r's op.
//
// Returns a bad_request *Error for invalid UTF-8, invalid JSON or a request
// that is not an object; a *conversation.FieldError naming the field for a
// missing or invalid argument (then r.id is nil if the id itself is bad);
// and an unknown_op *Error for an unknown op.
func (r *request) parse(line []byte) error {
	id := r.id[:0]
	*r = request{}
	defer clear(r.raw[:])
	if !utf8.Valid(line) {
		return badRequest("request is not valid UTF-8")
	}
	if !json.Valid(line) {
		var v struct{}
		err := json.Unmarshal(line, &v)
		return badRequest("request is not valid JSON: %v", err)
	}
	i := skipSpace(line, 0)
	if line[i] != '{' {
		return badRequest("request must be a JSON object")
	}
	dup := numFields
	for i = skipSpace(line, i+1); line[i] == '"'; {
		end, escaped := skipString(line, i)
		key := line[i+1 : end-1]
		if escaped {
			var s string
			if err := json.Unmarshal(line[i:end], &s); err == nil {
				key = []byte(s)
			}
		}
		i = skipSpace(line, skipSpace(line, end)+1) // past ':'
		vend := skipValue(line, i)
		if f, ok := lookupField(key); ok {
			if r.raw[f] != nil && dup == numFields {
				dup = f
			}
			r.raw[f] = line[i:vend]
		}
		i = skipSpace(line, vend)
		if line[i] != ',' {
			break
		}
		i = skipSpace(line, i+1)
	}
	if dup == fID {
		return fieldError("id", "is given more than once")
	}
	if err := r.parseID(id); err != nil {
		return err
	}
	if dup != numFields {
		return fieldError(fieldNames[dup], "is given more than once")
	}
	name, ok, err := r.bytes(fOp)
	switch {
	case err != nil:
		return err
	case !ok:
		return fieldError("op", "is required")
	}
	if r.op = lookupOp(name); r.op == 0 {
		return &Error{Code: CodeUnknownOp, Message: fmt.Sprintf("unknown op %q", name)}
	}
	return r.args()
}

// parseID keeps the raw id, a string or an integer, in buf.
func (r *request) parseID(buf []byte) error {
	raw := r.raw[fID]
	if raw == nil || string(raw) == "null" {
		return nil
	}
	if raw[0] != '"' && !isInteger(raw) {
		return fieldError("id", "must be a string or an integer")
	}
	r.id = append(buf, raw...)
	return nil
}

// isInteger reports whether the JSON number raw is an integer: no fraction,
// no exponent.
func isInteger(raw []byte) bool {
	if len(raw) > 0 && raw[0] == '-' {
		raw = raw[1:]
	}
	if len(raw) == 0 {
		return false
	}
	for _, c := range raw {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// args decodes and checks the arguments of r.op.
func (r *request) args() error {
	var err error
	switch o := r.op; o {
	case opHello:
		r.client, _, err = r.str(fClient)
	case opPing, opStats:
	case opReceive, opStart, opStep, opFinish, opFail, opRenew, opRelease:
		err = r.writeArgs()
	case opDecide, opExplain:
		if r.conv, err = r.name(fConversation, true); err != nil {
			return err
		}
		if r.msg, err = r.name(fMessageID, true); err != nil {
			return err
		}
		if r.delivery.Fingerprint, err = r.checked(fFingerprint, conversation.ValidFingerprint); err != nil {
			return err
		}
		if r.delivery.SentAt, r.delivery.HasSentAt, err = r.int(fSentAt, math.MaxInt64); err != nil {
			return err
		}
		r.withSteps, err = r.boolean(fWithSteps)
	case opMessages:
		if r.conv, err = r.name(fConversation, true); err != nil {
			return err
		}
		if r.status, err = r.checked(fStatus, notEmpty("status")); err != nil {
			return err
		}
		if r.after, err = r.checked(fAfter, func(s string) error { return conversation.ValidName("after", s) }); err != nil {
			return err
		}
		r.limit, err = r.limitArg(MessagesLimitDefault, MessagesLimitMax)
	case opState:
		if r.conv, err = r.name(fConversation, true); err == nil {
			r.msg, err = r.name(fMessageID, false)
		}
	case opRead:
		if r.conv, err = r.name(fConversation, true); err != nil {
			return err
		}
		if r.fromSeq, _, err = r.int(fFromSeq, math.MaxInt64); err != nil {
			return err
		}
		r.limit, err = r.limitArg(ReadLimitDefault, ReadLimitMax)
	case opSubscribe:
		err = r.subscribeArgs()
	case opUnsubscribe:
		var ok bool
		if r.sub, ok, err = r.int(fSub, math.MaxInt64); err == nil && !ok {
			err = fieldError("sub", "is required")
		}
	case opConversations:
		if r.after, _, err = r.str(fAfter); err != nil {
			return err
		}
		r.limit, err = r.limitArg(ConversationsLimitDefault, ConversationsLimitMax)
	}
	return err
}

func (r *request) writeArgs() error {
	c := &r.cmd
	*c = conversation.Command{Op: writeOps[r.op], ExpectedSeq: conversation.NoExpectedSeq}
	var err error
	if c.Conversation, err = r.required(fConversation); err != nil {
		return err
	}
	if c.MessageID, err = r.required(fMessageID); err != nil {
		return err
	}
	switch r.op {
	case opReceive:
		if c.ReceivedAt, c.HasReceivedAt, err = r.int(fReceivedAt, math.MaxInt64); err != nil {
			return err
		}
		if c.Fingerprint, err = r.checked(fFingerprint, conversation.ValidFingerprint); err != nil {
			return err
		}
		if c.SentAt, c.HasSentAt, err = r.int(fSentAt, math.MaxInt64); err != nil {
			return err
		}
		if r.withSteps, err = r.boolean(fWithSteps); err != nil {
			return err
		}
	case opStart:
		if c.Worker, err = r.checked(fWorker, func(s string) error { return conversation.ValidName("worker", s) }); err != nil {
			return err
		}
		if c.LeaseMS, _, err = r.lease(); err != nil {
			return err
		}
	case opStep, opFinish, opFail, opRenew:
		if c.Token, c.HasToken, err = r.int(fToken, math.MaxInt64); err != nil {
			return err
		}
		if r.op == opRenew {
			if !c.HasToken {
				return fieldError("token", "is required")
			}
			var ok bool
			if c.LeaseMS, ok, err = r.lease(); err != nil {
				return err
			}
			if !ok {
				return fieldError("lease_ms", "is required")
			}
		}
	case opRelease:
		if c.Reason, err = r.checked(fReason, func(s string) error { return conversation.ValidText("reason", s) }); err != nil {
			return err
		}
	}
	if r.op == opStep {
		index, ok, err := r.int(fStepIndex, conversation.MaxStepIndex)
		switch {
		case err != nil:
			return err
		case !ok:
			return fieldError("step_index", "is required")
		}
		c.StepIndex = uint32(index)
		if c.Output, err = r.output(); err != nil {
			return err
		}
	}
	if r.op == opFail {
		if c.Error, err = r.required(fError); err != nil {
			return err
		}
	}
	if seq, ok, err := r.int(fExpectedSeq, math.MaxInt64); err != nil {
		return err
	} else if ok {
		c.ExpectedSeq = seq
	}
	return c.Validate()
}

func (r *request) subscribeArgs() error {
	var err error
	if r.conv, err = r.name(fConversation, false); err != nil {
		return err
	}
	seq, hasSeq, err := r.int(fFromSeq, math.MaxInt64)
	if err != nil {
		return err
	}
	pos, hasPos, err := r.int(fFromPos, math.MaxInt64)
	switch {
	case err != nil:
		return err
	case hasSeq && r.conv == "":
		return fieldError("from_seq", "needs a conversation; use from_pos for every conversation")
	case hasSeq && hasPos:
		return fieldError("from_pos", "cannot be given with from_seq")
	}
	r.fromSeq, r.fromPos, r.hasFrom, r.hasFromPos = seq, pos, hasSeq || hasPos, hasPos
	return nil
}

// lease returns the lease_ms field, from 1 to MaxLeaseMS; ok is false
// when it is absent.
func (r *request) lease() (ms int64, ok bool, err error) {
	ms, ok, err = r.int(fLeaseMS, conversation.MaxLeaseMS)
	if err == nil && ok {
		err = conversation.ValidLease(ms)
	}
	if err != nil {
		return 0, false, conversation.ValidLease(-1)
	}
	return ms, ok, nil
}

// checked returns the string field f checked by valid when it is given, ""
// when it is absent. Given, it must be valid: an empty string is not
// absent.
func (r *request) checked(f field, valid func(string) error) (string, error) {
	s, ok, err := r.str(f)
	if err != nil || !ok {
		return "", err
	}
	return s, valid(s)
}

// notEmpty returns a check that field, when given, is not "".
func notEmpty(field string) func(string) error {
	return func(s string) error {
		if s == "" {
			return fieldError(field, "must not be empty")
		}
		return nil
	}
}

// boolean returns the boolean field f, false when it is absent.
func (r *request) boolean(f field) (bool, error) {
	switch raw := string(r.raw[f]); raw {
	case "", "null", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, fieldError(fieldNames[f], "must be true or false")
}

// limitArg returns the limit argument, def when absent.
func (r *request) limitArg(def, max int) (int, error) {
	n, ok, err := r.int(fLimit, int64(max))
	switch {
	case err != nil || ok && n < 1:
		return 0, fieldError("limit", fmt.Sprintf("must be an integer from 1 to %d", max))
	case !ok:
		return def, nil
	}
	return int(n), nil
}

// bytes returns the content of the string field f, unescaped; it points
// into the line unless it held an escape. ok is false when f is absent or
// null.
func (r *request) bytes(f field) (b []byte, ok bool, err error) {
	raw := r.raw[f]
	if raw == nil || string(raw) == "null" {
		return nil, false, nil
	}
	if raw[0] != '"' {
		return nil, false, fieldError(fieldNames[f], "must be a string")
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw[1 : len(raw)-1], true, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || loneSurrogate(raw) {
		// encoding/json turns an unpaired \ud800 into U+FFFD: two ids that
		// differ only there would name one message.
		return nil, false, fieldError(fieldNames[f], "is not a valid string")
	}
	return []byte(s), true, nil
}

// loneSurrogate reports whether the JSON string raw holds a \u escape of a
// UTF-16 surrogate that is not half of a pair.
func loneSurrogate(raw []byte) bool {
	pendingHigh := false
	for i := 0; i < len(raw); i++ {
		if raw[i] != '\\' {
			if pendingHigh {
				return true
			}
			continue
		}
		i++
		if i >= len(raw) || raw[i] != 'u' || i+4 >= len(raw) {
			if pendingHigh {
				return true
			}
			continue
		}
		v, err := strconv.ParseUint(string(raw[i+1:i+5]), 16, 16)
		i += 4
		if err != nil {
			continue
		}
		switch {
		case v >= 0xD800 && v <= 0xDBFF:
			if pendingHigh {
				return true
			}
			pendingHigh = true
		case v >= 0xDC00 && v <= 0xDFFF:
			if !pendingHigh {
				return true
			}
			pendingHigh = false
		default:
			if pendingHigh {
				return true
			}
		}
	}
	return pendingHigh
}

// str returns the string field f; ok is false when it is absent.
func (r *request) str(f field) (string, bool, error) {
	b, ok, err := r.bytes(f)
	return string(b), ok, err
}

// required returns the string field f, which must be given.
func (r *request) required(f field) (string, error) {
	s, ok, err := r.str(f)
	if err == nil && !ok {
		err = fieldError(fieldNames[f], "is required")
	}
	return s, err
}

// name returns the conversation name or message id in field f, checked
// against the limits; "" when it is absent and not required.
func (r *request) name(f field, required bool) (string, error) {
	s, ok, err := r.str(f)
	switch {
	case err != nil:
		return "", err
	case !ok && required:
		return "", fieldError(fieldNames[f], "is required")
	case !ok:
		return "", nil
	}
	return s, conversation.ValidName(fieldNames[f], s)
}

// int returns the integer field f, from 0 to max; ok is false when it is
// absent. A fraction, an exponent, a sign or a string is an error.
func (r *request) int(f field, max int64) (n int64, ok bool, err error) {
	raw := r.raw[f]
	if raw == nil || string(raw) == "null" {
		return 0, false, nil
	}
	bad := fieldError(fieldNames[f], fmt.Sprintf("must be an integer from 0 to %d", max))
	if raw[0] < '0' || raw[0] > '9' || !isInteger(raw) {
		return 0, false, bad
	}
	u, err := strconv.ParseUint(string(raw), 10, 64)
	if err != nil || u > uint64(max) {
		return 0, false, bad
	}
	return int64(u), true, nil
}

// output decodes the base64 output of a step into a new slice: the store
// keeps it.
func (r *request) output() ([]byte, error) {
	src, ok, err := r.bytes(fOutput)
	switch {
	case err != nil:
		return nil, err
	case !ok:
		return nil, fieldError("output", "is required")
	}
	out := make([]byte, base64.StdEncoding.DecodedLen(len(src)))
	n, err := base64.StdEncoding.Decode(out, src)
	// The decoder skips CR and LF; the wire's base64 has neither.
	if err != nil || bytes.ContainsAny(src, "\r\n") {
		return nil, fieldError("output", "is not standard base64")
	}
	return out[:n], nil
}
