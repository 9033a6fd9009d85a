package ipc

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkServer_Decide measures sequential decide round trips of one
// client over the socket, and reports their median in µs.
func BenchmarkServer_Decide(b *testing.B) {
	ts := startServer(b, Config{})
	c := mustDial(b, ts)
	ctx := context.Background()
	if _, err := c.Receive(ctx, "bench", "m"); err != nil {
		b.Fatal(err)
	}
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := c.Decide(ctx, "bench", "m"); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Nanoseconds())/1000, "p50-µs")
}

// BenchmarkServer_Lifecycle runs message lifecycles (receive, start, three
// steps, finish: six events) from 64 clients at once, each on its own
// connection, and reports the events appended per second.
func BenchmarkServer_Lifecycle(b *testing.B) {
	ts := startServer(b, Config{})
	const clients = 64
	cs := make([]*Client, clients)
	for i := range cs {
		cs[i] = mustDial(b, ts)
	}
	ctx := context.Background()
	output := []byte("a step's output, about as long as a small one")
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i, c := range cs {
		wg.Go(func() {
			conv := fmt.Sprintf("conv%d", i%16)
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				msg := fmt.Sprintf("m%d", n)
				if _, err := c.Receive(ctx, conv, msg); err != nil {
					b.Error(err)
					return
				}
				if _, err := c.Start(ctx, conv, msg); err != nil {
					b.Error(err)
					return
				}
				for s := range 3 {
					if _, err := c.Step(ctx, conv, msg, uint32(s), output); err != nil {
						b.Error(err)
						return
					}
				}
				if _, err := c.Finish(ctx, conv, msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(6*b.N)/elapsed.Seconds(), "events/s")
}
