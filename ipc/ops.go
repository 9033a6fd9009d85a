package ipc

import (
	"context"
	"math"
	"strconv"
	"time"

	"liminald/conversation"
)

// maxReadReply is the size past which a read reply stops adding events; it
// always holds at least one, and next_seq says where to read on.
const maxReadReply = 4 << 20

// readFirstPage is how many events a read takes from the store first; each
// next page is twice as large.
const readFirstPage = 16

// exec runs request r, of any op but the writes (see conn.submit),
// subscribe and unsubscribe (which belong to a connection), and appends
// its whole reply line to dst.
func (s *Server) exec(ctx context.Context, r *request, dst []byte) []byte {
	began := time.Now()
	out, err := s.result(ctx, r, appendOK(dst, r.id))
	return s.end(dst, out, r, err, began)
}

// end ends the reply to r, begun at time began: out is dst with the reply's
// start and result appended, or err its failure, which replaces them.
func (s *Server) end(dst, out []byte, r *request, err error, began time.Time) []byte {
	if err != nil {
		out = s.appendError(dst, r, err)
	} else {
		out = appendEnd(out)
	}
	if s.observe != nil {
		outcome := "ok"
		if err != nil {
			outcome = string(wireError(err).Code)
		}
		s.observe(r.op.String(), outcome, time.Since(began))
	}
	return out
}

// appendError appends the failure line of err to request r, and logs the
// internal errors.
func (s *Server) appendError(dst []byte, r *request, err error) []byte {
	e := wireError(err)
	if e.Code == CodeInternal {
		s.log.Error("request failed", "op", r.op.String(), "err", err)
	}
	return appendFailure(dst, r.id, e)
}

// result runs r and appends the fields of its result to dst.
func (s *Server) result(ctx context.Context, r *request, dst []byte) ([]byte, error) {
	switch r.op {
	case opHello:
		return s.hello(dst), nil
	case opPing:
		return dst, nil
	case opDecide:
		d, err := s.store.Decide(ctx, r.conv, r.msg, r.delivery)
		if err != nil {
			return dst, err
		}
		return s.decision(ctx, dst, r, d)
	case opMessages:
		return s.messages(ctx, r, dst)
	case opExplain:
		return s.explain(ctx, r, dst)
	case opState:
		return s.state(ctx, r, dst)
	case opRead:
		return s.read(ctx, r, dst)
	case opConversations:
		return s.conversations(ctx, r, dst)
	case opStats:
		return s.stats(ctx, dst)
	}
	return dst, &Error{Code: CodeInternal, Message: "internal error: op " + r.op.String() + " has no handler"}
}

// appendWrite appends the whole reply line of write request r, begun at
// time began, whose outcome is o (with the steps of a receive's resume
// asked with_steps) or err, to dst.
func (s *Server) appendWrite(dst []byte, r *request, o conversation.Outcome, steps []conversation.StepRecord, err error, began time.Time) []byte {
	out := appendOK(dst, r.id)
	if err == nil {
		out = appendOutcome(out, r, o, steps)
	}
	return s.end(dst, out, r, err, began)
}

// appendOutcome appends the result of write request r to dst.
func appendOutcome(dst []byte, r *request, o conversation.Outcome, steps []conversation.StepRecord) []byte {
	switch r.op {
	case opReceive:
		dst = appendDecision(dst, r, o.Decision, steps)
		if o.Decision.Action == conversation.Start {
			dst = appendSeq(dst, o)
		}
		return dst
	case opStart:
		dst = appendInt(appendSeq(dst, o), "token", o.Token)
	default:
		dst = appendSeq(dst, o)
	}
	if o.LeaseExpiresAt > 0 {
		dst = appendInt(dst, "lease_expires_at", o.LeaseExpiresAt)
	}
	return dst
}

// appendDecision appends the fields of decision d for request r (a
// receive, decide or explain) to dst, and the steps of a resume when r
// asks for them.
func appendDecision(dst []byte, r *request, d conversation.Decision, steps []conversation.StepRecord) []byte {
	dst = appendDecisionFields(dst, d)
	if r.withSteps && d.Action == conversation.Resume {
		dst = appendSteps(dst, steps, false)
	}
	return dst
}

// resumeSteps returns the steps a worker resuming message id of conv after
// decision d needs: the completed steps below d.ResumeFrom. A step that
// committed after the decision was taken is left out, so that the steps
// always agree with resume_from.
func (s *Server) resumeSteps(ctx context.Context, conv, id string, d conversation.Decision) ([]conversation.StepRecord, error) {
	if d.Action != conversation.Resume {
		return nil, nil
	}
	steps, err := s.store.Steps(ctx, conv, id)
	n := 0
	for _, st := range steps {
		if int64(st.Index) < d.ResumeFrom {
			steps[n] = st
			n++
		}
	}
	return steps[:n], err
}

// decision appends the reply of a decide or an explain of request r, whose
// decision is d, to dst.
func (s *Server) decision(ctx context.Context, dst []byte, r *request, d conversation.Decision) ([]byte, error) {
	steps, err := s.stepsAsked(ctx, r, r.conv, r.msg, d)
	if err != nil {
		return dst, err
	}
	return appendDecision(dst, r, d, steps), nil
}

// stepsAsked returns the steps of message id of conv that request r, after
// decision d, asks for: a resume's (resumeSteps) when r asks with_steps,
// none otherwise.
func (s *Server) stepsAsked(ctx context.Context, r *request, conv, id string, d conversation.Decision) ([]conversation.StepRecord, error) {
	if !r.withSteps {
		return nil, nil
	}
	return s.resumeSteps(ctx, conv, id, d)
}

// hello appends the result of hello to dst.
func (s *Server) hello(dst []byte) []byte {
	dst = appendInt(dst, "protocol", ProtocolVersion)
	dst = append(dst, `,"server":{"name":"liminald","version":`...)
	dst = conversation.AppendJSONString(dst, s.version)
	dst = append(dst, `},"ops":[`...)
	for o := opHello; int(o) < len(opNames); o++ {
		if o > opHello {
			dst = append(dst, ',')
		}
		dst = conversation.AppendJSONString(dst, opNames[o])
	}
	dst = append(dst, `],"limits":{"max_line_bytes":`...)
	dst = strconv.AppendInt(dst, int64(s.maxLineBytes()), 10)
	dst = appendInt(dst, "max_inflight", MaxInflight)
	dst = appendInt(dst, "max_name_bytes", conversation.MaxNameBytes)
	dst = appendInt(dst, "max_error_bytes", conversation.MaxErrorBytes)
	dst = appendInt(dst, "read_limit_max", ReadLimitMax)
	dst = appendInt(dst, "conversations_limit_max", ConversationsLimitMax)
	dst = appendInt(dst, "messages_limit_max", MessagesLimitMax)
	dst = appendInt(dst, "max_lease_ms", conversation.MaxLeaseMS)
	dst = appendInt(dst, "max_output_bytes", int64(MaxOutputBytes(s.maxLineBytes())))
	return append(dst, '}')
}

// stepOverhead bounds what a step request line holds beside its output:
// its other fields, with a conversation and a message id of 256 bytes
// each escaped at the most (6 bytes a byte), an id and a token.
const stepOverhead = 4096

// MaxOutputBytes returns the largest step output a request line of at most
// maxLineBytes can carry, in base64, with every other field at its limit.
func MaxOutputBytes(maxLineBytes int) int {
	return max(0, (maxLineBytes-stepOverhead)/4*3)
}

func (s *Server) state(ctx context.Context, r *request, dst []byte) ([]byte, error) {
	if r.msg == "" {
		sum, err := s.store.Conversation(ctx, r.conv)
		if err != nil {
			return dst, err
		}
		dst = appendCounts(appendInt(dst, "next_seq", sum.Next), sum.Counts)
		dst = appendInt(dst, "compacted", sum.Compacted)
		return appendHorizon(dst, sum.Horizon), nil
	}
	m, err := s.store.Message(ctx, r.conv, r.msg)
	if err != nil || m == nil {
		return appendMessageState(dst, nil, nil, conversation.Moment{}), err
	}
	steps, err := s.store.Steps(ctx, r.conv, r.msg)
	return appendMessageState(dst, m, steps, s.store.Moment()), err
}

func (s *Server) messages(ctx context.Context, r *request, dst []byte) ([]byte, error) {
	mo := s.store.Moment() // one moment filters and shows the rows
	list, err := s.store.Messages(ctx, r.conv, r.status, r.after, r.limit, mo)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `,"messages":[`...)
	for i := range list {
		if i > 0 {
			dst = append(dst, ',')
		}
		m := &list[i]
		dst = append(dst, `{"message_id":`...)
		dst = conversation.AppendJSONString(dst, m.ID)
		dst = appendString(dst, "status", m.Status.String())
		dst = appendInt(dst, "attempts", m.Attempts)
		dst = appendLastStep(dst, m.LastStep)
		dst = appendReceivedAt(dst, m)
		dst = appendInt(dst, "updated_at", m.LastTS)
		dst = appendLease(dst, m, mo)
		dst = appendKey(dst, "compacted")
		dst = append(strconv.AppendBool(dst, m.Compacted), '}')
	}
	dst = append(dst, ']')
	if len(list) == r.limit {
		return appendString(dst, "next", list[len(list)-1].ID), nil
	}
	return append(dst, `,"next":null`...), nil
}

func (s *Server) explain(ctx context.Context, r *request, dst []byte) ([]byte, error) {
	m, err := s.store.Message(ctx, r.conv, r.msg)
	if err != nil {
		return dst, err
	}
	var h conversation.Horizon
	if m == nil {
		if h, err = s.store.Horizon(ctx, r.conv); err != nil {
			return dst, err
		}
	}
	mo := s.store.Moment()
	d, err := conversation.Deliver(m, r.delivery, h, mo)
	if err != nil {
		return dst, err
	}
	if dst, err = s.decision(ctx, dst, r, d); err != nil {
		return dst, err
	}
	dst = appendString(dst, "rule", d.Rule.String())
	dst = appendString(dst, "reason", conversation.Reason(d, m, mo))
	dst = append(dst, `,"events":[`...)
	if m != nil {
		events, err := s.store.MessageEvents(ctx, r.conv, m, ExplainEventsMax)
		if err != nil {
			return dst, err
		}
		for i := range events {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = events[i].AppendJSON(dst)
		}
	}
	return append(dst, ']'), nil
}

func (s *Server) read(ctx context.Context, r *request, dst []byte) ([]byte, error) {
	// The events are read a page at a time, a page that starts small and
	// grows only while the events are small, so that a read of large events
	// never holds more of them than its reply can carry.
	next, left, page := r.fromSeq, r.limit, readFirstPage
	dst = append(dst, `,"events":[`...)
	start, full := len(dst), false
	for left > 0 && !full {
		want := min(page, left)
		events, err := s.store.Events(ctx, r.conv, next, want)
		if err != nil {
			return dst, err
		}
		for i := range events {
			if len(dst) > start {
				if len(dst)-start > maxReadReply {
					full = true
					break
				}
				dst = append(dst, ',')
			}
			dst = events[i].AppendJSON(dst)
			next = events[i].Seq + 1
			left--
		}
		if len(events) < want {
			break // the end of the conversation
		}
		page *= 2
	}
	dst = append(dst, ']')
	return appendInt(dst, "next_seq", next), nil
}

func (s *Server) conversations(ctx context.Context, r *request, dst []byte) ([]byte, error) {
	convs, err := s.store.Conversations(ctx, r.after, r.limit)
	if err != nil {
		return dst, err
	}
	dst = append(dst, `,"conversations":[`...)
	for i, c := range convs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, `{"conversation":`...)
		dst = conversation.AppendJSONString(dst, c.Name)
		dst = appendInt(dst, "next_seq", c.Next)
		dst = appendInt(dst, "messages", c.Counts.Total())
		dst = append(dst, '}')
	}
	return append(dst, ']'), nil
}

func (s *Server) stats(ctx context.Context, dst []byte) ([]byte, error) {
	st, err := s.store.Stats(ctx)
	if err != nil {
		return dst, err
	}
	dst = appendInt(dst, "conversations", st.Conversations)
	dst = appendInt(dst, "messages", st.Messages)
	dst = appendInt(dst, "events", st.Events)
	dst = appendInt(dst, "db_bytes", st.DBBytes)
	dst = appendInt(dst, "uptime_s", int64(time.Since(s.started).Seconds()))
	dst = appendInt(dst, "connections", int64(s.Connections()))
	dst = appendInt(dst, "subscribers", s.subscribers.Load())
	dst = append(dst, `,"commits":{"count":`...)
	dst = strconv.AppendInt(dst, st.Commits, 10)
	dst = appendInt(dst, "failed", st.FailedBatches)
	dst = appendInt(dst, "requests", st.Requests)
	dst = appendInt(dst, "appended", st.Appended)
	dst = appendInt(dst, "max_batch", int64(st.MaxBatch))
	avgBatch, avgCommit := 0.0, 0.0
	if st.Commits > 0 {
		avgBatch = float64(st.Requests) / float64(st.Commits)
		avgCommit = float64(st.CommitTotal.Microseconds()) / 1000 / float64(st.Commits)
	}
	dst = strconv.AppendFloat(appendKey(dst, "avg_batch"), round3(avgBatch), 'f', -1, 64)
	dst = strconv.AppendFloat(appendKey(dst, "commit_ms_avg"), round3(avgCommit), 'f', -1, 64)
	dst = appendMillis(dst, "commit_ms_max", st.CommitMax)
	dst = append(dst, '}')
	dst = appendInt(dst, "compacted", st.Compacted)
	dst = appendInt(dst, "tombstones", st.Tombstones)
	dst = appendInt(dst, "tombstones_dropped", st.Dropped)
	dst = appendHorizon(dst, st.Horizon)
	dst = append(dst, `,"compaction":{"passes":`...)
	dst = strconv.AppendInt(dst, st.CompactionPasses, 10)
	dst = appendInt(dst, "failed", st.CompactionFailures)
	dst = appendMillis(dst, "ms_total", st.CompactionTotal)
	dst = appendMillis(dst, "ms_max", st.CompactionMax)
	return append(dst, '}'), nil
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
