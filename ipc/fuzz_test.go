package ipc

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"liminald/conversation"

	"liminald/sqlitestore"
)

// fuzzRequests are valid requests of every op.
var fuzzRequests = []string{
	`{"id":1,"op":"hello","client":"fuzz"}`,
	`{"id":"p","op":"ping"}`,
	`{"id":2,"op":"receive","conversation":"f","message_id":"m","received_at":1700000000000}`,
	`{"id":3,"op":"receive","conversation":"f","message_id":"n","expected_seq":0}`,
	`{"id":4,"op":"decide","conversation":"f","message_id":"m"}`,
	`{"id":5,"op":"start","conversation":"f","message_id":"m"}`,
	`{"id":6,"op":"step","conversation":"f","message_id":"m","step_index":3,"output":"aGVsbG8="}`,
	`{"id":7,"op":"finish","conversation":"f","message_id":"m","expected_seq":4}`,
	`{"id":8,"op":"fail","conversation":"f","message_id":"n","error":"it broke\n"}`,
	`{"id":9,"op":"state","conversation":"f"}`,
	`{"id":10,"op":"state","conversation":"f","message_id":"m"}`,
	`{"id":11,"op":"read","conversation":"f","from_seq":1,"limit":2}`,
	`{"id":12,"op":"subscribe","conversation":"f","from_seq":0}`,
	`{"id":13,"op":"subscribe"}`,
	`{"id":14,"op":"unsubscribe","sub":1}`,
	`{"id":15,"op":"conversations","after":"a","limit":10}`,
	`{"id":16,"op":"stats"}`,
}

// fuzzMaxLine is the line limit of the fuzzed server: small, so that
// line_too_long comes up.
const fuzzMaxLine = 512

type fuzzSeed struct {
	data  []byte
	split uint16
}

// fuzzSeeds are the seeds of FuzzServer_Lines: the valid requests of every
// op, alone, together, and split at arbitrary points, and some invalid
// lines.
func fuzzSeeds() []fuzzSeed {
	all := strings.Join(fuzzRequests, "\n") + "\n"
	seeds := []fuzzSeed{
		{[]byte(all), 0},
		{[]byte(strings.Join(fuzzRequests, "\r\n")), uint16(len(all) / 2)},
		{[]byte("\xff\xfe\n\n  \r\n{}\n[]\n" + strings.Repeat("y", fuzzMaxLine+1) + "\n"), 3},
		{[]byte(`{"id":1.5,"op":"ping"}` + "\n" + `{"id":{"a":1},"op":"ping","id":2}`), 9},
	}
	for i, req := range fuzzRequests {
		seeds = append(seeds, fuzzSeed{[]byte(req + "\n"), uint16(i)})
		for _, at := range []int{1, len(req) / 3, 2 * len(req) / 3, len(req) - 1} {
			seeds = append(seeds,
				fuzzSeed{[]byte(req[:at] + "\n" + req[at:] + "\n" + req + "\n"), uint16(at)},
				fuzzSeed{[]byte(req[:at] + req), uint16(at + 1)})
		}
	}
	return seeds
}

// FuzzServer_Lines feeds arbitrary bytes, read in two parts split at an
// arbitrary point, to the server's line reader, request decoder and
// validation, and checks that there is one reply per line that is not
// blank, each one JSON object line, a success or a failure with a code of
// SPEC §3. A request that passes validation is answered with its decoded
// arguments, encoded by the reply code (echoReply), and must decode back to
// the same values.
//
// It does not run the ops against a store: under the fuzzer's coverage
// instrumentation (which covers the transpiled SQLite too) the store's
// goroutines and its growing state make coverage vary for the same input,
// and the fuzzer then spends its time minimizing inputs that are not new.
// TestServer_LinesOverSocket runs the same seeds end to end, through a real
// connection and store.
func FuzzServer_Lines(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s.data, s.split)
	}
	f.Fuzz(func(t *testing.T, data []byte, split uint16) {
		checkReplies(t, data, decodeLines(t, data, split))
	})
}

// decodeLines reads the lines of data, split in two reads at split, as a
// connection with the limit fuzzMaxLine does, and answers each: a failure
// for a line over the limit or a request that does not decode, else
// echoReply, checked to decode back to the request's values.
func decodeLines(t *testing.T, data []byte, split uint16) [][]byte {
	at := int(split) % (len(data) + 1)
	lr := newLineReader(io.MultiReader(bytes.NewReader(data[:at]), bytes.NewReader(data[at:])), 16)
	srv := &Server{log: slog.New(slog.DiscardHandler)}
	var replies [][]byte
	var r request
	for {
		line, tooLong, err := lr.next(func() int { return fuzzMaxLine })
		if err != nil {
			return replies
		}
		switch {
		case tooLong:
			replies = append(replies, appendFailure(nil, nil, &Error{Code: CodeLineTooLong, Message: "line too long"}))
		case blank(line):
		default:
			if err := r.parse(line); err != nil {
				replies = append(replies, srv.appendError(nil, &r, err))
				continue
			}
			reply := echoReply(&r)
			checkEcho(t, &r, reply)
			replies = append(replies, reply)
		}
	}
}

// echoReply returns a success reply to r carrying its decoded arguments:
// for a write, the event it would append.
func echoReply(r *request) []byte {
	dst := appendString(appendOK(nil, r.id), "op", r.op.String())
	if r.op.isWrite() {
		e := r.cmd.Event(0, 0)
		dst = appendKey(dst, "event")
		dst = e.AppendJSON(dst)
		dst = appendInt(dst, "expected_seq", r.cmd.ExpectedSeq)
		return appendEnd(dst)
	}
	dst = appendString(dst, "conversation", r.conv)
	dst = appendString(dst, "message_id", r.msg)
	dst = appendString(dst, "after", r.after)
	dst = appendString(dst, "client", r.client)
	dst = appendInt(dst, "from_seq", r.fromSeq)
	dst = appendInt(dst, "from_pos", r.fromPos)
	dst = appendInt(dst, "limit", int64(r.limit))
	dst = appendInt(dst, "sub", r.sub)
	return appendEnd(dst)
}

// checkEcho checks that reply, the echoReply of r, decodes to r's values.
func checkEcho(t *testing.T, r *request, reply []byte) {
	t.Helper()
	var got struct {
		Op           string              `json:"op"`
		Event        *conversation.Event `json:"event"`
		ExpectedSeq  int64               `json:"expected_seq"`
		Conversation string              `json:"conversation"`
		MessageID    string              `json:"message_id"`
		After        string              `json:"after"`
		Client       string              `json:"client"`
		FromSeq      int64               `json:"from_seq"`
		FromPos      int64               `json:"from_pos"`
		Limit        int                 `json:"limit"`
		Sub          int64               `json:"sub"`
	}
	if err := json.Unmarshal(reply, &got); err != nil {
		t.Fatalf("echo %s: %v", reply, err)
	}
	if got.Op != r.op.String() {
		t.Errorf("echo %s: op %q, want %q", reply, got.Op, r.op)
	}
	if r.op.isWrite() {
		c, e := &r.cmd, got.Event
		if e == nil || e.Conversation != c.Conversation || e.MessageID != c.MessageID || e.Error != c.Error ||
			!bytes.Equal(e.Output, c.Output) || e.StepIndex != c.StepIndex || (c.HasReceivedAt && e.ReceivedAt != c.ReceivedAt) ||
			got.ExpectedSeq != c.ExpectedSeq {
			t.Errorf("echo %s does not match the command %+v", reply, *c)
		}
		return
	}
	if got.Conversation != r.conv || got.MessageID != r.msg || got.After != r.after || got.Client != r.client ||
		got.FromSeq != r.fromSeq || got.FromPos != r.fromPos || got.Limit != r.limit || got.Sub != r.sub {
		t.Errorf("echo %s does not match the request %+v", reply, *r)
	}
}

// checkReplies checks the replies to data: one per line that is not blank,
// each one JSON object line, a success or a failure with a known code.
func checkReplies(t *testing.T, data []byte, replies [][]byte) {
	t.Helper()
	for _, line := range replies {
		if len(line) == 0 || line[len(line)-1] != '\n' || bytes.Count(line, []byte("\n")) != 1 {
			t.Fatalf("reply %q is not one line", line)
		}
		r := mustObject(t, string(line))
		if _, ok := r["id"]; !ok {
			t.Fatalf("reply %s has no id", line)
		}
		switch r["ok"] {
		case true:
		case false:
			if code, _ := errorField(r); !Code(code).Known() {
				t.Errorf("reply %s has an unknown code", line)
			}
		default:
			t.Errorf("reply %s has no ok", line)
		}
	}
	if want := expectedReplies(data); len(replies) != want {
		t.Errorf("%d replies to %d lines that are not blank in %q", len(replies), want, data)
	}
}

// TestServer_LinesOverSocket runs the seeds of FuzzServer_Lines through a
// real connection, in two writes, and checks the replies as the fuzz target
// does; pushes of the subscriptions are skipped.
func TestServer_LinesOverSocket(t *testing.T) {
	ts := startServer(t, Config{Store: mustOpenStore(t, sqlitestore.Options{Sync: sqlitestore.SyncNormal}), MaxLineBytes: fuzzMaxLine})
	for i, s := range fuzzSeeds() {
		c := dialRaw(t, ts.path)
		at := int(s.split) % (len(s.data) + 1)
		wrote := make(chan error, 1)
		go func() {
			_, err := c.nc.Write(s.data[:at])
			if err == nil {
				_, err = c.nc.Write(s.data[at:])
			}
			c.nc.CloseWrite()
			wrote <- err
		}()
		var replies [][]byte
		for {
			c.nc.SetReadDeadline(time.Now().Add(time.Minute))
			line, err := c.br.ReadBytes('\n')
			if err == io.EOF && len(line) == 0 {
				break
			}
			if err != nil {
				t.Fatalf("seed %d: read: %v (%q)", i, err, line)
			}
			if !bytes.HasPrefix(line, []byte(`{"sub":`)) {
				replies = append(replies, line)
			}
		}
		if err := <-wrote; err != nil {
			t.Fatalf("seed %d: write: %v", i, err)
		}
		checkReplies(t, s.data, replies)
		c.nc.Close()
	}
}

// expectedReplies counts the lines of data a server answers: every line
// over the limit, and every other line that is not blank.
func expectedReplies(data []byte) int {
	n := 0
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > fuzzMaxLine || len(bytes.Trim(line, " \t\r")) > 0 {
			n++
		}
	}
	return n
}
