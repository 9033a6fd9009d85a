package main

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"liminald/conversation"
)

// waitStat polls stats on d until its figure field (a top-level number)
// is want, for 20 seconds at most: the signal that a compaction pass did
// its work. Returns the last reply.
func waitStat(t *testing.T, d *daemonProc, field string, want int64) map[string]any {
	t.Helper()
	c := dialRaw(t, d.socket)
	deadline := time.Now().Add(20 * time.Second)
	for {
		line, m := c.do(`{"op":"stats"}`)
		if got, _ := jsonNumber(m[field]); got == want {
			return m
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats: %s is not %d after 20 s: %s\nstderr:\n%s", field, want, line, d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // the poll's pace; compaction runs every 500 ms at the most
	}
}

// horizonOf returns the forgotten_before of conversation conv, which the
// test expects to be set.
func horizonOf(t *testing.T, d *daemonProc, conv string) int64 {
	t.Helper()
	_, m := dialRaw(t, d.socket).do(fmt.Sprintf(`{"op":"state","conversation":%q}`, conv))
	h, ok := jsonNumber(m["forgotten_before"])
	if !ok {
		t.Fatalf("state %s: forgotten_before %v, want a time", conv, m["forgotten_before"])
	}
	return h
}

// TestCLI_Retention: under --retain-finished 1ms a finished message is
// compacted into a tombstone. receive says skip (compacted), state shows
// the tombstone and the conversation's count, messages marks it, explain
// says why, a finish retried at its seq is still a duplicate and the other
// writes answer as for a finished message, events shows the events left,
// stats counts it, and check proves the database.
func TestCLI_Retention(t *testing.T) {
	d := startDaemon(t, "--retain-finished", "1ms")
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "--fingerprint", "sha:1", "c", "m"}, want: []string{"start (message_received at seq 0)\n"}},
		{args: []string{"start", "c", "m"}, want: []string{"appended at seq 1, token 1"}},
		{args: []string{"step", "--output", "hi", "c", "m", "0"}, want: []string{"appended at seq 2"}},
		{args: []string{"finish", "c", "m"}, want: []string{"appended at seq 3"}},
		{args: []string{"receive", "c", "n"}, want: []string{"start (message_received at seq 4)\n"}},
	})
	waitStat(t, d, "tombstones", 1)
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "c", "m"}, want: []string{"skip (compacted)\n"}},
		{args: []string{"decide", "--json", "c", "m"}, want: []string{`{"id":null,"ok":true,"decision":"skip","compacted":true}` + "\n"}},
		{args: []string{"decide", "--fingerprint", "sha:2", "c", "m"}, wantCode: 1, wantErr: "liminald: fingerprint_mismatch: "},
		{args: []string{"state", "c", "m"}, want: []string{"status       finished\n" +
			"compacted    yes (a tombstone: its events, steps and token are gone)\n" +
			"attempts     1\n" +
			"quarantined  no\n" +
			`fingerprint  "sha:1"` + "\n"}},
		{args: []string{"state", "--json", "c", "m"}, want: []string{`"status":"finished","received_at":null,"last_completed_step":null,"steps":[]`, `"token":null`, `"compacted":true}`}},
		{args: []string{"state", "c"}, want: []string{"next_seq     5\n", "received     1\n", "finished     1\n", "total        2\n",
			"compacted    1\n", "forgotten    nothing\n"}},
		{args: []string{"messages", "c"}, want: []string{"\nm        finished (compacted)  1 ", "\nn        received              0 "}},
		{args: []string{"explain", "c", "m"}, want: []string{"decision  skip (compacted)\n", "rule      compacted\n",
			"reason    Its processing_finished was at seq 3, at ", "and its events were compacted since",
			"\nno events: they were compacted\n"}},
		{args: []string{"finish", "--expected-seq", "3", "c", "m"}, want: []string{"duplicate of seq 3 (nothing appended)\n"}},
		{args: []string{"finish", "c", "m"}, want: []string{"duplicate of seq 3 (nothing appended)\n"}},
		{args: []string{"step", "--output", "again", "c", "m", "1"}, wantCode: 1, wantErr: "liminald: already_finished: "},
		{args: []string{"start", "c", "m"}, wantCode: 1, wantErr: "liminald: already_finished: "},
		{args: []string{"stats"}, want: []string{"\ncompacted                1\n", "\ntombstones               1\n",
			"\ntombstones_dropped       0\n", "\nforgotten_before         none\n", "\ncompaction.passes        ", "\ncompaction.failed        0\n"}},
		{args: []string{"check"}, want: []string{"ok"}},
	})
	// The log keeps n's event alone, at its seq: m's seqs are a gap.
	stdout, stderr, _ := runCLI(t, d, "events", "c")
	if lines := strings.Split(strings.TrimSpace(stdout), "\n"); len(lines) != 1 || !strings.Contains(lines[0], " c #4 (pos 5) message_received    n ") {
		t.Errorf("events after the compaction of m:\n%s%s\nwant n's message_received alone, at seq 4", stdout, stderr)
	}
}

// TestCLI_Forgotten: under --retain-tombstones 1ms the tombstone goes too,
// and the conversation's forgotten_before moves to its finished_at. A
// delivery sent at or before it is forgotten, one without --sent-at starts
// with the horizon beside it, and state, stats, explain and the metrics
// show it.
func TestCLI_Forgotten(t *testing.T) {
	dir := t.TempDir()
	metricsSock := filepath.Join(dir, "metrics.sock")
	d := startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"),
		"--retain-finished", "1ms", "--retain-tombstones", "1ms", "--metrics", "unix:"+metricsSock)
	runSteps(t, d, []cliStep{
		{args: []string{"receive", "--sent-at", "1732671990000", "c", "m"}, want: []string{"start (message_received at seq 0)\n"}},
		{args: []string{"start", "c", "m"}, want: []string{"appended at seq 1, token 1"}},
		{args: []string{"finish", "c", "m"}, want: []string{"appended at seq 2"}},
	})
	waitStat(t, d, "tombstones_dropped", 1)
	h := horizonOf(t, d, "c")
	at := conversation.MillisTime(h)
	runSteps(t, d, []cliStep{
		{args: []string{"decide", "--sent-at", "1732671990000", "c", "m"}, want: []string{"forgotten (forgotten before " + at + ")\n"}},
		{args: []string{"receive", "--json", "--sent-at", fmt.Sprint(h), "c", "m"},
			want: []string{fmt.Sprintf(`{"id":null,"ok":true,"decision":"forgotten","forgotten_before":%d}`, h) + "\n"}},
		{args: []string{"explain", "--sent-at", "1", "c", "m"}, want: []string{"decision  forgotten (forgotten before " + at + ")\n",
			"rule      forgotten\n", "reason    No message_received event or tombstone names this message, and it was sent at or before " + at,
			"\nno events\n"}},
		{args: []string{"decide", "c", "m"}, want: []string{"start; the conversation forgot messages finished up to " + at + "\n"}},
		{args: []string{"receive", "--sent-at", fmt.Sprint(h + 1), "c", "m"},
			want: []string{"start (message_received at seq 3); the conversation forgot messages finished up to " + at + "\n"}},
		{args: []string{"state", "c"}, want: []string{"next_seq     4\n", "finished     0\n", "total        1\n",
			"compacted    1\n", "forgotten    before " + at + "\n"}},
		{args: []string{"state", "--json", "c"}, want: []string{fmt.Sprintf(`"compacted":1,"forgotten_before":%d}`, h)}},
		{args: []string{"stats"}, want: []string{"\ntombstones               0\n", "\ntombstones_dropped       1\n",
			"\nforgotten_before         " + at + "\n"}},
		{args: []string{"decide", "--sent-at", "-1", "c", "x"}, wantCode: 1, wantErr: "liminald: bad_request: sent_at must be an integer from 0"},
		{args: []string{"check"}, want: []string{"ok"}},
	})

	text := scrapeUnix(t, metricsSock)
	for _, tc := range []struct {
		metric string
		check  func(float64) bool
	}{
		{"liminald_tombstones", func(v float64) bool { return v == 0 }},
		{"liminald_forgotten_before_seconds", func(v float64) bool { return math.Abs(v-float64(h)/1000) < 0.001 }},
		{"liminald_compacted_total", func(v float64) bool { return v == 1 }},
		{"liminald_tombstones_dropped_total", func(v float64) bool { return v == 1 }},
		{"liminald_compaction_passes_total", func(v float64) bool { return v >= 1 }},
		{"liminald_compaction_seconds_total", func(v float64) bool { return v > 0 }},
	} {
		if v, ok := metricValue(t, text, tc.metric); ok && !tc.check(v) {
			t.Errorf("metric %s = %v (forgotten_before %d)", tc.metric, v, h)
		}
	}
}

// TestServe_RetentionReloads: retain_finished and retain_tombstones from
// the configuration file change live: a message finished under a
// retain_finished of an hour is compacted once a reload lowers it, and its
// tombstone dropped once a reload sets retain_tombstones.
func TestServe_RetentionReloads(t *testing.T) {
	d, config := startWithConfig(t, "retain_finished = \"1h\"\n")
	c := dialRaw(t, d.socket)
	c.doAll(
		`{"op":"receive","conversation":"c","message_id":"m"}`,
		`{"op":"start","conversation":"c","message_id":"m"}`,
		`{"op":"finish","conversation":"c","message_id":"m"}`,
	)
	if line, _ := c.do(`{"op":"decide","conversation":"c","message_id":"m"}`); line != `{"id":null,"ok":true,"decision":"skip"}` {
		t.Fatalf("decide under retain_finished 1h: %s, want skip, not compacted", line)
	}
	d.rewriteConfig(config, "retain_finished = \"1ms\"\n")
	waitStat(t, d, "tombstones", 1)
	if line, _ := c.do(`{"op":"decide","conversation":"c","message_id":"m"}`); line != `{"id":null,"ok":true,"decision":"skip","compacted":true}` {
		t.Errorf("decide after retain_finished was lowered to 1ms: %s, want skip, compacted", line)
	}
	d.rewriteConfig(config, "retain_finished = \"1ms\"\nretain_tombstones = \"1ms\"\n")
	waitStat(t, d, "tombstones_dropped", 1)
	h := horizonOf(t, d, "c")
	if line, _ := c.do(`{"op":"decide","conversation":"c","message_id":"m","sent_at":0}`); line != fmt.Sprintf(`{"id":null,"ok":true,"decision":"forgotten","forgotten_before":%d}`, h) {
		t.Errorf("decide after retain_tombstones was set to 1ms: %s, want forgotten before %d", line, h)
	}
	if log := d.stderr.String(); !strings.Contains(log, "retain_finished") || !strings.Contains(log, "retain_tombstones") {
		t.Errorf("the reloads do not name retain_finished and retain_tombstones in the log:\n%s", log)
	}
}
