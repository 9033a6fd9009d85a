package sqlitestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"liminald/conversation"
)

// retainedStore writes, on clock, a store in which retention compacted
// messages and dropped tombstones, with these conversations:
//
//	a: gone (dropped: the horizon), kept (a tombstone with a fingerprint
//	   and 2 attempts), open (in progress) and done (finished, not
//	   compacted); next seq 16
//	b: first and tail compacted around open (received): a tombstone at
//	   the end; next seq 7
//	c: live (received) and then y (dropped): its last seqs are a gap
//	   nothing but the header keeps; next seq 4
//	d: z (dropped): no event and no message left; next seq 3
//	e: plain (in progress), untouched by retention: no header
//
// Returns the store and the horizon of a, c and d.
func retainedStore(t *testing.T, path string, clock *testClock) (*Store, conversation.Horizon) {
	t.Helper()
	s := mustOpenPath(t, path, Options{Now: clock.Now, manualCompaction: true})
	w := func(conv, m string, op conversation.Op, set ...func(*conversation.Command)) {
		t.Helper()
		c := conversation.Command{Op: op, Conversation: conv, MessageID: m, ExpectedSeq: conversation.NoExpectedSeq}
		for _, f := range set {
			f(&c)
		}
		mustWrite(t, s, c)
	}
	fingerprint := func(fp string) func(*conversation.Command) {
		return func(c *conversation.Command) { c.Fingerprint = fp }
	}
	stepOut := func(i uint32) func(*conversation.Command) {
		return func(c *conversation.Command) { c.StepIndex, c.Output = i, []byte(fmt.Sprint("out ", i)) }
	}
	failed := func(c *conversation.Command) { c.Error = "it broke" }

	horizon := conversation.Horizon{Before: clock.ms.Load(), Set: true}
	w("a", "gone", conversation.OpReceive, fingerprint("fp-gone"))
	w("a", "gone", conversation.OpStart)
	w("a", "gone", conversation.OpStep, stepOut(0))
	w("a", "gone", conversation.OpFinish) // a 0-3
	w("c", "live", conversation.OpReceive)
	mustLifecycle(t, s, "c", "y", 0) // c 1-3
	mustLifecycle(t, s, "d", "z", 0) // d 0-2
	w("e", "plain", conversation.OpReceive)
	w("e", "plain", conversation.OpStart) // e 0-1

	clock.advance(30 * time.Minute)
	w("a", "kept", conversation.OpReceive, fingerprint("fp-kept"))
	w("a", "kept", conversation.OpStart)
	w("a", "kept", conversation.OpFail, failed)
	w("a", "kept", conversation.OpStart)
	w("a", "kept", conversation.OpStep, stepOut(0))
	w("a", "kept", conversation.OpFinish) // a 4-9
	mustLifecycle(t, s, "b", "first", 0)  // b 0-2
	w("b", "open", conversation.OpReceive)
	mustLifecycle(t, s, "b", "tail", 0) // b 4-6

	clock.advance(30 * time.Minute)
	w("a", "open", conversation.OpReceive)
	w("a", "open", conversation.OpStart)
	w("a", "open", conversation.OpStep, stepOut(0)) // a 10-12
	mustLifecycle(t, s, "a", "done", 0)             // a 13-15

	// Finished more than 10 minutes ago: all but done. Tombstones of
	// messages finished more than 45 minutes ago: those of the first
	// half hour.
	clock.advance(time.Minute)
	s.SetRetention(Retention{Finished: 10 * time.Minute, Tombstones: 45 * time.Minute})
	if r := mustCompact(t, s); r.Compacted != 6 || r.Dropped != 3 {
		t.Fatalf("Compact = %+v, want 6 messages compacted and 3 tombstones dropped", r)
	}
	s.SetRetention(Retention{})
	return s, horizon
}

// withoutPos removes the pos of every event line: an import gives it anew.
var withoutPos = regexp.MustCompile(`,"pos":[0-9]+`)

func mustExport(t *testing.T, path string) []byte {
	t.Helper()
	var b bytes.Buffer
	if _, err := Export(context.Background(), path, &b, nil); err != nil {
		t.Fatalf("Export(%s): %v", path, err)
	}
	return b.Bytes()
}

// TestStore_ExportImportRetention round-trips a store that compacted
// messages and dropped tombstones through Export and Import, and checks
// that the copy keeps every decision (SPEC §8): the export carries a
// header for each conversation retention touched and its tombstones, and
// the imported store decides, summarizes, counts and appends as the
// original does.
func TestStore_ExportImportRetention(t *testing.T) {
	ctx := context.Background()
	clock := newTestClock()
	srcPath := filepath.Join(t.TempDir(), "src.db")
	src, horizon := retainedStore(t, srcPath, clock)

	exported := mustExport(t, srcPath)
	if again := mustExport(t, srcPath); !bytes.Equal(exported, again) {
		t.Fatalf("two exports of one database differ:\n%s\n%s", exported, again)
	}
	lines := strings.Split(strings.TrimSuffix(string(exported), "\n"), "\n")
	h := horizon.Before
	wantHeaders := []string{
		fmt.Sprintf(`{"conversation":"a","next_seq":16,"compacted":2,"forgotten_before":%d}`, h),
		`{"conversation":"b","next_seq":7,"compacted":2,"forgotten_before":null}`,
		fmt.Sprintf(`{"conversation":"c","next_seq":4,"compacted":1,"forgotten_before":%d}`, h),
		fmt.Sprintf(`{"conversation":"d","next_seq":3,"compacted":1,"forgotten_before":%d}`, h),
	}
	keptAt, firstAt := h+30*60_000, h+30*60_000
	wantTombstones := []string{
		fmt.Sprintf(`{"conversation":"a","tombstone":{"message_id":"kept","finished_at":%d,"seq":9,"attempts":2,"fingerprint":"fp-kept"}}`, keptAt),
		fmt.Sprintf(`{"conversation":"b","tombstone":{"message_id":"first","finished_at":%d,"seq":2,"attempts":1}}`, firstAt),
		fmt.Sprintf(`{"conversation":"b","tombstone":{"message_id":"tail","finished_at":%d,"seq":6,"attempts":1}}`, firstAt),
	}
	const events = 6 + 1 + 1 + 0 + 2 // a, b, c, d, e
	if len(lines) != len(wantHeaders)+events+len(wantTombstones) {
		t.Fatalf("export has %d lines, want %d headers, %d events and %d tombstones:\n%s", len(lines), len(wantHeaders), events, len(wantTombstones), exported)
	}
	if got := lines[:len(wantHeaders)]; !reflect.DeepEqual(got, wantHeaders) {
		t.Errorf("export's headers:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantHeaders, "\n"))
	}
	if got := lines[len(lines)-len(wantTombstones):]; !reflect.DeepEqual(got, wantTombstones) {
		t.Errorf("export's tombstones:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantTombstones, "\n"))
	}

	dstPath := filepath.Join(t.TempDir(), "dst.db")
	dst := mustOpenPath(t, dstPath, Options{Now: clock.Now, manualCompaction: true})
	if n, err := dst.Import(ctx, bytes.NewReader(exported), nil); err != nil || n != events {
		t.Fatalf("Import = %d, %v; want %d events", n, err, events)
	}
	for _, p := range []string{srcPath, dstPath} {
		if r := mustCheck(t, p); r.Tombstones != 3 || r.Events != events || r.Conversations != 5 {
			t.Errorf("Check(%s) = %+v, want 3 tombstones, %d events, 5 conversations", filepath.Base(p), r, events)
		}
	}
	if got := mustExport(t, dstPath); !bytes.Equal(withoutPos.ReplaceAll(got, nil), withoutPos.ReplaceAll(exported, nil)) {
		t.Errorf("the import exports as\n%s\nwant, but for pos,\n%s", got, exported)
	}
	sameStores(t, src, dst)

	sent := func(ms int64) conversation.Delivery { return conversation.Delivery{SentAt: ms, HasSentAt: true} }
	for _, tc := range []struct {
		conv, id string
		d        conversation.Delivery
		want     conversation.Decision
	}{
		{"a", "gone", sent(h), conversation.Decision{Action: conversation.Forgotten, Rule: conversation.RuleForgotten, Horizon: horizon}},
		{"a", "gone", conversation.Delivery{}, conversation.Decision{Action: conversation.Start, Rule: conversation.RuleNeverSeen, Horizon: horizon}},
		{"a", "new", sent(h + 1), conversation.Decision{Action: conversation.Start, Rule: conversation.RuleNeverSeen, Horizon: horizon}},
		{"a", "kept", sent(h), conversation.Decision{Action: conversation.Skip, Rule: conversation.RuleCompacted, Compacted: true}},
		{"a", "kept", conversation.Delivery{Fingerprint: "fp-kept"}, conversation.Decision{Action: conversation.Skip, Rule: conversation.RuleCompacted, Compacted: true}},
		{"a", "open", conversation.Delivery{}, conversation.Decision{Action: conversation.Resume, Rule: conversation.RuleInProgress, ResumeFrom: 1}},
		{"a", "done", conversation.Delivery{}, conversation.Decision{Action: conversation.Skip, Rule: conversation.RuleFinished}},
		{"b", "first", conversation.Delivery{}, conversation.Decision{Action: conversation.Skip, Rule: conversation.RuleCompacted, Compacted: true}},
		{"b", "tail", conversation.Delivery{}, conversation.Decision{Action: conversation.Skip, Rule: conversation.RuleCompacted, Compacted: true}},
		{"b", "open", conversation.Delivery{}, conversation.Decision{Action: conversation.Resume, Rule: conversation.RuleReceived}},
		{"b", "new", sent(0), conversation.Decision{Action: conversation.Start, Rule: conversation.RuleNeverSeen}},
		{"c", "y", sent(h), conversation.Decision{Action: conversation.Forgotten, Rule: conversation.RuleForgotten, Horizon: horizon}},
		{"c", "live", sent(h), conversation.Decision{Action: conversation.Resume, Rule: conversation.RuleReceived}},
		{"d", "z", sent(h - 1), conversation.Decision{Action: conversation.Forgotten, Rule: conversation.RuleForgotten, Horizon: horizon}},
		{"e", "plain", conversation.Delivery{}, conversation.Decision{Action: conversation.Resume, Rule: conversation.RuleInProgress}},
		{"e", "new", sent(h), conversation.Decision{Action: conversation.Start, Rule: conversation.RuleNeverSeen}},
	} {
		for _, s := range []*Store{src, dst} {
			name := "src"
			if s == dst {
				name = "dst"
			}
			if got, err := s.Decide(ctx, tc.conv, tc.id, tc.d); err != nil || got != tc.want {
				t.Errorf("%s: Decide(%s/%s, %+v) = %+v, %v; want %+v", name, tc.conv, tc.id, tc.d, got, err, tc.want)
			}
		}
	}
	// The tombstone keeps the fingerprint it is checked against.
	var mismatch *conversation.FingerprintMismatchError
	if _, err := dst.Decide(ctx, "a", "kept", conversation.Delivery{Fingerprint: "other"}); !errors.As(err, &mismatch) || mismatch.Stored != "fp-kept" {
		t.Errorf("dst: Decide(a/kept) with another fingerprint: %v, want a mismatch with fp-kept", err)
	}

	// A second import of the same file changes nothing.
	if n, err := dst.Import(ctx, bytes.NewReader(exported), nil); err != nil || n != 0 {
		t.Fatalf("second Import = %d, %v; want 0 events appended", n, err)
	}
	if got := mustExport(t, dstPath); !bytes.Equal(withoutPos.ReplaceAll(got, nil), withoutPos.ReplaceAll(exported, nil)) {
		t.Errorf("after a second import, the import exports as\n%s\nwant, but for pos,\n%s", got, exported)
	}
	sameStores(t, src, dst)

	// A new message lands at the same seq in both: seqs are never reused,
	// not even those of compacted messages at the end of c and d.
	for conv, want := range map[string]int64{"a": 16, "b": 7, "c": 4, "d": 3, "e": 2} {
		c := conversation.Command{Op: conversation.OpReceive, Conversation: conv, MessageID: "after", ExpectedSeq: conversation.NoExpectedSeq}
		if a, b := mustWrite(t, src, c), mustWrite(t, dst, c); a.Seq != want || b.Seq != want {
			t.Errorf("receive in %s: at seq %d in the original, %d in the import; want %d", conv, a.Seq, b.Seq, want)
		}
	}
	mustCheck(t, srcPath)
	mustCheck(t, dstPath)
}

// sameStores fails t unless a and b hold the same conversations,
// tombstones and events (but for pos), and the same totals.
func sameStores(t *testing.T, a, b *Store) {
	t.Helper()
	ctx := context.Background()
	ca, err := a.Conversations(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	cb, err := b.Conversations(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ca, cb) {
		t.Errorf("conversations differ:\n got %+v\nwant %+v", cb, ca)
	}
	for _, c := range ca {
		ea, eb := mustEvents(t, a, c.Name), mustEvents(t, b, c.Name)
		for i := range ea {
			ea[i].Pos = 0
		}
		for i := range eb {
			eb[i].Pos = 0
		}
		if !reflect.DeepEqual(ea, eb) {
			t.Errorf("events of %s differ:\n got %+v\nwant %+v", c.Name, eb, ea)
		}
	}
	for _, m := range [][2]string{{"a", "kept"}, {"b", "first"}, {"b", "tail"}} {
		ma, err := a.Message(ctx, m[0], m[1])
		if err != nil {
			t.Fatal(err)
		}
		mb, err := b.Message(ctx, m[0], m[1])
		if err != nil || mb == nil || !mb.Compacted || *mb != *ma {
			t.Errorf("tombstone %s/%s: %+v, %v; want %+v", m[0], m[1], mb, err, ma)
		}
	}
	sa, err := a.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := b.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if sa.Conversations != sb.Conversations || sa.Messages != sb.Messages || sa.Events != sb.Events ||
		sa.Tombstones != sb.Tombstones || sa.Horizon != sb.Horizon || sb.Tombstones != 3 {
		t.Errorf("Stats: %+v, want as %+v, 3 tombstones", sb, sa)
	}
}

// TestStore_ImportRefusesRetention: Import refuses, naming the line, what
// would break the log: a tombstone where an event is stored, a tombstone
// of a message the log holds or of a conversation no header came for, a
// tombstone unlike the one stored, a header outside its limits, a line of
// two kinds, and a gap in a conversation no header says compacted
// messages.
func TestStore_ImportRefusesRetention(t *testing.T) {
	const (
		header   = `{"conversation":"c","next_seq":9,"compacted":1,"forgotten_before":null}`
		received = `{"conversation":"c","seq":0,"ts":1,"type":"message_received","message_id":"m","received_at":1}`
	)
	tomb := func(id string, seq, attempts int) string {
		return fmt.Sprintf(`{"conversation":"c","tombstone":{"message_id":%q,"finished_at":5,"seq":%d,"attempts":%d}}`, id, seq, attempts)
	}
	tests := []struct {
		name  string
		lines []string
		line  int
		want  string // in the error
	}{
		{"TombstoneOnEvent", []string{header, received, tomb("t", 0, 1)}, 3, "where an event"},
		{"TombstoneOfLiveMessage", []string{header, received, tomb("m", 4, 1)}, 3, "already received"},
		{"TombstoneWithoutHeader", []string{received, tomb("t", 4, 1)}, 2, "no header"},
		{"TombstoneUnlikeStored", []string{header, tomb("t", 4, 1), tomb("t", 4, 2)}, 3, "already finished"},
		{"TombstoneMissingSeq", []string{header, `{"conversation":"c","tombstone":{"message_id":"t","finished_at":5,"attempts":1}}`}, 2, "tombstone.seq is required"},
		{"HeaderNegative", []string{`{"conversation":"c","next_seq":-1,"compacted":1,"forgotten_before":null}`}, 1, "next_seq must not be negative"},
		{"HeaderMissingCompacted", []string{`{"conversation":"c","next_seq":1}`}, 1, "compacted is required"},
		{"TwoKinds", []string{`{"conversation":"c","next_seq":1,"compacted":1,"seq":0,"ts":1,"type":"message_received","message_id":"m","received_at":1}`}, 1, "not several"},
		{"GapWithoutHeader", []string{received,
			`{"conversation":"c","seq":2,"ts":1,"type":"message_received","message_id":"n","received_at":1}`}, 2, "expected seq 2"},
		{"GapBesideHeader", []string{`{"conversation":"other","next_seq":9,"compacted":1,"forgotten_before":null}`, received,
			`{"conversation":"c","seq":2,"ts":1,"type":"message_received","message_id":"n","received_at":1}`}, 3, "expected seq 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenStore(t, Options{})
			_, err := s.Import(context.Background(), strings.NewReader(strings.Join(tt.lines, "\n")+"\n"), nil)
			var ie *ImportError
			if !errors.As(err, &ie) || ie.Line != tt.line || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Import error = %v, want an ImportError at line %d saying %q", err, tt.line, tt.want)
			}
		})
	}
}

// TestStore_ImportKeepsLinesBeforeRefusal: the lines before a refused one
// stay, whether the writer refuses it or it cannot be read.
func TestStore_ImportKeepsLinesBeforeRefusal(t *testing.T) {
	ctx := context.Background()
	for _, bad := range []string{
		`{"conversation":"c","tombstone":{"message_id":"t","finished_at":5,"seq":0,"attempts":1}}`,
		`{nope`,
	} {
		s := mustOpenStore(t, Options{})
		input := `{"conversation":"c","next_seq":9,"compacted":1,"forgotten_before":7}
{"conversation":"c","seq":0,"ts":1,"type":"message_received","message_id":"m","received_at":1}
` + bad + "\n"
		n, err := s.Import(ctx, strings.NewReader(input), nil)
		var ie *ImportError
		if !errors.As(err, &ie) || ie.Line != 3 || n != 1 {
			t.Fatalf("Import of %s = %d, %v; want 1 event, then refused at line 3", bad, n, err)
		}
		sum, err := s.Conversation(ctx, "c")
		if want := (conversation.Horizon{Before: 7, Set: true}); err != nil || sum.Next != 1 || sum.Compacted != 1 || sum.Horizon != want {
			t.Errorf("after a refused import, Conversation(c) = %+v, %v; want next 1, compacted 1, the horizon", sum, err)
		}
	}
}
