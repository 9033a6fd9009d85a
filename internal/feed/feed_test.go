package feed

import (
	"testing"

	"liminald/conversation"
)

// TestFeed: a subscription gets the batches published after it was made,
// in order; one with no room lags and ends, without holding up the
// others; Close ends them all, and those made after it at once.
func TestFeed(t *testing.T) {
	var f Feed
	batch := func(pos int64) []conversation.Event { return []conversation.Event{{Pos: pos}} }
	f.Publish(batch(0)) // before any subscription: nobody gets it
	fast, slow := f.Subscribe(8), f.Subscribe(1)
	if f.Len() != 2 {
		t.Fatalf("Len = %d, want 2", f.Len())
	}
	for pos := int64(1); pos <= 3; pos++ {
		f.Publish(batch(pos))
	}
	for want := int64(1); want <= 3; want++ {
		if b := <-fast.Events(); b[0].Pos != want {
			t.Fatalf("fast got pos %d, want %d", b[0].Pos, want)
		}
	}
	if b, ok := <-slow.Events(); !ok || b[0].Pos != 1 {
		t.Fatalf("slow got %v, %v; want pos 1", b, ok)
	}
	if _, ok := <-slow.Events(); ok || !slow.Lagged() {
		t.Fatalf("slow is open or not lagged after it had no room")
	}
	if fast.Lagged() || f.Len() != 1 {
		t.Fatalf("fast lagged %v, Len %d", fast.Lagged(), f.Len())
	}
	fast.Close()
	fast.Close() // again: nothing happens
	if _, ok := <-fast.Events(); ok || fast.Lagged() {
		t.Fatal("a closed subscription is open, or lagged")
	}
	open := f.Subscribe(1)
	f.Close()
	if _, ok := <-open.Events(); ok {
		t.Fatal("a subscription is open after Close")
	}
	if _, ok := <-f.Subscribe(1).Events(); ok {
		t.Fatal("a subscription made after Close is open")
	}
}
