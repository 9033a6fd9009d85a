package compaction

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"liminald/conversation"
)

// TestSweep_Groups: candidates go to apply in groups that span at most
// Budget seqs (one wide candidate alone), page after page until a short
// page, and a page of which nothing changed ends the sweep.
func TestSweep_Groups(t *testing.T) {
	var pages [][]Candidate
	full := make([]Candidate, Rows)
	for i := range full {
		full[i] = Candidate{Conversation: "c", MessageID: string(rune('a' + i%26)), Width: 7}
	}
	pages = append(pages, full, []Candidate{{Width: Budget * 3}, {Width: 1}, {Width: 1}})
	var groups [][]int64
	page := func(_ context.Context, limit int) ([]Candidate, error) {
		if limit != Rows {
			t.Errorf("page limit %d, want %d", limit, Rows)
		}
		p := pages[0]
		pages = pages[1:]
		return p, nil
	}
	apply := func(_ context.Context, group []Candidate) (int64, error) {
		var widths []int64
		for _, c := range group {
			widths = append(widths, c.Width)
		}
		groups = append(groups, widths)
		return int64(len(group)), nil
	}
	done, err := Sweep(t.Context(), page, apply)
	if err != nil || done != Rows+3 {
		t.Fatalf("Sweep = %d, %v; want %d", done, err, Rows+3)
	}
	for i, g := range groups {
		span := int64(len(g) - 1) // the seqs between them
		for _, w := range g {
			span += w
		}
		if len(g) > 1 && span > Budget {
			t.Errorf("group %d spans %d seqs, over the budget of %d: %v", i, span, Budget, g)
		}
	}
	if last := groups[len(groups)-2:]; !slices.Equal(last[0], []int64{Budget * 3}) || !slices.Equal(last[1], []int64{1, 1}) {
		t.Errorf("the last page's groups: %v, want the wide one alone", last)
	}

	// Nothing changed of a full page: what is left waits for the next pass.
	calls := 0
	done, err = Sweep(t.Context(), func(context.Context, int) ([]Candidate, error) { calls++; return full, nil },
		func(context.Context, []Candidate) (int64, error) { return 0, nil })
	if err != nil || done != 0 || calls != 1 {
		t.Errorf("a page of which nothing changed: %d, %v after %d pages; want one page", done, err, calls)
	}
	boom := errors.New("boom")
	if _, err := Sweep(t.Context(), func(context.Context, int) ([]Candidate, error) { return full, nil },
		func(context.Context, []Candidate) (int64, error) { return 1, boom }); !errors.Is(err, boom) {
		t.Errorf("apply's error: %v", err)
	}
}

// TestApply: each candidate's request is answered; Apply counts those
// that changed something and returns the first error.
func TestApply(t *testing.T) {
	type req struct {
		c    Candidate
		then func(conversation.Outcome, error)
	}
	group := []Candidate{{MessageID: "a"}, {MessageID: "b"}, {MessageID: "c"}}
	enqueue := func(fail string) func(context.Context, []req) {
		return func(_ context.Context, reqs []req) {
			for _, r := range reqs {
				var err error
				if r.c.MessageID == fail {
					err = errors.New("refused " + fail)
				}
				go r.then(conversation.Outcome{Append: r.c.MessageID != "b"}, err)
			}
		}
	}
	request := func(c Candidate, then func(conversation.Outcome, error)) req { return req{c, then} }
	if n, err := Apply(t.Context(), group, request, enqueue("")); n != 2 || err != nil {
		t.Errorf("Apply = %d, %v; want 2 changed", n, err)
	}
	if _, err := Apply(t.Context(), group, request, enqueue("c")); err == nil || err.Error() != "refused c" {
		t.Errorf("Apply with a refusal = %v", err)
	}
}

// TestLoop: a pass runs at once when the retention is set to keep less
// than everything, and none while it keeps everything.
func TestLoop(t *testing.T) {
	var set Setting
	stop := make(chan struct{})
	passes := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Loop(stop, &set, func(context.Context) (Result, error) { passes <- struct{}{}; return Result{}, nil }, slog.New(slog.DiscardHandler))
	}()
	set.Set(conversation.Retention{})
	select {
	case <-passes:
		t.Fatal("a pass ran under a retention that keeps everything")
	case <-time.After(50 * time.Millisecond):
	}
	set.Set(conversation.Retention{Finished: time.Hour})
	select {
	case <-passes:
	case <-time.After(5 * time.Second):
		t.Fatal("no pass after the retention was set")
	}
	if got := set.Get(); got.Finished != time.Hour {
		t.Errorf("Get = %+v", got)
	}
	close(stop)
	<-done
}
