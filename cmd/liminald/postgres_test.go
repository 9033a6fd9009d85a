package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"liminald/ipc"
	"liminald/pgtest"
)

// TestCLI_PostgresExportImportCheck: a SQLite database that retention
// touched and that holds every kind of event, exported, imported into a
// PostgreSQL database and exported from there, gives the same export byte
// for byte; check finds the PostgreSQL database sound and counts what the
// SQLite one has; a second import changes nothing; a daemon on the
// PostgreSQL database answers as one on the SQLite database would; and
// backup on a URL says to use pg_dump.
func TestCLI_PostgresExportImportCheck(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.CreateDatabase("roundtrip") + "&pool_max_conns=4" // the pool's size, for serve and the offline tools alike
	dir := t.TempDir()
	input := filepath.Join(dir, "retained.jsonl")
	if err := os.WriteFile(input, []byte(retainedExport), 0o600); err != nil {
		t.Fatal(err)
	}
	sqlite := &daemonProc{t: t, dir: dir, socket: filepath.Join(dir, "s.sock"), db: filepath.Join(dir, "source.db")}
	if _, stderr, code := runCLI(t, sqlite, "import", input); code != 0 {
		t.Fatalf("import into SQLite: exit %d, %s", code, stderr)
	}
	d := startDaemonIn(t, dir, sqlite.socket, sqlite.db, "--max-attempts", "1")
	writeEveryKind(t, d.socket)
	d.stop()

	source, stderr, code := runCLI(t, sqlite, "export")
	if code != 0 {
		t.Fatalf("export of SQLite: exit %d, %s", code, stderr)
	}
	if err := os.WriteFile(input, []byte(source), 0o600); err != nil {
		t.Fatal(err)
	}
	pg := &daemonProc{t: t, dir: dir, socket: filepath.Join(dir, "pg.sock"), db: url}
	for _, want := range []string{"imported 14 events", "imported 0 events"} {
		if _, stderr, code := runCLI(t, pg, "import", input); code != 0 || !strings.Contains(stderr, want) {
			t.Fatalf("import into PostgreSQL: exit %d, %s; want %q", code, stderr, want)
		}
		if got, stderr, code := runCLI(t, pg, "export"); code != 0 || got != source {
			t.Fatalf("export of PostgreSQL: exit %d, %s\n%s\nwant the export of SQLite\n%s", code, stderr, got, source)
		}
	}
	wantCheck, stderr, code := runCLI(t, sqlite, "check")
	if code != 0 {
		t.Fatalf("check of SQLite: exit %d, %s%s", code, wantCheck, stderr)
	}
	got, stderr, code := runCLI(t, pg, "check")
	counts := strings.TrimPrefix(wantCheck, sqlite.db)
	if code != 0 || !strings.HasSuffix(got, counts) || !strings.Contains(counts, "4 conversations, 6 messages, 14 events, 1 tombstones") {
		t.Errorf("check of PostgreSQL: exit %d, %s%s; want it sound, with the counts of SQLite's: %s", code, got, stderr, wantCheck)
	}
	if _, stderr, code := runCLI(t, pg, "check", "--json"); code != 0 || strings.Contains(stderr, "password") {
		t.Errorf("check --json of PostgreSQL: exit %d, %s", code, stderr)
	}

	served := startDaemonIn(t, dir, pg.socket, url)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"decide", "--json", "c", "kept"}, []string{`"decision":"skip"`, `"compacted":true`}},
		{[]string{"decide", "--json", "--sent-at", "1000", "c", "gone"}, []string{`"decision":"forgotten"`, `"forgotten_before":1000`}},
		{[]string{"decide", "--json", "work", "done"}, []string{`"decision":"skip"`}},
		{[]string{"receive", "--json", "c", "new"}, []string{`"seq":9`, `"forgotten_before":1000`}},
	} {
		stdout, stderr, code := runCLI(t, served, tc.args...)
		for _, want := range tc.want {
			if code != 0 || !strings.Contains(stdout, want) {
				t.Errorf("%v on PostgreSQL: exit %d, %s%s; want %s", tc.args, code, stdout, stderr, want)
			}
		}
	}
	if got, stderr, code := runCLI(t, pg, "check"); code != 0 {
		t.Errorf("check of PostgreSQL beside its daemon: exit %d, %s%s", code, got, stderr)
	}

	if _, stderr, code := runCLI(t, pg, "backup", filepath.Join(dir, "copy")); code == 0 || !strings.Contains(stderr, "pg_dump") {
		t.Errorf("backup of PostgreSQL: exit %d, %s; want a refusal naming pg_dump", code, stderr)
	}
}

// writeEveryKind writes, through the daemon on socket, events of every
// type: steps with binary output, a failure, a release, a lease, a
// fingerprint, a conversation named in UTF-8.
func writeEveryKind(t *testing.T, socket string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	c, err := ipc.Dial(ctx, socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	_, err = c.Receive(ctx, "work", "done", ipc.Fingerprint("sha256:abc"))
	must("receive done", err)
	_, err = c.Start(ctx, "work", "done")
	must("start done", err)
	_, err = c.Step(ctx, "work", "done", 0, []byte{0, 1, 'x', 0xff})
	must("step done", err)
	_, err = c.Step(ctx, "work", "done", 1, nil)
	must("empty step done", err)
	_, err = c.Finish(ctx, "work", "done")
	must("finish done", err)
	_, err = c.Receive(ctx, "work", "flaky")
	must("receive flaky", err)
	_, err = c.Start(ctx, "work", "flaky")
	must("start flaky", err)
	_, err = c.Fail(ctx, "work", "flaky", "boom\x00\nagain")
	must("fail flaky", err)
	_, err = c.Release(ctx, "work", "flaky", "gave up")
	must("release flaky", err)
	_, err = c.Receive(ctx, "wörk/ç", "leased", ipc.ReceivedAt(1234))
	must("receive leased", err)
	_, err = c.Start(ctx, "wörk/ç", "leased", ipc.Worker("w1"), ipc.Lease(time.Hour))
	must("start leased", err)
}
