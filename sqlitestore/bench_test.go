package sqlitestore

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"liminald/conversation"
)

// BenchmarkStore_Append appends events from 1, 8 and 64 concurrent writers,
// each waiting for its write to commit before the next (sync=full): one
// event per request, so throughput comes from group commit.
func BenchmarkStore_Append(b *testing.B) {
	for _, writers := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					conv := fmt.Sprintf("conv-%d", w%8)
					for i := 0; next.Add(1) <= int64(b.N); i++ {
						c := conversation.Command{Op: conversation.OpReceive, Conversation: conv, MessageID: fmt.Sprintf("w%d-m%d", w, i), ExpectedSeq: -1}
						if _, err := s.Write(context.Background(), c); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			if st, err := s.Stats(context.Background()); err == nil && st.Commits > 0 {
				b.ReportMetric(float64(st.Requests)/float64(st.Commits), "requests/commit")
			}
		})
	}
}

// BenchmarkStore_Decide looks up redelivery decisions of 10,000 known
// messages: served from the writer's cache of committed states, and from
// the database (a cache of one message, cleared at every commit).
func BenchmarkStore_Decide(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache int
	}{{"cached", 0}, {"database", 1}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{Sync: SyncNormal, CacheSize: bc.cache})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			const messages = 10000
			var wg sync.WaitGroup
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < messages; i += 16 {
						for _, c := range lifecycle("conv", fmt.Sprintf("m%d", i))[:3] {
							if _, err := s.Write(context.Background(), c); err != nil {
								b.Error(err)
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			ids := make([]string, messages)
			for i := range ids {
				ids[i] = fmt.Sprintf("m%d", i)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d, err := s.Decide(context.Background(), "conv", ids[i%messages], conversation.Delivery{})
				if err != nil || d.Action != conversation.Resume {
					b.Fatalf("Decide = %+v, %v", d, err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	}
}

// BenchmarkStore_Lifecycle takes messages through receive, start, three
// steps with 100-byte outputs and finish from 64 concurrent writers, each on
// its own conversation, one request at a time (sync=full).
func BenchmarkStore_Lifecycle(b *testing.B) {
	s, err := Open(filepath.Join(b.TempDir(), "bench.db"), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const writers = 64
	output := make([]byte, 100)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conv := fmt.Sprintf("conv-%d", w)
			for i := 0; next.Add(6) <= int64(b.N)+5; i++ {
				m := fmt.Sprintf("m%d", i)
				for k, op := range []conversation.Op{conversation.OpReceive, conversation.OpStart, conversation.OpStep, conversation.OpStep, conversation.OpStep, conversation.OpFinish} {
					c := conversation.Command{Op: op, Conversation: conv, MessageID: m, ExpectedSeq: -1}
					if op == conversation.OpStep {
						c.Output = output
						c.StepIndex = uint32(k - 2)
					}
					if _, err := s.Write(context.Background(), c); err != nil {
						b.Error(err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	st, _ := s.Stats(context.Background())
	b.ReportMetric(float64(st.Appended)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(st.Requests)/float64(max(st.Commits, 1)), "requests/commit")
}
