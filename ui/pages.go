package ui

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"liminald/conversation"
	"liminald/ipc"
)

// Paging.
const (
	pageSize = 100
	// scanMax bounds the conversation names one request of the
	// conversations page reads while it looks for names that match a
	// filter; past it the page offers to look further.
	scanMax = 10000
)

// filters are the status filters of a conversation's messages page, in the
// order it shows them: the URL's status value, the messages op's filter,
// and the label.
var filters = []struct{ Value, Op, Label string }{
	{"", "", "all"},
	{"in_flight", "in_progress", "in flight"},
	{"leased", "leased", "leased"},
	{"quarantined", "quarantined", "quarantined"},
	{"received", "received", "received"},
	{"errored", "errored", "errored"},
	{"finished", "finished", "finished"},
}

// page is what every page's template gets: its title, the conversation it
// is about (if any), and its own data.
type page struct {
	Title string
	Conv  string
	Data  any
}

// render writes page name with status code.
func (s *Server) render(w http.ResponseWriter, code int, name string, p page) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := s.pages.ExecuteTemplate(w, name, p); err != nil {
		s.log.Warn("render page", "page", name, "err", err)
	}
}

// problem renders the error page: what went wrong, in words, never a trace.
func (s *Server) problem(w http.ResponseWriter, code int, title, format string, args ...any) {
	s.render(w, code, "problem.html", page{Title: title, Data: fmt.Sprintf(format, args...)})
}

// failed renders the error page for err from the daemon, and forgets the
// client if its connection ended.
func (s *Server) failed(w http.ResponseWriter, c *ipc.Client, err error) {
	if c != nil {
		s.broke(c, err)
	}
	var we *ipc.Error
	if errors.As(err, &we) && we.Code == ipc.CodeBadRequest {
		s.problem(w, http.StatusBadRequest, "Not a valid request", "%v", err)
		return
	}
	s.problem(w, http.StatusServiceUnavailable, "The daemon cannot answer", "%v. Is liminald serve running on its socket?", err)
}

func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.problem(w, http.StatusNotFound, "No such page", "There is no page at %s.", r.URL.Path)
}

// convRow is a row of the conversations page.
type convRow struct {
	Name   string
	Next   int64
	Counts conversation.Counts
}

func (s *Server) conversations(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	q := r.URL.Query()
	filter, after := q.Get("q"), q.Get("after")
	c, err := s.daemon(ctx)
	if err != nil {
		s.failed(w, nil, err)
		return
	}
	var rows []convRow
	next, scanned := "", 0
	for len(rows) < pageSize && scanned < scanMax {
		list, err := c.Conversations(ctx, after, 1000)
		if err != nil {
			s.failed(w, c, err)
			return
		}
		for i, sum := range list {
			scanned++
			after = sum.Name
			if filter != "" && !strings.Contains(strings.ToLower(sum.Name), strings.ToLower(filter)) {
				continue
			}
			st, err := c.State(ctx, sum.Name)
			if err != nil {
				s.failed(w, c, err)
				return
			}
			rows = append(rows, convRow{Name: sum.Name, Next: st.Next, Counts: st.Counts})
			if len(rows) == pageSize {
				if i < len(list)-1 || len(list) == 1000 {
					next = sum.Name
				}
				break
			}
		}
		if len(list) < 1000 || len(rows) == pageSize {
			break
		}
		next = after // the scan stopped at scanMax: more may match
	}
	var more url.Values
	if next != "" {
		more = url.Values{"after": {next}}
		if filter != "" {
			more.Set("q", filter)
		}
	}
	s.render(w, http.StatusOK, "conversations.html", page{Title: "Conversations", Data: struct {
		Filter string
		Rows   []convRow
		More   url.Values
	}{filter, rows, more}})
}

func (s *Server) messages(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	conv := r.PathValue("conv")
	q := r.URL.Query()
	status, after := q.Get("status"), q.Get("after")
	op, known := "", false
	for _, f := range filters {
		if f.Value == status {
			op, known = f.Op, true
		}
	}
	if !known {
		s.problem(w, http.StatusBadRequest, "Unknown filter", "%q is not a status filter: use in_flight, leased, quarantined, received, errored or finished.", status)
		return
	}
	if err := conversation.ValidName("conversation", conv); err != nil {
		s.problem(w, http.StatusBadRequest, "Not a conversation name", "%v.", err)
		return
	}
	c, err := s.daemon(ctx)
	if err != nil {
		s.failed(w, nil, err)
		return
	}
	st, err := c.State(ctx, conv)
	if err != nil {
		s.failed(w, c, err)
		return
	}
	if st.Next == 0 {
		s.problem(w, http.StatusNotFound, "No such conversation", "Conversation %q has no events.", conv)
		return
	}
	list, next, err := c.Messages(ctx, conv, op, after, pageSize)
	if err != nil {
		s.failed(w, c, err)
		return
	}
	var more url.Values
	if next != "" {
		more = url.Values{"after": {next}}
		if status != "" {
			more.Set("status", status)
		}
	}
	s.render(w, http.StatusOK, "messages.html", page{Title: conv, Conv: conv, Data: struct {
		State   ipc.ConversationState
		Status  string
		Filters any
		Rows    []ipc.MessageSummary
		More    url.Values
		After   string
	}{st, status, filters, list, more, after}})
}

func (s *Server) message(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	conv, msg := r.PathValue("conv"), r.PathValue("msg")
	for _, n := range []struct{ field, v string }{{"conversation", conv}, {"message_id", msg}} {
		if err := conversation.ValidName(n.field, n.v); err != nil {
			s.problem(w, http.StatusBadRequest, "Not a valid name", "%v.", err)
			return
		}
	}
	c, err := s.daemon(ctx)
	if err != nil {
		s.failed(w, nil, err)
		return
	}
	ex, err := c.Explain(ctx, conv, msg)
	if err != nil {
		s.failed(w, c, err)
		return
	}
	st, err := c.MessageState(ctx, conv, msg)
	if err != nil {
		s.failed(w, c, err)
		return
	}
	code := http.StatusOK
	if st.Status == conversation.StatusUnknown {
		code = http.StatusNotFound
	}
	s.render(w, code, "message.html", page{Title: msg, Conv: conv, Data: struct {
		ID          string
		Explanation ipc.Explanation
		State       ipc.MessageState
	}{msg, ex, st}})
}

func (s *Server) tail(w http.ResponseWriter, r *http.Request) {
	conv := r.URL.Query().Get("conv")
	if conv != "" {
		if err := conversation.ValidName("conversation", conv); err != nil {
			s.problem(w, http.StatusBadRequest, "Not a conversation name", "%v.", err)
			return
		}
	}
	title := "Live tail: every conversation"
	if conv != "" {
		title = "Live tail: " + conv
	}
	s.render(w, http.StatusOK, "tail.html", page{Title: title, Conv: conv})
}

// heartbeat is how often an idle event stream sends a comment, so that a
// broken connection is noticed.
const heartbeat = 15 * time.Second

// events streams the events committed from now on, of one conversation
// (?conv=) or of all, as server-sent events: one "data:" line with the
// event object each.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	conv := r.URL.Query().Get("conv")
	if conv != "" {
		if err := conversation.ValidName("conversation", conv); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	c, err := s.daemon(ctx)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	stream, err := c.Subscribe(ctx, conv)
	if err != nil {
		s.broke(c, err)
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.Unsubscribe(ctx, stream.ID())
	}()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	// A comment first, so the browser knows the stream is open.
	if _, err := fmt.Fprint(w, ": subscribed\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	var buf []byte
	for {
		next, cancel := context.WithTimeout(ctx, heartbeat)
		e, err := stream.Next(next)
		cancel()
		switch {
		case err == nil:
			buf = append(e.AppendJSON(append(buf[:0], "data: "...)), "\n\n"...)
			_, err = w.Write(buf)
		case errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil:
			_, err = fmt.Fprint(w, ": idle\n\n")
		default:
			s.broke(c, err)
			if ctx.Err() == nil {
				// The subscription ended (the daemon stopped, or it
				// lagged): say so; the page offers to reload.
				fmt.Fprintf(w, "event: end\ndata: %s\n\n", strings.ReplaceAll(err.Error(), "\n", " "))
				rc.Flush()
			}
			return
		}
		if err != nil || rc.Flush() != nil {
			return
		}
	}
}

// funcs are the helpers of the templates.
var funcs = map[string]any{
	"time":   formatMillis,
	"output": showOutput,
	"path":   pathTo,
	"query":  query,
	"laststep": func(n int64) string {
		if n == conversation.NoStep {
			return "none"
		}
		return fmt.Sprint(n)
	},
}

func query(kv ...string) url.Values {
	q := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			q.Set(kv[i], kv[i+1])
		}
	}
	return q
}

// formatMillis shows epoch ms as a UTC time to the millisecond, or "-".
func formatMillis(ms int64) string {
	if ms == 0 {
		return "-"
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05.000")
}

// shown is a step's output as the timeline shows it.
type shown struct {
	Text string
	Hex  bool
	Size int
}

// showOutput shows b as text when it is valid UTF-8 without control
// characters (but tabs and line breaks), else as hex.
func showOutput(b []byte) shown {
	if utf8.Valid(b) && !strings.ContainsFunc(string(b), func(r rune) bool {
		return unicode.IsControl(r) && r != '\n' && r != '\r' && r != '\t'
	}) {
		return shown{Text: string(b), Size: len(b)}
	}
	return shown{Text: hex.EncodeToString(b), Hex: true, Size: len(b)}
}
