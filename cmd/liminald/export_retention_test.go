package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// retainedExport is an export of a log that retention touched (SPEC §8):
// conversation c compacted two messages, kept's tombstone and one whose
// tombstone was dropped (the horizon, and seqs 6-8 at its end); plain was
// never compacted.
const retainedExport = `{"conversation":"c","next_seq":9,"compacted":2,"forgotten_before":1000}
{"conversation":"c","seq":4,"pos":1,"ts":2000,"type":"message_received","message_id":"live","received_at":2000}
{"conversation":"c","seq":5,"pos":2,"ts":2000,"type":"processing_started","message_id":"live"}
{"conversation":"plain","seq":0,"pos":3,"ts":2000,"type":"message_received","message_id":"m","received_at":2000}
{"conversation":"c","tombstone":{"message_id":"kept","finished_at":1500,"seq":3,"attempts":1,"fingerprint":"fp"}}
`

// TestCLI_ExportImportRetention: import takes an export's headers and
// tombstones, check counts the tombstones, export writes them back as they
// came, a second import changes nothing, and a daemon on the imported
// database decides and appends as the original would.
func TestCLI_ExportImportRetention(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "retained.jsonl")
	if err := os.WriteFile(input, []byte(retainedExport), 0o600); err != nil {
		t.Fatal(err)
	}
	db := &daemonProc{t: t, dir: dir, socket: filepath.Join(dir, "s.sock"), db: filepath.Join(dir, "imported.db")}
	for _, want := range []string{"imported 3 events", "imported 0 events"} {
		if _, stderr, code := runCLI(t, db, "import", input); code != 0 || !strings.Contains(stderr, want) {
			t.Fatalf("import: exit %d, %s; want %q", code, stderr, want)
		}
		if stdout, stderr, code := runCLI(t, db, "export"); code != 0 || stdout != retainedExport {
			t.Errorf("export of the import: exit %d, %s\n%s\nwant\n%s", code, stderr, stdout, retainedExport)
		}
	}
	if stdout, stderr, code := runCLI(t, db, "check"); code != 0 || !strings.Contains(stdout, "2 conversations, 3 messages, 3 events, 1 tombstones\nok\n") {
		t.Errorf("check: exit %d, %s%s; want the tombstone counted", code, stdout, stderr)
	}
	if stdout, stderr, code := runCLI(t, db, "check", "--json"); code != 0 || !strings.Contains(stdout, `"tombstones":1`) {
		t.Errorf("check --json: exit %d, %s%s; want the tombstone counted", code, stdout, stderr)
	}

	d := startDaemonIn(t, dir, db.socket, db.db)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"decide", "--json", "c", "kept"}, []string{`"decision":"skip"`, `"compacted":true`}},
		{[]string{"decide", "--json", "--sent-at", "1000", "c", "gone"}, []string{`"decision":"forgotten"`, `"forgotten_before":1000`}},
		{[]string{"receive", "--json", "c", "new"}, []string{`"seq":9`, `"forgotten_before":1000`}},
	} {
		stdout, stderr, code := runCLI(t, d, tc.args...)
		for _, want := range tc.want {
			if code != 0 || !strings.Contains(stdout, want) {
				t.Errorf("%v: exit %d, %s%s; want %s", tc.args, code, stdout, stderr, want)
			}
		}
	}
}

// TestCLI_ImportRefusesTombstoneOnEvent: a tombstone at the seq of an
// event is refused, naming its line, and leaves no new database behind.
func TestCLI_ImportRefusesTombstoneOnEvent(t *testing.T) {
	dir := t.TempDir()
	input := filepath.Join(dir, "bad.jsonl")
	bad := `{"conversation":"c","next_seq":9,"compacted":1,"forgotten_before":null}
{"conversation":"c","seq":4,"pos":1,"ts":2000,"type":"message_received","message_id":"live","received_at":2000}
{"conversation":"c","tombstone":{"message_id":"kept","finished_at":1500,"seq":4,"attempts":1}}
`
	if err := os.WriteFile(input, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := &daemonProc{t: t, dir: dir, db: filepath.Join(dir, "fresh.db")}
	if _, stderr, code := runCLI(t, fresh, "import", input); code != 1 || !strings.Contains(stderr, "liminald: import_refused: ") || !strings.Contains(stderr, "line 3") {
		t.Errorf("import of a tombstone on an event: exit %d, %s; want import_refused at line 3", code, stderr)
	}
	if _, err := os.Stat(fresh.db); !os.IsNotExist(err) {
		t.Errorf("the refused import left its new database: %v", err)
	}
}
