package storetest

import (
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"liminald/conversation"
)

// testWrite runs the redelivery decision of SPEC §1 and every write rule of
// §2, in their order, through the store: each case writes its setup, then
// checks the outcome of its last command, and that a rejected command
// appends nothing and changes nothing.
func testWrite(t *testing.T, f Factory) {
	receive := Cmd(conversation.OpReceive, "m")
	start := Cmd(conversation.OpStart, "m")
	finish := Cmd(conversation.OpFinish, "m")
	receivedAt := func(ms int64) conversation.Command {
		c := receive
		c.ReceivedAt, c.HasReceivedAt = ms, true
		return c
	}
	type want struct {
		seq       int64
		append    bool
		duplicate bool
		action    conversation.Action
		resume    int64
		err       error
	}
	tests := []struct {
		name  string
		setup []conversation.Command
		cmd   conversation.Command
		want  want
	}{
		{"ReceiveNewStarts", nil, receive, want{seq: 0, append: true, action: conversation.Start}},
		{"ReceiveSeenResumesFromZero", []conversation.Command{receive}, receive, want{action: conversation.Resume, resume: 0}},
		{"ReceiveResumesAfterHighestStep", []conversation.Command{receive, start, Step("m", 0, "a"), Step("m", 5, "b"), Step("m", 2, "c")}, receive, want{action: conversation.Resume, resume: 6}},
		{"ReceiveErroredResumes", []conversation.Command{receive, start, Step("m", 1, "a"), fail("m", "boom")}, receive, want{action: conversation.Resume, resume: 2}},
		{"ReceiveFinishedSkips", []conversation.Command{receive, start, finish}, receive, want{action: conversation.Skip}},
		{"ExpectedSeqMatches", []conversation.Command{receive}, expect(start, 1), want{seq: 1, append: true}},
		{"ExpectedSeqTooHigh", []conversation.Command{receive}, expect(start, 5), want{err: &conversation.SequenceConflictError{Expected: 5, Actual: 1}}},
		{"ExpectedSeqLowerOtherEvent", []conversation.Command{receive, start}, expect(finish, 1), want{err: &conversation.SequenceConflictError{Expected: 1, Actual: 2}}},
		{"ExpectedSeqRetryOfLandedWrite", []conversation.Command{receive, start, Step("m", 0, "out")}, expect(Step("m", 0, "out"), 2), want{seq: 2, duplicate: true}},
		{"ExpectedSeqRetryOtherOutput", []conversation.Command{receive, start, Step("m", 0, "out")}, expect(Step("m", 0, "other"), 2), want{err: &conversation.SequenceConflictError{Expected: 2, Actual: 3}}},
		{"ExpectedSeqRetryOfReceive", []conversation.Command{receive}, expect(receive, 0), want{seq: 0, duplicate: true, action: conversation.Start}},
		{"ExpectedSeqRetrySameReceivedAt", []conversation.Command{receivedAt(42)}, expect(receivedAt(42), 0), want{seq: 0, duplicate: true, action: conversation.Start}},
		{"ExpectedSeqRetryOtherReceivedAt", []conversation.Command{receivedAt(42)}, expect(receivedAt(43), 0), want{err: &conversation.SequenceConflictError{Expected: 0, Actual: 1}}},
		{"ExpectedSeqRetryOfFail", []conversation.Command{receive, start, fail("m", "boom"), start}, expect(fail("m", "boom"), 2), want{seq: 2, duplicate: true}},
		{"SequenceConflictBeforeUnknownMessage", nil, expect(Cmd(conversation.OpStart, "x"), 3), want{err: &conversation.SequenceConflictError{Expected: 3, Actual: 0}}},
		{"StartUnknownMessage", nil, start, want{err: conversation.ErrUnknownMessage}},
		{"StepUnknownMessage", []conversation.Command{receive}, Step("x", 0, ""), want{err: conversation.ErrUnknownMessage}},
		{"FinishUnknownMessage", []conversation.Command{receive}, Cmd(conversation.OpFinish, "x"), want{err: conversation.ErrUnknownMessage}},
		{"FailUnknownMessage", []conversation.Command{receive}, fail("x", "boom"), want{err: conversation.ErrUnknownMessage}},
		{"UnknownMessageInOtherConversation", []conversation.Command{receive}, func() conversation.Command { c := start; c.Conversation = "d"; return c }(), want{err: conversation.ErrUnknownMessage}},
		{"FinishAgainIsDuplicate", []conversation.Command{receive, start, finish}, finish, want{seq: 2, duplicate: true}},
		{"StartAfterFinish", []conversation.Command{receive, start, finish}, start, want{err: conversation.ErrAlreadyFinished}},
		{"StepAfterFinish", []conversation.Command{receive, start, finish}, Step("m", 0, ""), want{err: conversation.ErrAlreadyFinished}},
		{"FailAfterFinish", []conversation.Command{receive, start, finish}, fail("m", "late"), want{err: conversation.ErrAlreadyFinished}},
		{"AlreadyFinishedBeforeDuplicate", []conversation.Command{receive, start, Step("m", 0, "a"), finish}, Step("m", 0, "a"), want{err: conversation.ErrAlreadyFinished}},
		{"StartWhileInProgressIsDuplicate", []conversation.Command{receive, start, Step("m", 0, "a")}, start, want{seq: 1, duplicate: true}},
		{"StepSameOutputIsDuplicate", []conversation.Command{receive, start, Step("m", 0, "a"), Step("m", 1, "b")}, Step("m", 0, "a"), want{seq: 2, duplicate: true}},
		{"StepEmptyOutputIsDuplicate", []conversation.Command{receive, start, Step("m", 0, "")}, Step("m", 0, ""), want{seq: 2, duplicate: true}},
		{"StepOtherOutputConflicts", []conversation.Command{receive, start, Step("m", 0, "a")}, Step("m", 0, "b"), want{err: conversation.ErrStepConflict}},
		{"StepEmptyAfterOutputConflicts", []conversation.Command{receive, start, Step("m", 0, "a")}, Step("m", 0, ""), want{err: conversation.ErrStepConflict}},
		{"StepIndexesNeedNotBeContiguous", []conversation.Command{receive, start}, Step("m", 7, "x"), want{seq: 2, append: true}},
		{"StepOfOtherMessageIsNoDuplicate", []conversation.Command{receive, start, Step("m", 0, "a"), Cmd(conversation.OpReceive, "n")}, Step("n", 0, "a"), want{seq: 4, append: true}},
		{"FailSameTextIsDuplicate", []conversation.Command{receive, start, fail("m", "boom")}, fail("m", "boom"), want{seq: 2, duplicate: true}},
		{"FailOtherTextAppends", []conversation.Command{receive, start, fail("m", "boom")}, fail("m", "bang"), want{seq: 3, append: true}},
		// Text is bytes to the log: a NUL in it is kept and compared as any other.
		{"FailTextWithNUL", []conversation.Command{receive, start, fail("m", "a\x00b")}, fail("m", "a\x00b"), want{seq: 2, duplicate: true}},
		{"FailAfterStepAppends", []conversation.Command{receive, start, fail("m", "boom"), Step("m", 0, "a")}, fail("m", "boom"), want{seq: 4, append: true}},
		{"StartAfterErrorIsRetry", []conversation.Command{receive, start, fail("m", "boom")}, start, want{seq: 3, append: true}},
		{"FinishWithoutStart", []conversation.Command{receive}, finish, want{seq: 1, append: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := open(t, f)
			for _, c := range tt.setup {
				e.mustWrite(c)
			}
			before := e.events(tt.cmd.Conversation)
			stateBefore, _ := e.h.Message(e.ctx, tt.cmd.Conversation, tt.cmd.MessageID)
			got, err := e.write(tt.cmd)
			after := e.events(tt.cmd.Conversation)
			if tt.want.err != nil {
				var sc *conversation.SequenceConflictError
				if want, ok := tt.want.err.(*conversation.SequenceConflictError); ok {
					if !errors.As(err, &sc) || *sc != *want {
						t.Fatalf("Write(%+v) error = %v, want %v", tt.cmd, err, want)
					}
				} else if !errors.Is(err, tt.want.err) {
					t.Fatalf("Write(%+v) error = %v, want %v", tt.cmd, err, tt.want.err)
				}
				if len(after) != len(before) {
					t.Errorf("rejected Write appended %d events", len(after)-len(before))
				}
				if stateAfter, _ := e.h.Message(e.ctx, tt.cmd.Conversation, tt.cmd.MessageID); !reflect.DeepEqual(stateAfter, stateBefore) {
					t.Errorf("rejected Write changed the message from %+v to %+v", stateBefore, stateAfter)
				}
				return
			}
			if err != nil {
				t.Fatalf("Write(%+v) error = %v", tt.cmd, err)
			}
			if got.Append != tt.want.append || got.Duplicate != tt.want.duplicate || got.Decision.Action != tt.want.action || got.Decision.ResumeFrom != tt.want.resume {
				t.Errorf("Write(%+v) = %+v, want %+v", tt.cmd, got, tt.want)
			}
			if (got.Append || got.Duplicate) && got.Seq != tt.want.seq {
				t.Errorf("Write(%+v) seq = %d, want %d", tt.cmd, got.Seq, tt.want.seq)
			}
			wantLen := len(before)
			if tt.want.append {
				wantLen++
			}
			if len(after) != wantLen {
				t.Fatalf("log has %d events after Write, want %d", len(after), wantLen)
			}
			if tt.want.append {
				if last := after[len(after)-1]; last.Seq != tt.want.seq || last.Type != conversation.Type(tt.cmd.Op) || last.MessageID != tt.cmd.MessageID {
					t.Errorf("appended event = %+v, want a %v of %s at seq %d", last, tt.cmd.Op, tt.cmd.MessageID, tt.want.seq)
				}
			}
			// The decision of a write and of a read agree.
			if tt.cmd.Op == conversation.OpReceive {
				d, err := e.h.Decide(e.ctx, tt.cmd.Conversation, tt.cmd.MessageID, conversation.Delivery{})
				want := got.Decision.Action
				if want == conversation.Start {
					want = conversation.Resume // it was received by now
				}
				if err != nil || d.Action != want || d.ResumeFrom != got.Decision.ResumeFrom {
					t.Errorf("Decide after the receive = %+v, %v; want %v from %d", d, err, want, got.Decision.ResumeFrom)
				}
			}
		})
	}
}

// testConcurrentReceive: of many concurrent receives of one new message
// exactly one starts it; the others resume it from 0 (SPEC §1).
func testConcurrentReceive(t *testing.T, f Factory) {
	e := open(t, f)
	const n = 64
	var wg sync.WaitGroup
	var mu sync.Mutex
	actions := map[conversation.Action]int{}
	for range n {
		wg.Go(func() {
			out, err := e.write(Cmd(conversation.OpReceive, "m"))
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			actions[out.Decision.Action]++
			mu.Unlock()
			if out.Decision.Action == conversation.Resume && out.Decision.ResumeFrom != 0 {
				t.Errorf("resume from %d, want 0", out.Decision.ResumeFrom)
			}
		})
	}
	wg.Wait()
	if actions[conversation.Start] != 1 || actions[conversation.Resume] != n-1 {
		t.Errorf("decisions = %v, want 1 start and %d resume", actions, n-1)
	}
	if events := e.events("c"); len(events) != 1 {
		t.Errorf("log has %d events, want 1", len(events))
	}
}

// testConcurrentLifecycles drives 64 goroutines through message lifecycles
// at once, eight to a conversation: every write appends, each
// conversation's seqs are contiguous, the figures count every event, and
// the writes are group-committed (fewer commits than requests).
func testConcurrentLifecycles(t *testing.T, f Factory) {
	e := open(t, f)
	const writers, messages = 64, 10
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			conv := fmt.Sprintf("conv-%d", w%8) // eight writers share each conversation
			for i := range messages {
				for _, c := range Lifecycle(conv, fmt.Sprintf("w%d-m%d", w, i), 1) {
					out, err := e.write(c)
					if err != nil || !out.Append {
						t.Errorf("Write(%+v) = %+v, %v; want an append", c, out, err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	for c := range 8 {
		conv := fmt.Sprintf("conv-%d", c)
		events := e.events(conv)
		for i, ev := range events {
			if ev.Seq != int64(i) {
				t.Fatalf("%s: event %d has seq %d; want seqs contiguous from 0", conv, i, ev.Seq)
			}
		}
		if sum, err := e.h.Conversation(e.ctx, conv); err != nil || sum.Next != int64(len(events)) || sum.Counts.Finished != 8*messages {
			t.Errorf("Conversation(%s) = %+v, %v; want next seq %d, %d finished", conv, sum, err, len(events), 8*messages)
		}
	}
	st := e.stats()
	if want := int64(writers * messages * 4); st.Events != want || st.Appended != want || st.Messages != writers*messages || st.Conversations != 8 {
		t.Errorf("Stats events = %d, appended = %d, messages = %d, conversations = %d; want %d, %d, %d, 8", st.Events, st.Appended, st.Messages, st.Conversations, want, want, writers*messages)
	}
	if st.Commits >= st.Requests {
		t.Errorf("Stats: %d commits for %d requests; want batches of more than one request", st.Commits, st.Requests)
	}
	t.Logf("%d requests in %d commits (largest batch %d)", st.Requests, st.Commits, st.MaxBatch)
}

// testWriteAsync: the callback gets its outcome once; a write refused
// before it is queued (an invalid command, a closed store) is answered on
// the caller's goroutine, before WriteAsync returns.
func testWriteAsync(t *testing.T, f Factory) {
	e := open(t, f)
	type result struct {
		out conversation.Outcome
		err error
	}
	var answers []chan result
	write := func(c conversation.Command) result {
		ch := make(chan result, 2)
		answers = append(answers, ch)
		e.h.WriteAsync(e.ctx, c, func(o conversation.Outcome, err error) { ch <- result{o, err} })
		select {
		case r := <-ch:
			return r
		case <-time.After(replyWithin):
			t.Fatalf("%v not answered within %v", c.Op, replyWithin)
			panic("unreachable")
		}
	}
	if r := write(Cmd(conversation.OpReceive, "m")); r.err != nil || r.out.Decision.Action != conversation.Start || r.out.Seq != 0 {
		t.Errorf("receive = %+v, want start at seq 0", r)
	}
	if r := write(Cmd(conversation.OpStart, "unknown")); !errors.Is(r.err, conversation.ErrUnknownMessage) {
		t.Errorf("start of an unknown message = %+v, want ErrUnknownMessage", r)
	}
	if r := write(Cmd(conversation.OpStart, "m")); r.err != nil || r.out.Seq != 1 {
		t.Errorf("start = %+v, want seq 1", r)
	}
	for i, ch := range answers {
		if len(ch) != 0 {
			t.Errorf("write %d answered twice: then %+v", i, <-ch)
		}
	}
	refused := func(c conversation.Command, check func(error) bool) {
		t.Helper()
		var got error
		called := 0
		e.h.WriteAsync(e.ctx, c, func(_ conversation.Outcome, err error) { got = err; called++ })
		if called != 1 || !check(got) {
			t.Errorf("WriteAsync(%+v) returned having answered %d times, last with %v; want one refusal at once", c, called, got)
		}
	}
	var fe *conversation.FieldError
	refused(Cmd(conversation.OpReceive, ""), func(err error) bool { return errors.As(err, &fe) && fe.Field == "message_id" })
	refused(expect(Cmd(conversation.OpStart, "m"), -5), func(err error) bool { return errors.As(err, &fe) && fe.Field == "expected_seq" })
	if err := e.h.Close(); err != nil {
		t.Fatal(err)
	}
	refused(Cmd(conversation.OpReceive, "late"), func(err error) bool { return errors.Is(err, conversation.ErrClosed) })
}
