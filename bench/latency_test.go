package main

import (
	"slices"
	"testing"
	"time"
)

func TestLatencies_Percentile(t *testing.T) {
	hundred := make(latencies, 100)
	for i := range hundred {
		hundred[len(hundred)-1-i] = time.Duration(i+1) * time.Millisecond // 100ms down to 1ms
	}
	hundred.sort()
	thousand := make(latencies, 1000)
	for i := range thousand {
		thousand[i] = time.Duration(i+1) * time.Microsecond
	}
	tests := []struct {
		name string
		l    latencies
		q    float64
		want time.Duration
	}{
		{"Empty", nil, 0.99, 0},
		{"One", latencies{7}, 0.5, 7},
		{"One p999", latencies{7}, 0.999, 7},
		{"Median of 100", hundred, 0.50, 50 * time.Millisecond},
		{"p99 of 100", hundred, 0.99, 99 * time.Millisecond},
		{"p999 of 100 is the max", hundred, 0.999, 100 * time.Millisecond},
		{"p100 of 100", hundred, 1, 100 * time.Millisecond},
		{"p999 of 1000", thousand, 0.999, 999 * time.Microsecond},
		{"p99 of 1000", thousand, 0.99, 990 * time.Microsecond},
		{"Tiny quantile is the min", thousand, 0.0001, time.Microsecond},
		{"Median of 3", latencies{1, 2, 3}, 0.5, 2},
		{"Median of 4", latencies{1, 2, 3, 4}, 0.5, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.percentile(tc.q); got != tc.want {
				t.Errorf("percentile(%v) = %v, want %v", tc.q, got, tc.want)
			}
		})
	}
}

func TestMerge(t *testing.T) {
	r := merge([]clientResult{
		{Ops: 2, Events: 2, Latencies: []time.Duration{5, 1}},
		{Ops: 1, Events: 0, Latencies: []time.Duration{3}},
	})
	if r.Ops != 3 || r.Events != 2 {
		t.Errorf("merge: ops %d, events %d, want 3, 2", r.Ops, r.Events)
	}
	if want := (latencies{1, 3, 5}); !slices.Equal(r.Latencies, want) {
		t.Errorf("merge: latencies %v, want %v", r.Latencies, want)
	}
}

func TestMedian(t *testing.T) {
	got := median([]Point{{OpsPerSec: 30, P99Ms: 3}, {OpsPerSec: 10, P99Ms: 1}, {OpsPerSec: 20, P99Ms: 2}})
	if got.OpsPerSec != 20 || got.P99Ms != 2 {
		t.Errorf("median = %+v, want the repetition with 20 ops/s", got)
	}
}
