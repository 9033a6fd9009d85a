package ipc

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"liminald/sqlitestore"
)

// TestServer_Retention runs SPEC §8 over a raw socket, on a store whose
// clock the test moves and whose compaction the test runs: the compacted
// skip, writes to a tombstone, state and messages of one, read and
// subscribe past the gap, the forgotten decision by sent_at, a start that
// carries the horizon, and the figures of stats.
func TestServer_Retention(t *testing.T) {
	now := newTestClock(1_000_000)
	store := mustOpenStore(t, sqlitestore.Options{Now: now.now})
	ts := startServer(t, Config{Store: store})
	c := dialRaw(t, ts.path)
	run := func(steps []step) { t.Helper(); c.run(t, steps) }
	m := `"conversation":"c","message_id":"m"`
	run([]step{
		{"Receive", `{"id":1,"op":"receive",` + m + `,"fingerprint":"sha:1","sent_at":999000}`, `{"id":1,"ok":true,"decision":"start","seq":0}`},
		{"Start", `{"id":2,"op":"start",` + m + `}`, `{"id":2,"ok":true,"seq":1,"token":1}`},
		{"Step", `{"id":3,"op":"step",` + m + `,"step_index":0,"output":"aGk="}`, `{"id":3,"ok":true,"seq":2}`},
		{"Finish", `{"id":4,"op":"finish",` + m + `}`, `{"id":4,"ok":true,"seq":3}`},
		{"Other", `{"id":5,"op":"receive","conversation":"c","message_id":"n"}`, `{"id":5,"ok":true,"decision":"start","seq":4}`},
		{"BadSentAt", `{"id":6,"op":"decide",` + m + `,"sent_at":-1}`,
			`{"id":6,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"sent_at"}}`},
		{"BadSentAtType", `{"id":7,"op":"receive",` + m + `,"sent_at":"yesterday"}`,
			`{"id":7,"ok":false,"error":{"code":"bad_request","message":"*","retryable":false,"field":"sent_at"}}`},
	})
	now.ms.Add(60_001) // finished longer ago than retain_finished
	store.SetRetention(sqlitestore.Retention{Finished: time.Minute})
	compactNow(t, store.Store)
	run([]step{
		{"CompactedSkip", `{"id":10,"op":"receive",` + m + `}`, `{"id":10,"ok":true,"decision":"skip","compacted":true}`},
		{"CompactedDecide", `{"id":11,"op":"decide",` + m + `,"sent_at":1}`, `{"id":11,"ok":true,"decision":"skip","compacted":true}`},
		{"CompactedFingerprint", `{"id":12,"op":"decide",` + m + `,"fingerprint":"sha:2"}`,
			`{"id":12,"ok":false,"error":{"code":"fingerprint_mismatch","message":"*","retryable":false,"stored":"sha:1"}}`},
		{"FinishDuplicate", `{"id":13,"op":"finish",` + m + `}`, `{"id":13,"ok":true,"seq":3,"duplicate":true}`},
		{"FinishRetryAtItsSeq", `{"id":14,"op":"finish",` + m + `,"expected_seq":3}`, `{"id":14,"ok":true,"seq":3,"duplicate":true}`},
		{"StepAfterCompaction", `{"id":15,"op":"step",` + m + `,"step_index":0,"output":"aGk="}`,
			`{"id":15,"ok":false,"error":{"code":"already_finished","message":"*","retryable":false}}`},
		{"StateCompacted", `{"id":16,"op":"state",` + m + `}`,
			`{"id":16,"ok":true,"status":"finished","received_at":null,"last_completed_step":null,"steps":[],"error":null,
			"attempts":1,"token":null,"worker":null,"lease_expires_at":null,"quarantined":false,"fingerprint":"sha:1","compacted":true}`},
		{"StateConversation", `{"id":17,"op":"state","conversation":"c"}`,
			`{"id":17,"ok":true,"next_seq":5,"messages":{"received":1,"in_progress":0,"errored":0,"finished":1,"total":2},
			"compacted":1,"forgotten_before":null}`},
		{"MessagesFinished", `{"id":18,"op":"messages","conversation":"c","status":"finished"}`,
			`{"id":18,"ok":true,"messages":[{"message_id":"m","status":"finished","attempts":1,"last_completed_step":null,"received_at":null,
			"updated_at":1000000,"worker":null,"lease_expires_at":null,"quarantined":false,"compacted":true}],"next":null}`},
		{"ReadPastTheGap", `{"id":19,"op":"read","conversation":"c"}`,
			`{"id":19,"ok":true,"events":[{"conversation":"c","seq":4,"pos":5,"ts":1000000,"type":"message_received","message_id":"n","received_at":1000000}],"next_seq":5}`},
		{"ExplainCompacted", `{"id":20,"op":"explain",` + m + `}`,
			`{"id":20,"ok":true,"decision":"skip","compacted":true,"rule":"compacted","reason":"Its processing_finished was at seq 3, at 1970-01-01T00:16:40.000Z, and its events were compacted since; its tombstone says it is done: skip it.","events":[]}`},
	})
	// A subscription from a position whose events were compacted goes on
	// with the next event that remains.
	run([]step{{"SubscribeFromCompacted", `{"id":21,"op":"subscribe","from_pos":1}`, `{"id":21,"ok":true,"sub":1}`}})
	if got, want := c.line(), `{"sub":1,"event":{"conversation":"c","seq":4,"pos":5,"ts":1000000,"type":"message_received","message_id":"n","received_at":1000000}}`; !sameJSON(t, got, want) {
		t.Errorf("push after a compacted position:\n got %s\nwant %s", got, want)
	}
	run([]step{{"Unsubscribe", `{"id":22,"op":"unsubscribe","sub":1}`, `{"id":22,"ok":true}`}})

	now.ms.Add(3_600_000)
	store.SetRetention(sqlitestore.Retention{Finished: time.Minute, Tombstones: time.Hour})
	compactNow(t, store.Store)
	run([]step{
		{"Forgotten", `{"id":30,"op":"receive",` + m + `,"sent_at":999000}`, `{"id":30,"ok":true,"decision":"forgotten","forgotten_before":1000000}`},
		{"ForgottenAtTheHorizon", `{"id":31,"op":"decide",` + m + `,"sent_at":1000000}`, `{"id":31,"ok":true,"decision":"forgotten","forgotten_before":1000000}`},
		{"ExplainForgotten", `{"id":32,"op":"explain",` + m + `,"sent_at":1}`,
			`{"id":32,"ok":true,"decision":"forgotten","forgotten_before":1000000,"rule":"forgotten","reason":"No message_received event or tombstone names this message, and it was sent at or before 1970-01-01T00:16:40.000Z, when the conversation forgot the messages finished up to then: it may have been processed and forgotten, so nothing is appended and the caller chooses.","events":[]}`},
		{"NothingAppended", `{"id":33,"op":"state","conversation":"c"}`,
			`{"id":33,"ok":true,"next_seq":5,"messages":{"received":1,"in_progress":0,"errored":0,"finished":0,"total":1},
			"compacted":1,"forgotten_before":1000000}`},
		{"DecideStartCarriesHorizon", `{"id":34,"op":"decide",` + m + `}`, `{"id":34,"ok":true,"decision":"start","forgotten_before":1000000}`},
		{"StartCarriesHorizon", `{"id":35,"op":"receive",` + m + `,"sent_at":1000001}`,
			`{"id":35,"ok":true,"decision":"start","forgotten_before":1000000,"seq":5}`},
		{"OtherConversationHasNone", `{"id":36,"op":"receive","conversation":"d","message_id":"m","sent_at":1}`,
			`{"id":36,"ok":true,"decision":"start","seq":0}`},
	})
	reply := c.roundTrip(`{"id":40,"op":"stats"}`)
	for key, want := range map[string]string{"compacted": "1", "tombstones": "0", "tombstones_dropped": "1", "forgotten_before": "1000000"} {
		if fmt.Sprint(reply[key]) != want {
			t.Errorf("stats %s = %v, want %v (%v)", key, reply[key], want, reply)
		}
	}
	cp, _ := reply["compaction"].(map[string]any)
	if passes, err := strconv.Atoi(fmt.Sprint(cp["passes"])); err != nil || passes < 2 {
		t.Errorf("stats compaction = %v, want at least the 2 passes the test ran", reply["compaction"])
	}
}

// compactNow runs one compaction pass and fails tb if it fails.
func compactNow(tb testing.TB, s *sqlitestore.Store) {
	tb.Helper()
	if _, err := s.Compact(context.Background()); err != nil {
		tb.Fatal(fmt.Errorf("compact: %w", err))
	}
}
