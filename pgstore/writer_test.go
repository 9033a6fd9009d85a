package pgstore

import (
	"context"
	"errors"
	"testing"

	"liminald/conversation"
)

// TestStore_Write runs the write rules of SPEC §2 through the store, on
// one database: each case in a conversation of its own.
func TestStore_Write(t *testing.T) {
	db := newTestDB(t)
	s := mustOpen(t, db, Options{})
	receive := cmd(conversation.OpReceive, "m")
	start := cmd(conversation.OpStart, "m")
	finish := cmd(conversation.OpFinish, "m")
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
		{"ReceiveResumesAfterHighestStep", []conversation.Command{receive, start, step("m", 0, "a"), step("m", 5, "b"), step("m", 2, "c")}, receive, want{action: conversation.Resume, resume: 6}},
		{"ReceiveFinishedSkips", []conversation.Command{receive, start, finish}, receive, want{action: conversation.Skip}},
		{"ExpectedSeqMatches", []conversation.Command{receive}, expect(start, 1), want{seq: 1, append: true}},
		{"ExpectedSeqTooHigh", []conversation.Command{receive}, expect(start, 5), want{err: &conversation.SequenceConflictError{Expected: 5, Actual: 1}}},
		{"ExpectedSeqLowerOtherEvent", []conversation.Command{receive, start}, expect(finish, 1), want{err: &conversation.SequenceConflictError{Expected: 1, Actual: 2}}},
		{"ExpectedSeqRetryOfLandedWrite", []conversation.Command{receive, start, step("m", 0, "out")}, expect(step("m", 0, "out"), 2), want{seq: 2, duplicate: true}},
		{"ExpectedSeqRetryOtherOutput", []conversation.Command{receive, start, step("m", 0, "out")}, expect(step("m", 0, "other"), 2), want{err: &conversation.SequenceConflictError{Expected: 2, Actual: 3}}},
		{"ExpectedSeqRetryOfReceive", []conversation.Command{receive}, expect(receive, 0), want{seq: 0, duplicate: true, action: conversation.Start}},
		{"SequenceConflictBeforeUnknownMessage", nil, expect(cmd(conversation.OpStart, "x"), 3), want{err: &conversation.SequenceConflictError{Expected: 3, Actual: 0}}},
		{"StartUnknownMessage", nil, cmd(conversation.OpStart, "x"), want{err: conversation.ErrUnknownMessage}},
		{"StepUnknownMessage", []conversation.Command{receive}, step("x", 0, ""), want{err: conversation.ErrUnknownMessage}},
		{"FinishAgainIsDuplicate", []conversation.Command{receive, start, finish}, finish, want{seq: 2, duplicate: true}},
		{"StartAfterFinish", []conversation.Command{receive, start, finish}, start, want{err: conversation.ErrAlreadyFinished}},
		{"StepAfterFinish", []conversation.Command{receive, start, finish}, step("m", 0, ""), want{err: conversation.ErrAlreadyFinished}},
		{"StartWhileInProgressIsDuplicate", []conversation.Command{receive, start, step("m", 0, "a")}, start, want{seq: 1, duplicate: true}},
		{"StepSameOutputIsDuplicate", []conversation.Command{receive, start, step("m", 0, "a"), step("m", 1, "b")}, step("m", 0, "a"), want{seq: 2, duplicate: true}},
		{"StepEmptyOutputIsDuplicate", []conversation.Command{receive, start, step("m", 0, "")}, step("m", 0, ""), want{seq: 2, duplicate: true}},
		{"StepOtherOutputConflicts", []conversation.Command{receive, start, step("m", 0, "a")}, step("m", 0, "b"), want{err: conversation.ErrStepConflict}},
		{"FailSameTextIsDuplicate", []conversation.Command{receive, start, fail("m", "boom")}, fail("m", "boom"), want{seq: 2, duplicate: true}},
		{"FailTextWithNUL", []conversation.Command{receive, start}, fail("m", "a\x00b"), want{seq: 2, append: true}},
		{"FailOtherTextAppends", []conversation.Command{receive, start, fail("m", "boom")}, fail("m", "bang"), want{seq: 3, append: true}},
		{"StartAfterErrorIsRetry", []conversation.Command{receive, start, fail("m", "boom")}, start, want{seq: 3, append: true}},
		{"FinishWithoutStart", []conversation.Command{receive}, finish, want{seq: 1, append: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := func(c conversation.Command) conversation.Command { c.Conversation = tt.name; return c }
			for _, c := range tt.setup {
				mustWrite(t, s, in(c))
			}
			c := in(tt.cmd)
			before := mustEvents(t, s, tt.name)
			got, err := s.Write(context.Background(), c)
			after := mustEvents(t, s, tt.name)
			if tt.want.err != nil {
				var sc *conversation.SequenceConflictError
				if want, ok := tt.want.err.(*conversation.SequenceConflictError); ok {
					if !errors.As(err, &sc) || *sc != *want {
						t.Fatalf("Write(%+v) error = %v, want %v", c, err, want)
					}
				} else if !errors.Is(err, tt.want.err) {
					t.Fatalf("Write(%+v) error = %v, want %v", c, err, tt.want.err)
				}
				if len(after) != len(before) {
					t.Errorf("rejected Write appended %d events", len(after)-len(before))
				}
				return
			}
			if err != nil {
				t.Fatalf("Write(%+v) error = %v", c, err)
			}
			if got.Append != tt.want.append || got.Duplicate != tt.want.duplicate || got.Decision.Action != tt.want.action || got.Decision.ResumeFrom != tt.want.resume {
				t.Errorf("Write(%+v) = %+v, want %+v", c, got, tt.want)
			}
			if (got.Append || got.Duplicate) && got.Seq != tt.want.seq {
				t.Errorf("Write(%+v) seq = %d, want %d", c, got.Seq, tt.want.seq)
			}
			wantLen := len(before)
			if tt.want.append {
				wantLen++
			}
			if len(after) != wantLen {
				t.Errorf("log has %d events after Write, want %d", len(after), wantLen)
			}
		})
	}
	// A conversation whose writes were all refused was not kept.
	if sum, err := s.Conversation(context.Background(), "StartUnknownMessage"); err != nil || sum.Next != 0 {
		t.Errorf("Conversation of refused writes = %+v, %v", sum, err)
	}
	convs, err := s.Conversations(context.Background(), "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range convs {
		if c.Next == 0 {
			t.Errorf("Conversations lists %q, which has no event", c.Name)
		}
	}
}
