package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"liminald/conversation"
)

// writeLifecycles takes n messages of each of convs conversations through
// their lifecycle, the last message of each stopped after its first step,
// and one errored message per conversation.
func writeLifecycles(tb testing.TB, s *Store, convs, n int) {
	tb.Helper()
	for c := range convs {
		conv := fmt.Sprintf("conv-%d", c)
		for i := range n {
			cmds := lifecycle(conv, fmt.Sprintf("m%d", i))
			if i == n-1 {
				cmds = cmds[:3]
			}
			for _, cmd := range cmds {
				mustWrite(tb, s, cmd)
			}
		}
		mustWrite(tb, s, conversation.Command{Op: conversation.OpReceive, Conversation: conv, MessageID: "bad"})
		mustWrite(tb, s, conversation.Command{Op: conversation.OpFail, Conversation: conv, MessageID: "bad", Error: "it broke"})
	}
}

func TestStore_ExportImport(t *testing.T) {
	src := mustOpenStore(t, Options{})
	writeLifecycles(t, src, 3, 5)
	var exported bytes.Buffer
	n, err := Export(context.Background(), src.Path(), &exported, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Count(exported.String(), "\n"); int64(lines) != n || n != 3*5*5 {
		t.Fatalf("Export wrote %d events in %d lines", n, lines)
	}

	dst := mustOpenStore(t, Options{})
	got, err := dst.Import(context.Background(), bytes.NewReader(exported.Bytes()), nil)
	if err != nil || got != n {
		t.Fatalf("Import = %d, %v; want %d", got, err, n)
	}
	for c := range 3 {
		conv := fmt.Sprintf("conv-%d", c)
		a, b := mustEvents(t, src, conv), mustEvents(t, dst, conv)
		for i := range a {
			a[i].Pos, b[i].Pos = 0, 0 // pos is given anew
		}
		if !reflect.DeepEqual(a, b) {
			t.Errorf("conversation %s after import differs:\n got %+v\nwant %+v", conv, b, a)
		}
	}
	// Importing the same events again appends nothing: each is a retry of
	// the event stored at its seq.
	again, err := dst.Import(context.Background(), bytes.NewReader(exported.Bytes()), nil)
	if err != nil || again != 0 {
		t.Errorf("second Import = %d, %v; want 0 appended", again, err)
	}
}

func TestStore_ImportRefuses(t *testing.T) {
	tests := []struct {
		name, input string
		line        int
	}{
		{"NotJSON", "{nope\n", 1},
		{"MissingField", `{"conversation":"c","seq":0,"ts":1,"type":"message_received","message_id":"m"}` + "\n", 1},
		{"SeqGap", `{"conversation":"c","seq":0,"ts":1,"type":"message_received","message_id":"m","received_at":1}
{"conversation":"c","seq":2,"ts":1,"type":"processing_started","message_id":"m"}
`, 2},
		{"UnknownMessage", `{"conversation":"c","seq":0,"ts":1,"type":"processing_started","message_id":"m"}` + "\n", 1},
		{"DuplicateStart", `{"conversation":"c","seq":0,"ts":1,"type":"message_received","message_id":"m","received_at":1}
{"conversation":"c","seq":1,"ts":1,"type":"processing_started","message_id":"m"}
{"conversation":"c","seq":2,"ts":1,"type":"processing_started","message_id":"m"}
`, 3},
		// Only an identical event is skipped as already there: one without
		// the worker and lease of the stored one is not it.
		{"NotIdenticalAtSeq", `{"conversation":"c","seq":0,"ts":1,"type":"message_received","message_id":"m","received_at":1}
{"conversation":"c","seq":1,"ts":1,"type":"processing_started","message_id":"m","worker":"w","lease_ms":1000}
{"conversation":"c","seq":1,"ts":1,"type":"processing_started","message_id":"m"}
`, 3},
		{"NotIdenticalFingerprint", `{"conversation":"c","seq":0,"ts":1,"type":"message_received","message_id":"m","received_at":1,"fingerprint":"a"}
{"conversation":"c","seq":0,"ts":1,"type":"message_received","message_id":"m","received_at":1}
`, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustOpenStore(t, Options{})
			_, err := s.Import(context.Background(), strings.NewReader(tt.input), nil)
			var ie *ImportError
			if !errors.As(err, &ie) || ie.Line != tt.line {
				t.Fatalf("Import error = %v, want an ImportError at line %d", err, tt.line)
			}
		})
	}
}

// TestBackup: a backup holds every event, no one else may read it, and
// Backup neither overwrites a file nor leaves one behind when it fails.
func TestBackup(t *testing.T) {
	setUmask(t, 0o022)
	s := mustOpenStore(t, Options{})
	writeLifecycles(t, s, 2, 10)
	dst := filepath.Join(t.TempDir(), "copy.db")
	if err := Backup(context.Background(), s.Path(), dst, nil); err != nil {
		t.Fatal(err)
	}
	r := mustCheck(t, dst)
	if r.Events != 2*5*10 {
		t.Errorf("backup holds %d events", r.Events)
	}
	wantMode(t, dst, 0o600)
	if err := Backup(context.Background(), s.Path(), dst, nil); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Backup over an existing file = %v, want fs.ErrExist", err)
	}
	if r := mustCheck(t, dst); r.Events != 2*5*10 {
		t.Errorf("a refused backup left %d events in the existing file", r.Events)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	failed := filepath.Join(t.TempDir(), "failed.db")
	if err := Backup(ctx, s.Path(), failed, nil); err == nil {
		t.Fatal("Backup with a cancelled context succeeded")
	}
	if _, err := os.Lstat(failed); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a failed backup left %s behind: %v", failed, err)
	}
}

// TestBackup_Progress: Backup copies a few pages at a time, reports each
// step as events copied, up to all of them, and copies one snapshot while
// the store keeps writing.
func TestBackup_Progress(t *testing.T) {
	old := backupPages
	backupPages = 2
	t.Cleanup(func() { backupPages = old })
	s := mustOpenStore(t, Options{})
	writeLifecycles(t, s, 4, 50)
	before, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}

	stop := make(chan struct{})
	writing := make(chan struct{})
	go func() {
		defer close(writing)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cmd := conversation.Command{Op: conversation.OpReceive, Conversation: "during", MessageID: fmt.Sprint(i), ExpectedSeq: conversation.NoExpectedSeq}
			if _, err := s.Write(context.Background(), cmd); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	var reports [][2]int64
	dst := filepath.Join(t.TempDir(), "copy.db")
	err = Backup(context.Background(), s.Path(), dst, func(done, total int64) { reports = append(reports, [2]int64{done, total}) })
	close(stop)
	<-writing
	if err != nil {
		t.Fatal(err)
	}

	if len(reports) < 3 {
		t.Fatalf("progress reported %v, want a report for each of several steps", reports)
	}
	last := reports[len(reports)-1]
	if last[0] != last[1] || last[1] < before.Events {
		t.Errorf("last report %v, want all of at least %d events", last, before.Events)
	}
	for i := 1; i < len(reports); i++ {
		if reports[i][0] < reports[i-1][0] || reports[i][1] != last[1] {
			t.Errorf("report %d is %v after %v: want the same total, and no step back", i, reports[i], reports[i-1])
		}
	}
	if r := mustCheck(t, dst); r.Events != last[1] {
		t.Errorf("the backup holds %d events, progress counted %d", r.Events, last[1])
	}
}

// TestCheck_FindsProblems corrupts state rows behind the store's back and
// expects Check to name each.
// alteredDatabase writes n lifecycles of one conversation (none when n is
// 0) to a new database, closes it, runs stmt on it behind the store's back,
// and returns its path.
func alteredDatabase(t *testing.T, n int, stmt string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if n > 0 {
		writeLifecycles(t, s, 1, n)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheck_FindsProblems(t *testing.T) {
	tests := []struct{ name, sql, want string }{
		{"MessageStatus", `UPDATE messages SET status = 2 WHERE message_id = 'm0'`, `message "m0"`},
		{"LastStep", `UPDATE messages SET last_step = 9 WHERE message_id = 'm1'`, `message "m1"`},
		{"NextSeq", `UPDATE conversations SET next_seq = next_seq + 1`, "next_seq"},
		{"Counts", `UPDATE conversations SET finished = finished - 1`, "counts"},
		{"SeqGap", `DELETE FROM events WHERE seq = 3`, "seq"},
		{"StepRow", `DELETE FROM steps WHERE step_index = 1 AND message_id = 'm0'`, "step rows"},
		{"Totals", `UPDATE totals SET events = events + 1`, "totals"},
		{"IllegalEvent", `UPDATE events SET type = 2 WHERE seq = 0`, "never received"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := alteredDatabase(t, 3, tt.sql)
			r, err := Check(context.Background(), path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(strings.Join(r.Problems, "\n"), tt.want) {
				t.Errorf("Check problems = %q, want one mentioning %q", r.Problems, tt.want)
			}
		})
	}
}

func TestOpen_NewerSchema(t *testing.T) {
	path := alteredDatabase(t, 0, "PRAGMA user_version = 99")
	if _, err := Open(path, Options{}); !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "99") {
		t.Errorf("Open of a version 99 database: %v, want ErrNewerSchema naming the version", err)
	}
	if _, err := Check(context.Background(), path, nil); !errors.Is(err, ErrNewerSchema) {
		t.Errorf("Check of a version 99 database: %v, want ErrNewerSchema", err)
	}
}

// TestStore_ReadYourWrites: once a write is acknowledged, reads see it,
// whether they are served from the writer's cache of committed states or
// from the database (a cache of one message is cleared at every commit),
// and the caches stay bounded.
func TestStore_ReadYourWrites(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cache int
	}{{"DefaultCache", 0}, {"CacheClearedEveryCommit", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			s := mustOpenStore(t, Options{CacheSize: tc.cache})
			ctx := context.Background()
			for i := range 30 {
				conv, m := fmt.Sprintf("c%d", i%3), fmt.Sprintf("m%d", i)
				for k, c := range lifecycle(conv, m) {
					mustWrite(t, s, c)
					got, err := s.Message(ctx, conv, m)
					if err != nil || got == nil || got.LastSeq != int64(5*(i/3)+k) {
						t.Fatalf("after %v of %s: Message = %+v, %v; want last seq %d", c.Op, m, got, err, 5*(i/3)+k)
					}
					d, _ := s.Decide(ctx, conv, m, conversation.Delivery{})
					want := conversation.Resume
					if c.Op == conversation.OpFinish {
						want = conversation.Skip
					}
					if d.Action != want || (want == conversation.Resume && d.ResumeFrom != got.LastStep+1) {
						t.Fatalf("after %v of %s: Decide = %+v, want %v", c.Op, m, d, want)
					}
				}
			}
			// One write at a time: one conversation a batch, so the
			// caches hold at most CacheSize + 1 entries.
			bound := s.opts.CacheSize + 1
			convIDs := 0
			s.convIDs.Range(func(any, any) bool { convIDs++; return true })
			if n := s.msgs.len(); n > bound || convIDs > bound {
				t.Errorf("caches hold %d messages and %d conversation ids; want at most %d", n, convIDs, bound)
			}
		})
	}
}

// TestStore_RestartReplaysNothing: what a reopened store answers comes from
// its state tables, not from a replay of the log: with the events deleted
// behind its back, decisions and states are still there.
func TestStore_RestartReplaysNothing(t *testing.T) {
	path := alteredDatabase(t, 3, `DELETE FROM events WHERE type != 3`) // keep step outputs
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for id, want := range map[string]conversation.Decision{
		"m0":  {Action: conversation.Skip},
		"m2":  {Action: conversation.Resume, ResumeFrom: 1},
		"bad": {Action: conversation.Resume, ResumeFrom: 0},
	} {
		if d, err := s.Decide(ctx, "conv-0", id, conversation.Delivery{}); err != nil || d.Action != want.Action || d.ResumeFrom != want.ResumeFrom {
			t.Errorf("Decide(%s) after reopening = %+v, %v; want %+v", id, d, err, want)
		}
	}
	if sum, err := s.Conversation(ctx, "conv-0"); err != nil || sum.Next != 15 {
		t.Errorf("Conversation after reopening = %+v, %v; want next seq 15", sum, err)
	}
}
