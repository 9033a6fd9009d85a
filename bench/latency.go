package main

import (
	"math"
	"slices"
	"time"
)

// latencies are the durations of the ops of a point, merged from its
// clients.
type latencies []time.Duration

// sort sorts the samples in place; percentile needs them sorted.
func (l latencies) sort() { slices.Sort(l) }

// percentile returns the nearest-rank q-quantile (0 < q <= 1) of the
// sorted samples: the smallest sample that at least q of them do not
// exceed. It is 0 with no samples.
func (l latencies) percentile(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	// The epsilon keeps 0.99*100 at rank 99 despite rounding.
	i := int(math.Ceil(q*float64(len(l))-1e-9)) - 1
	return l[min(max(i, 0), len(l)-1)]
}

// ms is d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
