package ipc

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// BenchmarkServer_Redelivery measures sequential round trips of one client
// answering redeliveries over the socket, decide (read-only) and receive
// (through the writer, appending nothing), for messages in progress: with
// protocol 1 requests, and with protocol 2's (messages started with a
// worker and a lease, deliveries carrying a fingerprint). It reports the
// median in µs. Compare protocol2 with protocol1 within one run.
func BenchmarkServer_Redelivery(b *testing.B) {
	const messages = 1000
	for _, proto := range []struct {
		name           string
		receive, start string // the setup of message %d
		deliver        string // the redelivery's extra fields
	}{
		{"protocol1", `{"op":"receive","conversation":"bench","message_id":"m%d"}`,
			`{"op":"start","conversation":"bench","message_id":"m%d"}`, ``},
		{"protocol2", `{"op":"receive","conversation":"bench","message_id":"m%d","fingerprint":"sha256:%[1]d"}`,
			`{"op":"start","conversation":"bench","message_id":"m%d","worker":"w","lease_ms":86400000}`, `,"fingerprint":"sha256:%[2]d"`},
	} {
		for _, op := range []string{"decide", "receive"} {
			b.Run(proto.name+"/"+op, func(b *testing.B) {
				ts := startServer(b, Config{})
				c := dialRaw(b, ts.path)
				for i := range messages {
					c.roundTrip(fmt.Sprintf(proto.receive, i))
					c.roundTrip(fmt.Sprintf(proto.start, i))
				}
				reqs := make([]string, messages)
				for i := range reqs {
					reqs[i] = fmt.Sprintf(`{"op":%[1]q,"conversation":"bench","message_id":"m%[2]d"`+proto.deliver+"}\n", op, i)
				}
				took := make([]time.Duration, 0, b.N)
				b.ResetTimer()
				for i := range b.N {
					start := time.Now()
					c.send(reqs[i%messages])
					if line := c.line(); !strings.HasPrefix(line, `{"id":null,"ok":true`) {
						b.Fatalf("%s: %s", reqs[i%messages], line)
					}
					took = append(took, time.Since(start))
				}
				b.StopTimer()
				slices.Sort(took)
				b.ReportMetric(float64(took[len(took)/2].Nanoseconds())/1000, "p50-µs")
			})
		}
	}
}
