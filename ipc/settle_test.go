package ipc

import (
	"context"
	"sync"
	"testing"

	"liminald/conversation"
)

// heldStore is a real store whose writes wait while they are held: what a
// writer stuck behind a slow disk looks like to the server.
type heldStore struct {
	testStore
	mu   sync.Mutex
	gate chan struct{} // nil: writes go through
}

func (s *heldStore) hold() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gate = make(chan struct{})
}

func (s *heldStore) release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gate != nil {
		close(s.gate)
		s.gate = nil
	}
}

func (s *heldStore) WriteAsync(ctx context.Context, cmd conversation.Command, then func(conversation.Outcome, error)) {
	s.mu.Lock()
	gate := s.gate
	s.mu.Unlock()
	if gate == nil {
		s.testStore.WriteAsync(ctx, cmd, then)
		return
	}
	go func() {
		<-gate
		s.testStore.WriteAsync(ctx, cmd, then)
	}()
}

// TestServer_RedeliveryAnsweredWithoutTheWriter: a receive of a message
// whose state is durable, on a connection with nothing else in flight, is
// answered by the connection itself from the store's state (a skip, and a
// resume with its steps), while every write waits; a receive of a new
// message still waits for the writer, and a redelivery sent behind a
// write on the same connection is answered after it, in order.
func TestServer_RedeliveryAnsweredWithoutTheWriter(t *testing.T) {
	hs := &heldStore{testStore: mustOpenStore(t, sqlitestoreOptions())}
	ts := startServer(t, Config{Store: hs})
	c := dialRaw(t, ts.path)
	c.run(t, []step{
		{"ReceiveDone", `{"id":1,"op":"receive","conversation":"c","message_id":"done"}`, `{"id":1,"ok":true,"decision":"start","seq":0}`},
		{"StartDone", `{"id":2,"op":"start","conversation":"c","message_id":"done"}`, `{"id":2,"ok":true,"seq":1,"token":1}`},
		{"FinishDone", `{"id":3,"op":"finish","conversation":"c","message_id":"done"}`, `{"id":3,"ok":true,"seq":2}`},
		{"ReceiveHalf", `{"id":4,"op":"receive","conversation":"c","message_id":"half"}`, `{"id":4,"ok":true,"decision":"start","seq":3}`},
		{"StartHalf", `{"id":5,"op":"start","conversation":"c","message_id":"half"}`, `{"id":5,"ok":true,"seq":4,"token":4}`},
		{"StepHalf", `{"id":6,"op":"step","conversation":"c","message_id":"half","step_index":0,"output":"YQ=="}`, `{"id":6,"ok":true,"seq":5}`},
	})
	hs.hold()
	defer hs.release()
	waiting := dialRaw(t, ts.path)
	waiting.send(`{"id":7,"op":"receive","conversation":"c","message_id":"new"}` + "\n")
	c.run(t, []step{
		{"SkipWhileHeld", `{"id":8,"op":"receive","conversation":"c","message_id":"done"}`, `{"id":8,"ok":true,"decision":"skip"}`},
		{"ResumeWhileHeld", `{"id":9,"op":"receive","conversation":"c","message_id":"half","with_steps":true}`,
			`{"id":9,"ok":true,"decision":"resume","resume_from":1,"steps":[{"step_index":0,"output":"YQ=="}]}`},
	})
	behind := dialRaw(t, ts.path)
	behind.send(`{"id":10,"op":"receive","conversation":"c","message_id":"new2"}` + "\n" +
		`{"id":11,"op":"receive","conversation":"c","message_id":"done"}` + "\n")
	hs.release()
	sameJSON(t, waiting.line(), `{"id":7,"ok":true,"decision":"start","seq":6}`)
	sameJSON(t, behind.line(), `{"id":10,"ok":true,"decision":"start","seq":7}`)
	sameJSON(t, behind.line(), `{"id":11,"ok":true,"decision":"skip"}`)
}
