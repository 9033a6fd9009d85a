package sqlitestore

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"liminald"
	"liminald/conversation"
)

// TestOpen_MigratesVersion1 opens a real version-1 database (made by
// liminald 1: testdata/v1/liminald.db holds conversations orders and emails
// with finished, errored and received messages) and checks that it is
// brought to the current version: its events and decisions are kept, the
// new state columns are filled from the log, liminald check passes, and
// protocol 2 writes work on it.
func TestOpen_MigratesVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v1.db")
	b, err := os.ReadFile("testdata/v1/liminald.db")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Check(context.Background(), path, nil); err == nil || !strings.Contains(err.Error(), "version 1") {
		t.Errorf("Check of a version-1 database = %v, want an error naming version 1", err)
	}

	s := mustOpenPath(t, path, Options{})
	var version int
	if err := s.rdb.QueryRow("PRAGMA user_version").Scan(&version); err != nil || version != liminald.SchemaVersion {
		t.Fatalf("user_version after Open = %d, %v; want %d", version, err, liminald.SchemaVersion)
	}
	ctx := context.Background()
	for _, tt := range []struct {
		conv, id string
		want     conversation.Action
		attempts int64
	}{
		{"orders", "m-1", conversation.Skip, 1},
		{"orders", "m-2", conversation.Resume, 3},
		{"orders", "m-3", conversation.Resume, 0},
		{"emails", "e-1", conversation.Resume, 1},
		{"orders", "never", conversation.Start, 0},
	} {
		d, err := s.Decide(ctx, tt.conv, tt.id, conversation.Delivery{})
		if err != nil || d.Action != tt.want {
			t.Errorf("Decide(%s/%s) after migration = %+v, %v; want %v", tt.conv, tt.id, d, err, tt.want)
		}
		m, err := s.Message(ctx, tt.conv, tt.id)
		if err != nil || (m == nil) != (tt.want == conversation.Start) {
			t.Fatalf("Message(%s/%s) = %+v, %v", tt.conv, tt.id, m, err)
		}
		if m != nil && (m.Attempts != tt.attempts || m.LastTS == 0) {
			t.Errorf("Message(%s/%s) = attempts %d, last_ts %d; want attempts %d and the ts of its latest event", tt.conv, tt.id, m.Attempts, m.LastTS, tt.attempts)
		}
	}
	sum, err := s.Conversation(ctx, "orders")
	if err != nil || sum.Next != 13 {
		t.Errorf("Conversation(orders) = %+v, %v; want next seq 13", sum, err)
	}
	// Protocol 2 on the migrated log: a leased start, then a fenced step.
	start := conversation.Command{Op: conversation.OpStart, Conversation: "orders", MessageID: "m-3", Worker: "w1", LeaseMS: 60_000, ExpectedSeq: conversation.NoExpectedSeq}
	o := mustWrite(t, s, start)
	if o.Token != 13 || o.LeaseExpiresAt == 0 {
		t.Errorf("leased start on a migrated log = %+v, want token 13 with a lease", o)
	}
	step := conversation.Command{Op: conversation.OpStep, Conversation: "orders", MessageID: "m-3", Token: 12, HasToken: true, ExpectedSeq: conversation.NoExpectedSeq}
	if _, err := s.Write(ctx, step); err == nil {
		t.Errorf("step with an old token on a migrated log succeeded, want fenced")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, path)
}

// TestOpen_CreatesPrivateFiles: a database Open creates, and the WAL beside
// it, are readable by their owner only, whatever the umask.
func TestOpen_CreatesPrivateFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "new.db")
	s := mustOpenPath(t, path, Options{})
	mustWrite(t, s, cmd(conversation.OpReceive, "m"))
	for _, p := range []string{path, path + "-wal"} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: %v, %v; want mode 0600", p, fi.Mode(), err)
		}
	}
}
