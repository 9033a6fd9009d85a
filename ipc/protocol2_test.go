package ipc

import (
	"fmt"
	"strings"
	"testing"

	"liminald/sqlitestore"
)

// TestServer_Protocol2 runs the ops and rules of SPEC §7 over a raw socket,
// on a store whose clock the test moves: leases, busy, takeover and
// fencing, renew, attempts and quarantine, release, fingerprints,
// with_steps, messages and explain. Each reply is checked field by field
// (an error's message for presence).
func TestServer_Protocol2(t *testing.T) {
	now := newTestClock(1_000_000)
	ts := startServer(t, Config{Store: mustOpenStore(t, sqlitestore.Options{Now: now.now, MaxAttempts: 2})})
	c := dialRaw(t, ts.path)
	m := `"conversation":"c","message_id":"m"`
	run := func(steps []step) { t.Helper(); c.run(t, steps) }
	run([]step{
		{"Receive", `{"id":1,"op":"receive",` + m + `,"fingerprint":"sha:1"}`, `{"id":1,"ok":true,"decision":"start","seq":0}`},
		{"FingerprintMismatch", `{"id":2,"op":"decide",` + m + `,"fingerprint":"sha:2"}`,
			`{"id":2,"ok":false,"error":{"code":"fingerprint_mismatch","message":"*","retryable":false,"stored":"sha:1"}}`},
		{"LeasedStart", `{"id":3,"op":"start",` + m + `,"worker":"w1","lease_ms":30000}`,
			`{"id":3,"ok":true,"seq":1,"token":1,"lease_expires_at":1030000}`},
		{"SameWorkerDuplicate", `{"id":4,"op":"start",` + m + `,"worker":"w1","lease_ms":30000}`,
			`{"id":4,"ok":true,"seq":1,"duplicate":true,"token":1,"lease_expires_at":1030000}`},
		{"Busy", `{"id":5,"op":"receive",` + m + `}`, `{"id":5,"ok":true,"decision":"busy","worker":"w1","token":1,"retry_after_ms":30000}`},
		{"BusyStart", `{"id":6,"op":"start",` + m + `,"worker":"w2","lease_ms":30000}`,
			`{"id":6,"ok":false,"error":{"code":"busy","message":"*","retryable":true,"worker":"w1","token":1,"retry_after_ms":30000}}`},
		{"Step", `{"id":7,"op":"step",` + m + `,"step_index":0,"output":"aGk=","token":1}`, `{"id":7,"ok":true,"seq":2}`},
		{"Renew", `{"id":8,"op":"renew",` + m + `,"token":1,"lease_ms":5000}`, `{"id":8,"ok":true,"seq":3,"lease_expires_at":1005000}`},
	})
	now.ms.Add(5000) // the renewed lease lapses
	run([]step{
		{"ResumeWithSteps", `{"id":9,"op":"decide",` + m + `,"with_steps":true}`,
			`{"id":9,"ok":true,"decision":"resume","resume_from":1,"steps":[{"step_index":0,"output":"aGk="}]}`},
		{"Takeover", `{"id":10,"op":"start",` + m + `,"worker":"w2","lease_ms":30000}`,
			`{"id":10,"ok":true,"seq":4,"token":4,"lease_expires_at":1035000}`},
		{"Fenced", `{"id":11,"op":"finish",` + m + `,"token":1}`,
			`{"id":11,"ok":false,"error":{"code":"fenced","message":"*","retryable":false,"token":1,"current_token":4}}`},
		{"FencedRenew", `{"id":12,"op":"renew",` + m + `,"token":1,"lease_ms":1000}`,
			`{"id":12,"ok":false,"error":{"code":"fenced","message":"*","retryable":false,"token":1,"current_token":4}}`},
		{"Fail", `{"id":13,"op":"fail",` + m + `,"error":"boom","token":4}`, `{"id":13,"ok":true,"seq":5}`},
		{"Quarantined", `{"id":14,"op":"receive",` + m + `}`, `{"id":14,"ok":true,"decision":"quarantined","attempts":2,"error":"boom"}`},
		{"QuarantinedStart", `{"id":15,"op":"start",` + m + `}`, `{"id":15,"ok":false,"error":{"code":"quarantined","message":"*","retryable":false}}`},
		{"ReceiveOther", `{"id":16,"op":"receive","conversation":"c","message_id":"n"}`, `{"id":16,"ok":true,"decision":"start","seq":6}`},
		{"Messages", `{"id":17,"op":"messages","conversation":"c","limit":1}`,
			`{"id":17,"ok":true,"messages":[{"message_id":"m","status":"errored","attempts":2,"last_completed_step":0,"received_at":1000000,
			"updated_at":1005000,"worker":"w2","lease_expires_at":null,"quarantined":true,"compacted":false}],"next":"m"}`},
		{"MessagesNext", `{"id":18,"op":"messages","conversation":"c","after":"m"}`,
			`{"id":18,"ok":true,"messages":[{"message_id":"n","status":"received","attempts":0,"last_completed_step":null,"received_at":1005000,
			"updated_at":1005000,"worker":null,"lease_expires_at":null,"quarantined":false,"compacted":false}],"next":null}`},
		{"MessagesQuarantined", `{"id":19,"op":"messages","conversation":"c","status":"quarantined"}`,
			`{"id":19,"ok":true,"messages":[{"message_id":"m","status":"errored","attempts":2,"last_completed_step":0,"received_at":1000000,
			"updated_at":1005000,"worker":"w2","lease_expires_at":null,"quarantined":true,"compacted":false}],"next":null}`},
		{"MessagesBadStatus", `{"id":20,"op":"messages","conversation":"c","status":"stuck"}`,
			`{"id":20,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"status"}}`},
		{"Explain", `{"id":21,"op":"explain",` + m + `}`,
			`{"id":21,"ok":true,"decision":"quarantined","attempts":2,"error":"boom","rule":"quarantined",
			"reason":"It was started 2 times (processing_started events) since it was received or released, and max_attempts is 2, so it is quarantined: an operator releases it to try again.","events":[
			{"conversation":"c","seq":0,"pos":1,"ts":1000000,"type":"message_received","message_id":"m","received_at":1000000,"fingerprint":"sha:1"},
			{"conversation":"c","seq":1,"pos":2,"ts":1000000,"type":"processing_started","message_id":"m","worker":"w1","lease_ms":30000},
			{"conversation":"c","seq":2,"pos":3,"ts":1000000,"type":"step_completed","message_id":"m","step_index":0,"output":"aGk="},
			{"conversation":"c","seq":3,"pos":4,"ts":1000000,"type":"lease_renewed","message_id":"m","token":1,"lease_ms":5000},
			{"conversation":"c","seq":4,"pos":5,"ts":1005000,"type":"processing_started","message_id":"m","worker":"w2","lease_ms":30000},
			{"conversation":"c","seq":5,"pos":6,"ts":1005000,"type":"error_occurred","message_id":"m","error":"boom"}]}`},
		{"ExplainNeverSeen", `{"id":22,"op":"explain","conversation":"c","message_id":"x"}`,
			`{"id":22,"ok":true,"decision":"start","rule":"never_seen",
			"reason":"No message_received event names this message, so it was never seen: a receive appends one and the caller starts it from step 0.","events":[]}`},
		{"Release", `{"id":23,"op":"release",` + m + `,"reason":"fixed"}`, `{"id":23,"ok":true,"seq":7}`},
		{"ReleaseAgain", `{"id":24,"op":"release",` + m + `}`, `{"id":24,"ok":false,"error":{"code":"not_quarantined","message":"*","retryable":false}}`},
		{"State", `{"id":25,"op":"state",` + m + `}`,
			`{"id":25,"ok":true,"status":"errored","received_at":1000000,"last_completed_step":0,"steps":[{"step_index":0,"seq":2,"output":"aGk="}],
			"error":"boom","attempts":0,"token":4,"worker":"w2","lease_expires_at":null,"quarantined":false,"fingerprint":"sha:1","compacted":false}`},
		{"ReleaseUnknown", `{"id":26,"op":"release","conversation":"c","message_id":"x"}`,
			`{"id":26,"ok":false,"error":{"code":"unknown_message","message":"*","retryable":false}}`},
		{"MessagesEmptyStatus", `{"id":27,"op":"messages","conversation":"c","status":""}`,
			`{"id":27,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"status"}}`},
		{"MessagesEmptyAfter", `{"id":28,"op":"messages","conversation":"c","after":""}`,
			`{"id":28,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"after"}}`},
	})
}

// TestServer_ReceiveWithSteps: a receive that resumes answers the steps
// below its resume_from, read before the next request on its conversation
// runs (a step pipelined after it is not among them), and a client that
// closes its writing half right after still gets them.
func TestServer_ReceiveWithSteps(t *testing.T) {
	ts := startServer(t, Config{})
	c := dialRaw(t, ts.path)
	m := `"conversation":"c","message_id":"m"`
	for _, req := range []string{
		`{"op":"receive",` + m + `}`, `{"op":"start",` + m + `}`,
		`{"op":"step",` + m + `,"step_index":0,"output":"YQ=="}`,
	} {
		if r := c.roundTrip(req); r["ok"] != true {
			t.Fatalf("%s: %v", req, r)
		}
	}
	for i := range 50 {
		c.send(`{"id":1,"op":"receive",` + m + `,"with_steps":true}` + "\n" +
			fmt.Sprintf(`{"id":2,"op":"step",`+m+`,"step_index":%d,"output":""}`, i+1) + "\n")
		want := fmt.Sprintf(`{"id":1,"ok":true,"decision":"resume","resume_from":%d,"steps":[{"step_index":0,"output":"YQ=="}`, i+1)
		for j := 1; j <= i; j++ {
			want += fmt.Sprintf(`,{"step_index":%d,"output":""}`, j)
		}
		if got := c.line(); got != want+"]}" {
			t.Fatalf("pipelined receive then step %d:\n got %s\nwant %s]}", i+1, got, want)
		}
		if got := c.line(); !strings.HasPrefix(got, `{"id":2,"ok":true`) {
			t.Fatalf("step %d: %s", i+1, got)
		}
	}
	for range 20 {
		h := dialRaw(t, ts.path)
		h.send(`{"id":3,"op":"receive",` + m + `,"with_steps":true}` + "\n")
		h.nc.CloseWrite()
		if got := h.line(); !strings.HasPrefix(got, `{"id":3,"ok":true,"decision":"resume"`) {
			t.Fatalf("receive with_steps, then a half-close: %s", got)
		}
		h.eof()
	}
}
