package ipc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"liminald/conversation"
)

// TestServer_Ops runs every op over a raw socket, in one conversation's
// life, and checks each reply's fields exactly (an error's message and an
// event's ts only for presence).
func TestServer_Ops(t *testing.T) {
	ts := startServer(t, Config{Version: "1.2.3"})
	c := dialRaw(t, ts.path)
	const m = `"conversation":"c","message_id":"m"`
	steps := []struct{ name, req, want string }{
		{"Ping", `{"id":1,"op":"ping"}`, `{"id":1,"ok":true}`},
		{"Hello", `{"id":2,"op":"hello","client":"test/1"}`, `{"id":2,"ok":true,"protocol":2,
			"server":{"name":"liminald","version":"1.2.3"},
			"ops":["hello","ping","receive","decide","start","step","finish","fail","state","read","subscribe","unsubscribe","conversations","stats","renew","release","messages","explain"],
			"limits":{"max_line_bytes":1048576,"max_inflight":64,"max_name_bytes":256,"max_error_bytes":65536,"read_limit_max":10000,"conversations_limit_max":1000,
			"messages_limit_max":1000,"max_lease_ms":86400000,"max_output_bytes":783360}}`},
		{"StateUnknownConversation", `{"id":3,"op":"state","conversation":"c"}`,
			`{"id":3,"ok":true,"next_seq":0,"messages":{"received":0,"in_progress":0,"errored":0,"finished":0,"total":0},"compacted":0,"forgotten_before":null}`},
		{"StateUnknownMessage", `{"id":4,"op":"state",` + m + `}`,
			`{"id":4,"ok":true,"status":"unknown","received_at":null,"last_completed_step":null,"steps":[],"error":null,"attempts":0,"token":null,"worker":null,"lease_expires_at":null,"quarantined":false,"fingerprint":null,"compacted":false}`},
		{"DecideNew", `{"id":5,"op":"decide",` + m + `}`, `{"id":5,"ok":true,"decision":"start"}`},
		{"ReceiveNew", `{"id":6,"op":"receive",` + m + `,"received_at":1000}`, `{"id":6,"ok":true,"decision":"start","seq":0}`},
		{"ReceiveAgain", `{"id":7,"op":"receive",` + m + `}`, `{"id":7,"ok":true,"decision":"resume","resume_from":0}`},
		{"DecideReceived", `{"id":8,"op":"decide",` + m + `}`, `{"id":8,"ok":true,"decision":"resume","resume_from":0}`},
		{"Start", `{"id":9,"op":"start",` + m + `}`, `{"id":9,"ok":true,"seq":1,"token":1}`},
		{"StartDuplicate", `{"id":10,"op":"start",` + m + `}`, `{"id":10,"ok":true,"seq":1,"duplicate":true,"token":1}`},
		{"Step", `{"id":11,"op":"step",` + m + `,"step_index":0,"output":"aGk="}`, `{"id":11,"ok":true,"seq":2}`},
		{"StepDuplicate", `{"id":12,"op":"step",` + m + `,"step_index":0,"output":"aGk="}`, `{"id":12,"ok":true,"seq":2,"duplicate":true}`},
		{"StepConflict", `{"id":13,"op":"step",` + m + `,"step_index":0,"output":""}`,
			`{"id":13,"ok":false,"error":{"code":"step_conflict","message":"*","retryable":false}}`},
		{"StepEmptyOutput", `{"id":14,"op":"step",` + m + `,"step_index":4,"output":""}`, `{"id":14,"ok":true,"seq":3}`},
		{"DecideResume", `{"id":15,"op":"decide",` + m + `}`, `{"id":15,"ok":true,"decision":"resume","resume_from":5}`},
		{"Fail", `{"id":16,"op":"fail",` + m + `,"error":"boom"}`, `{"id":16,"ok":true,"seq":4}`},
		{"FailDuplicate", `{"id":17,"op":"fail",` + m + `,"error":"boom"}`, `{"id":17,"ok":true,"seq":4,"duplicate":true}`},
		{"StateErrored", `{"id":18,"op":"state",` + m + `}`, `{"id":18,"ok":true,"status":"errored","received_at":1000,
			"last_completed_step":4,"steps":[{"step_index":0,"seq":2,"output":"aGk="},{"step_index":4,"seq":3,"output":""}],"error":"boom","attempts":1,"token":1,"worker":null,"lease_expires_at":null,"quarantined":false,"fingerprint":null,"compacted":false}`},
		{"StartAfterError", `{"id":19,"op":"start",` + m + `}`, `{"id":19,"ok":true,"seq":5,"token":5}`},
		{"Finish", `{"id":20,"op":"finish",` + m + `}`, `{"id":20,"ok":true,"seq":6}`},
		{"FinishDuplicate", `{"id":21,"op":"finish",` + m + `}`, `{"id":21,"ok":true,"seq":6,"duplicate":true}`},
		{"DecideSkip", `{"id":22,"op":"decide",` + m + `}`, `{"id":22,"ok":true,"decision":"skip"}`},
		{"ReceiveSkip", `{"id":23,"op":"receive",` + m + `}`, `{"id":23,"ok":true,"decision":"skip"}`},
		{"AlreadyFinished", `{"id":24,"op":"start",` + m + `}`,
			`{"id":24,"ok":false,"error":{"code":"already_finished","message":"*","retryable":false}}`},
		{"UnknownMessage", `{"id":25,"op":"step","conversation":"c","message_id":"x","step_index":0,"output":""}`,
			`{"id":25,"ok":false,"error":{"code":"unknown_message","message":"*","retryable":false}}`},
		{"ReceiveExpectedSeq", `{"id":26,"op":"receive","conversation":"c","message_id":"m2","expected_seq":7}`,
			`{"id":26,"ok":true,"decision":"start","seq":7}`},
		{"ReceiveRetry", `{"id":27,"op":"receive","conversation":"c","message_id":"m2","expected_seq":7}`,
			`{"id":27,"ok":true,"decision":"start","seq":7,"duplicate":true}`},
		{"SequenceConflict", `{"id":28,"op":"start","conversation":"c","message_id":"m2","expected_seq":3}`,
			`{"id":28,"ok":false,"error":{"code":"sequence_conflict","message":"*","retryable":false,"expected":3,"actual":8}}`},
		{"StartExpectedSeq", `{"id":29,"op":"start","conversation":"c","message_id":"m2","expected_seq":8}`, `{"id":29,"ok":true,"seq":8,"token":8}`},
		{"StateConversation", `{"id":30,"op":"state","conversation":"c"}`,
			`{"id":30,"ok":true,"next_seq":9,"messages":{"received":0,"in_progress":1,"errored":0,"finished":1,"total":2},"compacted":0,"forgotten_before":null}`},
		{"Read", `{"id":31,"op":"read","conversation":"c","from_seq":1,"limit":3}`, `{"id":31,"ok":true,"events":[
			{"conversation":"c","seq":1,"pos":2,"ts":0,"type":"processing_started","message_id":"m"},
			{"conversation":"c","seq":2,"pos":3,"ts":0,"type":"step_completed","message_id":"m","step_index":0,"output":"aGk="},
			{"conversation":"c","seq":3,"pos":4,"ts":0,"type":"step_completed","message_id":"m","step_index":4,"output":""}],"next_seq":4}`},
		{"ReadTypes", `{"id":32,"op":"read","conversation":"c","from_seq":4,"limit":3}`, `{"id":32,"ok":true,"events":[
			{"conversation":"c","seq":4,"pos":5,"ts":0,"type":"error_occurred","message_id":"m","error":"boom"},
			{"conversation":"c","seq":5,"pos":6,"ts":0,"type":"processing_started","message_id":"m"},
			{"conversation":"c","seq":6,"pos":7,"ts":0,"type":"processing_finished","message_id":"m"}],"next_seq":7}`},
		{"ReadFirst", `{"id":33,"op":"read","conversation":"c","limit":1}`, `{"id":33,"ok":true,"events":[
			{"conversation":"c","seq":0,"pos":1,"ts":0,"type":"message_received","message_id":"m","received_at":1000}],"next_seq":1}`},
		{"ReadPastEnd", `{"id":34,"op":"read","conversation":"c","from_seq":50}`, `{"id":34,"ok":true,"events":[],"next_seq":50}`},
		{"ReadUnknown", `{"id":35,"op":"read","conversation":"nope"}`, `{"id":35,"ok":true,"events":[],"next_seq":0}`},
		{"ReceiveOther", `{"id":36,"op":"receive","conversation":"b","message_id":"m"}`, `{"id":36,"ok":true,"decision":"start","seq":0}`},
		{"Conversations", `{"id":37,"op":"conversations"}`, `{"id":37,"ok":true,"conversations":[
			{"conversation":"b","next_seq":1,"messages":1},{"conversation":"c","next_seq":9,"messages":2}]}`},
		{"ConversationsAfter", `{"id":38,"op":"conversations","after":"b","limit":1}`,
			`{"id":38,"ok":true,"conversations":[{"conversation":"c","next_seq":9,"messages":2}]}`},
		{"Subscribe", `{"id":39,"op":"subscribe","conversation":"b"}`, `{"id":39,"ok":true,"sub":1}`},
		{"Unsubscribe", `{"id":40,"op":"unsubscribe","sub":1}`, `{"id":40,"ok":true}`},
		{"UnsubscribeAgain", `{"id":41,"op":"unsubscribe","sub":1}`, `{"id":41,"ok":true}`},
		{"UnknownOp", `{"id":42,"op":"frobnicate"}`, `{"id":42,"ok":false,"error":{"code":"unknown_op","message":"*","retryable":false}}`},
		{"NoID", `{"op":"ping"}`, `{"id":null,"ok":true}`},
	}
	for _, s := range steps {
		c.send(s.req + "\n")
		got := c.line()
		if !sameJSON(t, got, s.want) {
			t.Errorf("%s: %s\n got %s\nwant %s", s.name, s.req, got, compact(t, s.want))
		}
	}

	t.Run("Stats", func(t *testing.T) {
		r := c.roundTrip(`{"id":"s","op":"stats"}`)
		for _, k := range []string{"conversations", "messages", "events", "db_bytes", "uptime_s", "connections", "subscribers"} {
			if _, ok := r[k].(json.Number); !ok {
				t.Errorf("stats %s = %v, want a number", k, r[k])
			}
		}
		for k, want := range map[string]string{"conversations": "2", "messages": "3", "events": "10", "connections": "1", "subscribers": "0"} {
			if got := fmt.Sprint(r[k]); got != want {
				t.Errorf("stats %s = %s, want %s", k, got, want)
			}
		}
		commits, _ := r["commits"].(map[string]any)
		for _, k := range []string{"count", "failed", "requests", "appended", "max_batch", "avg_batch", "commit_ms_avg", "commit_ms_max"} {
			if _, ok := commits[k].(json.Number); !ok {
				t.Errorf("stats commits.%s = %v, want a number", k, commits[k])
			}
		}
		if got := fmt.Sprint(commits["appended"]); got != "10" {
			t.Errorf("stats commits.appended = %s, want 10", got)
		}
	})
}

// TestServer_ID checks that ids are echoed byte for byte, and that an id of
// another type is a bad_request naming it, answered with "id": null.
func TestServer_ID(t *testing.T) {
	ts := startServer(t, Config{})
	c := dialRaw(t, ts.path)
	for _, tt := range []struct {
		id, want string // want: the reply's prefix up to the id
	}{
		{`"a\u00e9"`, `{"id":"a\u00e9",`},
		{`"aé"`, `{"id":"aé",`},
		{`12345678901`, `{"id":12345678901,`},
		{`123456789012345678901234567890`, `{"id":123456789012345678901234567890,`},
		{`-7`, `{"id":-7,`},
		{`""`, `{"id":"",`},
		{`"q\"\\\/\n"`, `{"id":"q\"\\\/\n",`},
		{`null`, `{"id":null,`},
	} {
		c.send(`{"op":"ping", "id" : ` + tt.id + "}\n")
		if got := c.line(); got != tt.want+`"ok":true}` {
			t.Errorf("ping with id %s: got %s, want %s", tt.id, got, tt.want+`"ok":true}`)
		}
	}
	for _, id := range []string{`1.5`, `1e3`, `1.0`, `true`, `{}`, `["a"]`} {
		c.send(`{"id":` + id + `,"op":"ping"}` + "\n")
		got := c.line()
		if !strings.HasPrefix(got, `{"id":null,"ok":false,`) {
			t.Errorf("ping with id %s: got %s, want a failure with id null", id, got)
		}
		if code, field := errorField(mustObject(t, got)); code != "bad_request" || field != "id" {
			t.Errorf("ping with id %s: got %s/%s, want bad_request/id", id, code, field)
		}
	}
	t.Run("EchoedOnFailure", func(t *testing.T) {
		r := c.roundTrip(`{"id":"x","op":"start","conversation":"c","message_id":"nope"}`)
		if r["id"] != "x" || r["ok"] != false {
			t.Errorf("got %v, want id x and a failure", r)
		}
	})
}

// TestServer_Lines checks the line decoder over a socket: the line limit,
// blank lines, CRLF, invalid UTF-8 and malformed JSON, after each of which
// the connection keeps working.
func TestServer_Lines(t *testing.T) {
	ts := startServer(t, Config{MaxLineBytes: 100})
	const ping = `{"id":"p","op":"ping"}`
	pad := func(n int) string { // a ping line of exactly n bytes
		return `{"id":"p","op":"ping","x":"` + strings.Repeat("a", n-len(ping)-7) + `"}`
	}
	badRequest := `{"id":null,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false}}`
	tooLong := `{"id":null,"ok":false,"error":{"code":"line_too_long","message":"*","retryable":false}}`
	for _, tt := range []struct {
		name string
		in   string
		want []string
	}{
		{"AtLimit", pad(100) + "\n", []string{`{"id":"p","ok":true}`}},
		{"AtLimitCRLF", pad(100) + "\r\n", []string{`{"id":"p","ok":true}`}},
		{"OverLimit", pad(101) + "\n" + ping + "\n", []string{tooLong, `{"id":"p","ok":true}`}},
		{"FarOverLimit", strings.Repeat("x", 1<<20) + "\n" + ping + "\n", []string{tooLong, `{"id":"p","ok":true}`}},
		{"OverLimitNotJSON", `{"id":1,` + strings.Repeat(" ", 200) + "\n" + ping + "\n", []string{tooLong, `{"id":"p","ok":true}`}},
		{"CRLF", ping + "\r\n" + ping + "\r\n", []string{`{"id":"p","ok":true}`, `{"id":"p","ok":true}`}},
		{"Blank", "\n\r\n  \t \n" + ping + "\n\n", []string{`{"id":"p","ok":true}`}},
		{"InvalidUTF8", "{\"id\":\"\xff\",\"op\":\"ping\"}\n" + ping + "\n", []string{badRequest, `{"id":"p","ok":true}`}},
		{"Malformed", `{"id":1,"op":"ping"` + "\n" + ping + "\n", []string{badRequest, `{"id":"p","ok":true}`}},
		{"TrailingGarbage", `{"id":1,"op":"ping"} x` + "\n", []string{badRequest}},
		{"TwoObjects", `{"id":1,"op":"ping"}{"id":2,"op":"ping"}` + "\n", []string{badRequest}},
		{"Array", `[{"id":1,"op":"ping"}]` + "\n", []string{badRequest}},
		{"String", `"ping"` + "\n", []string{badRequest}},
		{"Number", "1\n", []string{badRequest}},
		{"Null", "null\n", []string{badRequest}},
		{"Empty", "{}\n", []string{`{"id":null,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"op"}}`}},
		{"Spaces", " { \"op\" : \"ping\" , \"id\" : 3 } \n", []string{`{"id":3,"ok":true}`}},
		{"UnknownFields", `{"id":4,"op":"ping","x":{"a":[1,"}",{"b":null}]},"y":"\"}"}` + "\n", []string{`{"id":4,"ok":true}`}},
		{"CaseMatters", `{"id":5,"OP":"ping"}` + "\n", []string{`{"id":5,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"op"}}`}},
		{"EscapedKey", `{"id":6,"\u006fp":"ping"}` + "\n", []string{`{"id":6,"ok":true}`}},
		{"NullOp", `{"id":7,"op":null}` + "\n", []string{`{"id":7,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"op"}}`}},
		{"Duplicate", `{"id":8,"op":"ping","op":"ping"}` + "\n", []string{`{"id":8,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"op"}}`}},
		{"DuplicateID", `{"id":8,"op":"ping","id":9}` + "\n", []string{`{"id":null,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"id"}}`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := dialRaw(t, ts.path)
			c.send(tt.in)
			for _, want := range tt.want {
				if got := c.line(); !sameJSON(t, got, want) {
					t.Errorf("got %s\nwant %s", got, want)
				}
			}
			// The connection still works, and nothing else was answered.
			c.send(`{"id":"last","op":"ping"}` + "\n")
			if got := c.line(); got != `{"id":"last","ok":true}` {
				t.Errorf("next reply %s, want the last ping's", got)
			}
		})
	}
	t.Run("LastLineAtEOF", func(t *testing.T) {
		c := dialRaw(t, ts.path)
		c.send(ping + "\n" + `{"id":"end","op":"ping"}`)
		c.nc.CloseWrite()
		for _, want := range []string{`{"id":"p","ok":true}`, `{"id":"end","ok":true}`} {
			if got := c.line(); got != want {
				t.Errorf("got %s, want %s", got, want)
			}
		}
		c.eof()
	})
	t.Run("LimitChangesLive", func(t *testing.T) {
		c := dialRaw(t, ts.path)
		ts.SetLimits(200, 0)
		defer ts.SetLimits(100, 0)
		if got := c.roundTrip(pad(150)); got["ok"] != true {
			t.Errorf("a 150-byte line with the limit at 200: %v", got)
		}
		if got := c.roundTrip(`{"id":1,"op":"hello"}`); fmt.Sprint(got["limits"].(map[string]any)["max_line_bytes"]) != "200" {
			t.Errorf("hello limits = %v, want max_line_bytes 200", got["limits"])
		}
	})
}

// TestServer_BadRequest checks that each op's missing and ill-typed
// arguments are a bad_request naming the field, with the id echoed.
func TestServer_BadRequest(t *testing.T) {
	ts := startServer(t, Config{})
	c := dialRaw(t, ts.path)
	const m = `"conversation":"c","message_id":"m"`
	long := strings.Repeat("x", 257)
	for _, tt := range []struct{ req, field string }{
		{`"op":5`, "op"},
		{`"op":"ping","id":1.5`, "id"},
		{`"op":"hello","client":5`, "client"},
		{`"op":"receive","message_id":"m"`, "conversation"},
		{`"op":"receive","conversation":"c"`, "message_id"},
		{`"op":"receive","conversation":5,"message_id":"m"`, "conversation"},
		{`"op":"receive","conversation":"","message_id":"m"`, "conversation"},
		{`"op":"receive","conversation":"` + long + `","message_id":"m"`, "conversation"},
		{`"op":"receive","conversation":"c","message_id":"a\u0001b"`, "message_id"},
		{`"op":"receive","conversation":"c","message_id":["m"]`, "message_id"},
		{`"op":"receive",` + m + `,"received_at":"1"`, "received_at"},
		{`"op":"receive",` + m + `,"received_at":1.5`, "received_at"},
		{`"op":"receive",` + m + `,"received_at":-1`, "received_at"},
		{`"op":"receive",` + m + `,"received_at":9223372036854775808`, "received_at"},
		{`"op":"receive",` + m + `,"expected_seq":-1`, "expected_seq"},
		{`"op":"receive",` + m + `,"expected_seq":1e2`, "expected_seq"},
		{`"op":"decide","conversation":"c"`, "message_id"},
		{`"op":"decide","message_id":"m"`, "conversation"},
		{`"op":"start","conversation":"c"`, "message_id"},
		{`"op":"start",` + m + `,"expected_seq":true`, "expected_seq"},
		{`"op":"step",` + m + `,"output":""`, "step_index"},
		{`"op":"step",` + m + `,"step_index":0`, "output"},
		{`"op":"step",` + m + `,"step_index":4294967296,"output":""`, "step_index"},
		{`"op":"step",` + m + `,"step_index":1.0,"output":""`, "step_index"},
		{`"op":"step",` + m + `,"step_index":"1","output":""`, "step_index"},
		{`"op":"step",` + m + `,"step_index":-1,"output":""`, "step_index"},
		{`"op":"step",` + m + `,"step_index":0,"output":"!!"`, "output"},
		{`"op":"step",` + m + `,"step_index":0,"output":"aGk"`, "output"},
		{`"op":"step",` + m + `,"step_index":0,"output":[104]`, "output"},
		{`"op":"finish","message_id":"m"`, "conversation"},
		{`"op":"fail",` + m, "error"},
		{`"op":"fail",` + m + `,"error":""`, "error"},
		{`"op":"fail",` + m + `,"error":7`, "error"},
		{`"op":"fail",` + m + `,"error":"` + strings.Repeat("e", 64<<10+1) + `"`, "error"},
		{`"op":"state"`, "conversation"},
		{`"op":"state","conversation":"c","message_id":7`, "message_id"},
		{`"op":"state","conversation":"c","message_id":""`, "message_id"},
		{`"op":"read"`, "conversation"},
		{`"op":"read","conversation":"c","from_seq":-1`, "from_seq"},
		{`"op":"read","conversation":"c","limit":0`, "limit"},
		{`"op":"read","conversation":"c","limit":10001`, "limit"},
		{`"op":"read","conversation":"c","limit":"5"`, "limit"},
		{`"op":"subscribe","from_seq":0`, "from_seq"},
		{`"op":"subscribe","conversation":"c","from_seq":0,"from_pos":0`, "from_pos"},
		{`"op":"subscribe","from_pos":-3`, "from_pos"},
		{`"op":"subscribe","conversation":7`, "conversation"},
		{`"op":"unsubscribe"`, "sub"},
		{`"op":"unsubscribe","sub":"1"`, "sub"},
		{`"op":"unsubscribe","sub":99`, "sub"},
		{`"op":"conversations","limit":1001`, "limit"},
		{`"op":"conversations","after":5`, "after"},
	} {
		req := `{"id":"b",` + tt.req + "}"
		r := c.roundTrip(req)
		code, field := errorField(r)
		wantID := any("b")
		if tt.field == "id" {
			wantID = nil
		}
		if r["ok"] != false || code != "bad_request" || field != tt.field || r["id"] != wantID {
			if len(req) > 120 {
				req = req[:120] + "..."
			}
			t.Errorf("%s:\n got id %v, %s naming %q\nwant id %v, bad_request naming %q", req, r["id"], code, field, wantID, tt.field)
		}
		if msg, _ := r["error"].(map[string]any)["message"].(string); !strings.Contains(msg, tt.field) {
			t.Errorf("%.80s: message %q does not name %s", req, msg, tt.field)
		}
	}
}

// TestServer_Pipelining checks that pipelined requests are answered in
// order, and that the requests of one conversation take effect in order.
func TestServer_Pipelining(t *testing.T) {
	ts := startServer(t, Config{})
	t.Run("InOrder", func(t *testing.T) {
		c := dialRaw(t, ts.path)
		var b strings.Builder
		for i := range 200 {
			switch i % 4 {
			case 0:
				fmt.Fprintf(&b, `{"id":%d,"op":"receive","conversation":"p%d","message_id":"m%d"}`+"\n", i, i%7, i)
			case 1:
				fmt.Fprintf(&b, `{"id":%d,"op":"ping"}`+"\n", i)
			case 2:
				fmt.Fprintf(&b, `{"id":%d,"op":"decide","conversation":"p%d","message_id":"m%d"}`+"\n", i, (i-2)%7, i-2)
			case 3:
				fmt.Fprintf(&b, `{"id":%d,"op":"bogus"}`+"\n", i)
			}
		}
		c.send(b.String())
		for i := range 200 {
			r := c.reply()
			if got := fmt.Sprint(r["id"]); got != strconv.Itoa(i) {
				t.Fatalf("reply %d has id %s", i, got)
			}
			switch i % 4 {
			case 0:
				if r["decision"] != "start" {
					t.Errorf("receive %d: %v", i, r)
				}
			case 2: // sees the receive two requests before
				if r["decision"] != "resume" {
					t.Errorf("decide %d = %v, want resume", i, r)
				}
			}
		}
	})
	t.Run("OneConversationInOrder", func(t *testing.T) {
		c := dialRaw(t, ts.path)
		var b strings.Builder
		const m = `"conversation":"o","message_id":"m"`
		b.WriteString(`{"id":0,"op":"receive",` + m + "}\n")
		b.WriteString(`{"id":1,"op":"start",` + m + "}\n")
		for i := range 20 {
			fmt.Fprintf(&b, `{"id":%d,"op":"step",`+m+`,"step_index":%d,"output":"","expected_seq":%d}`+"\n", i+2, i, i+2)
		}
		b.WriteString(`{"id":22,"op":"finish",` + m + "}\n")
		b.WriteString(`{"id":23,"op":"state",` + m + "}\n")
		c.send(b.String())
		for i := range 23 {
			r := c.reply()
			if r["ok"] != true || fmt.Sprint(r["seq"]) != strconv.Itoa(i) {
				t.Errorf("request %d: %v, want seq %d", i, r, i)
			}
		}
		if r := c.reply(); r["status"] != "finished" {
			t.Errorf("state after finish: %v", r)
		}
	})
}

// TestServer_BackPressure checks that a client that writes far more
// requests than the server keeps in flight, without reading, gets every
// reply in order once it reads: back-pressure, not errors.
func TestServer_BackPressure(t *testing.T) {
	ts := startServer(t, Config{})
	c := dialRaw(t, ts.path)
	const n = 1000
	var b strings.Builder
	for i := range n {
		if i%10 == 0 {
			fmt.Fprintf(&b, `{"id":%d,"op":"receive","conversation":"bp","message_id":"m%d"}`+"\n", i, i)
		} else {
			fmt.Fprintf(&b, `{"id":%d,"op":"decide","conversation":"bp","message_id":"m%d","pad":"%s"}`+"\n", i, i, strings.Repeat("p", 400))
		}
	}
	wrote := make(chan error, 1)
	go func() { // blocks until the server reads on, which needs us to read
		_, err := c.nc.Write([]byte(b.String()))
		wrote <- err
	}()
	for i := range n {
		r := c.reply()
		if fmt.Sprint(r["id"]) != strconv.Itoa(i) || r["ok"] != true {
			t.Fatalf("reply %d: %v", i, r)
		}
	}
	if err := <-wrote; err != nil {
		t.Fatalf("write: %v", err)
	}
}

// TestServer_MaxConns checks that a connection over the limit gets one
// unavailable line and is closed, and that the others are unaffected.
func TestServer_MaxConns(t *testing.T) {
	ts := startServer(t, Config{MaxConns: 2})
	a, b := dialRaw(t, ts.path), dialRaw(t, ts.path)
	for _, c := range []*rawConn{a, b} {
		if r := c.roundTrip(`{"id":1,"op":"ping"}`); r["ok"] != true {
			t.Fatalf("ping: %v", r)
		}
	}
	over := dialRaw(t, ts.path)
	want := `{"id":null,"ok":false,"error":{"code":"unavailable","message":"too many connections","retryable":true}}`
	if got := over.line(); got != want {
		t.Errorf("connection over the limit got %s, want %s", got, want)
	}
	over.eof()
	if r := a.roundTrip(`{"id":2,"op":"ping"}`); r["ok"] != true {
		t.Errorf("ping after a refusal: %v", r)
	}
	if n := ts.Connections(); n != 2 {
		t.Errorf("Connections() = %d, want 2", n)
	}

	ts.SetLimits(0, 3)
	third := dialRaw(t, ts.path)
	if r := third.roundTrip(`{"id":3,"op":"ping"}`); r["ok"] != true {
		t.Errorf("ping on a third connection after SetLimits(0, 3): %v", r)
	}
}

// TestServer_Admit checks the Admit hook: a refused peer gets one
// forbidden line, then EOF.
func TestServer_Admit(t *testing.T) {
	var mu sync.Mutex
	allow := false
	ts := startServer(t, Config{Admit: func(net.Conn) error {
		mu.Lock()
		defer mu.Unlock()
		if !allow {
			return fmt.Errorf("uid 1234 is not in the allow-list: %w", ErrForbidden)
		}
		return nil
	}})
	c := dialRaw(t, ts.path)
	got := c.reply()
	if code, _ := errorField(got); code != "forbidden" || got["id"] != nil || got["ok"] != false {
		t.Errorf("refused peer got %v, want forbidden with id null", got)
	}
	if e := got["error"].(map[string]any); e["retryable"] != false {
		t.Errorf("forbidden is retryable: %v", e)
	}
	c.eof()

	mu.Lock()
	allow = true
	mu.Unlock()
	if r := dialRaw(t, ts.path).roundTrip(`{"id":1,"op":"ping"}`); r["ok"] != true {
		t.Errorf("admitted peer: ping = %v", r)
	}
}

// TestServer_Shutdown checks that Shutdown answers the requests read before
// it began, answers shutting_down to those read after, and returns once the
// connections closed.
func TestServer_Shutdown(t *testing.T) {
	store := mustOpenStore(t, sqlitestoreOptions())
	srv := NewServer(Config{Store: store, ShutdownGrace: time.Minute})
	path := socketPath(t)
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()

	busy, idle := dialRaw(t, path), dialRaw(t, path)
	if r := idle.roundTrip(`{"id":0,"op":"ping"}`); r["ok"] != true {
		t.Fatalf("ping: %v", r)
	}
	const n = 300
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"id":%d,"op":"receive","conversation":"s%d","message_id":"m%d"}`+"\n", i, i%5, i)
	}
	busy.send(b.String())
	first := busy.reply() // the server is reading the busy connection
	if fmt.Sprint(first["id"]) != "0" || first["ok"] != true {
		t.Fatalf("first reply: %v", first)
	}

	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(context.Background()) }()
	for { // Shutdown began once the socket is gone or refuses connections.
		nc, err := net.Dial("unix", path)
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		// Any other failure (EAGAIN: the backlog is full while the accept
		// loop lags) says nothing of Shutdown: dial again.
		if err == nil {
			nc.Close()
		}
	}
	idle.send(`{"id":1,"op":"receive","conversation":"late","message_id":"m"}` + "\n")
	if got := idle.reply(); fmt.Sprint(got["id"]) != "1" || got["ok"] != false {
		t.Errorf("request after shutdown began: %v", got)
	} else if code, _ := errorField(got); code != "shutting_down" {
		t.Errorf("request after shutdown began: code %s, want shutting_down", code)
	} else if got["error"].(map[string]any)["retryable"] != true {
		t.Errorf("shutting_down is not retryable: %v", got)
	}
	idle.nc.CloseWrite()
	idle.eof()

	// The busy connection's replies: answered ones first, then shutting_down,
	// and every answered receive is in the store.
	answered, refused := 1, 0
	for i := 1; i < n; i++ {
		r := busy.reply()
		if fmt.Sprint(r["id"]) != strconv.Itoa(i) {
			t.Fatalf("reply %d: %v", i, r)
		}
		switch code, _ := errorField(r); {
		case r["ok"] == true && refused == 0:
			answered++
			d, err := store.Decide(context.Background(), fmt.Sprintf("s%d", i%5), fmt.Sprintf("m%d", i), conversation.Delivery{})
			if err != nil || d.Action != conversation.Resume {
				t.Errorf("answered receive %d: store decides %v, %v; want resume", i, d, err)
			}
		case code == "shutting_down":
			refused++
		default:
			t.Errorf("reply %d: %v", i, r)
		}
	}
	busy.nc.CloseWrite()
	busy.eof()
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve = %v, want ErrServerClosed", err)
	}
	if n := srv.Connections(); n != 0 {
		t.Errorf("Connections() after Shutdown = %d", n)
	}
	if err := srv.Serve(l); !errors.Is(err, ErrServerClosed) {
		t.Errorf("Serve after Shutdown = %v, want ErrServerClosed", err)
	}
	t.Logf("%d requests answered, %d refused", answered, refused)

	t.Run("Forced", func(t *testing.T) {
		srv := NewServer(Config{Store: store, ShutdownGrace: time.Minute})
		path := socketPath(t)
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		c := dialRaw(t, path)
		if r := c.roundTrip(`{"id":1,"op":"ping"}`); r["ok"] != true {
			t.Fatalf("ping: %v", r)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Shutdown with an ended context = %v, want context.Canceled", err)
		}
		c.eof()
	})
}

// TestServer_SlowObserve: an Observe that does not return holds up only
// the replies of its own connection: the writes of another connection are
// still committed and answered.
func TestServer_SlowObserve(t *testing.T) {
	stuck, release := make(chan struct{}), make(chan struct{})
	unhold := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unhold) // before the server shuts down, should the test fail
	var once sync.Once
	ts := startServer(t, Config{Observe: func(op, outcome string, took time.Duration) {
		if op == "fail" {
			once.Do(func() { close(stuck); <-release })
		}
	}})
	a := dialRaw(t, ts.path)
	a.roundTrip(`{"op":"receive","conversation":"a","message_id":"m"}`)
	a.send(`{"op":"fail","conversation":"a","message_id":"m","error":"boom"}` + "\n")
	<-stuck // a's fail is answered by the store; its observation is held

	b := dialRaw(t, ts.path)
	for i := range 10 {
		m := fmt.Sprintf("m%d", i)
		for _, req := range []string{
			`{"op":"receive","conversation":"b","message_id":"` + m + `"}`,
			`{"op":"start","conversation":"b","message_id":"` + m + `"}`,
			`{"op":"finish","conversation":"b","message_id":"` + m + `"}`,
		} {
			if r := b.roundTrip(req); r["ok"] != true {
				t.Fatalf("%s while another connection's Observe is stuck: %v", req, r)
			}
		}
	}
	unhold()
	if r := a.reply(); r["ok"] != true {
		t.Errorf("the held fail: %v", r)
	}
}
