package main

import (
	"context"
	"io"
	"testing"
)

// TestMeasureScale stores a few thousand events, then checks that the
// figures are there and that the restarted daemon counts them all (which
// measureScale itself checks, with a finished message skipped).
func TestMeasureScale(t *testing.T) {
	const events = 3000
	r, err := measureScale(context.Background(), buildLiminald(t), t.TempDir(), events, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if r.Events < events || r.Events > events+6*scaleClients {
		t.Errorf("%d events stored, want %d to %d (the lifecycles in flight finish)", r.Events, events, events+6*scaleClients)
	}
	if r.LoadSeconds <= 0 || r.RestartToReadySeconds <= 0 || r.DBBytes <= 0 {
		t.Errorf("load %v s, restart %v s, database %d bytes: want all positive", r.LoadSeconds, r.RestartToReadySeconds, r.DBBytes)
	}
	if r.RSSAfterBytes <= 0 || r.PeakRSSBytes < r.RSSAfterBytes {
		t.Errorf("RSS after %d, peak %d: want 0 < after <= peak", r.RSSAfterBytes, r.PeakRSSBytes)
	}
}
