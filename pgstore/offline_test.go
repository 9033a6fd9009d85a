package pgstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"liminald/conversation"
)

// TestCheck_FindsProblems: Check finds a message row, a step row and a
// total that differ from the replay of the log, and positions' next that
// is not above every pos.
func TestCheck_FindsProblems(t *testing.T) {
	db := newTestDB(t)
	s, err := Open(context.Background(), db.url, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []conversation.Command{cmd(conversation.OpReceive, "m"), cmd(conversation.OpStart, "m"), step("m", 0, "out")} {
		mustWrite(t, s, c)
	}
	if r, err := Check(t.Context(), db.url, nil); err != nil || len(r.Problems) != 0 || r.Events != 3 || r.Messages != 1 {
		t.Fatalf("Check of a sound database: %+v, %v", r, err)
	}
	conn, err := pgx.Connect(t.Context(), db.url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `UPDATE messages SET attempts = 7; UPDATE steps SET seq = 0;
		UPDATE positions SET events = 9, next = 2`); err != nil {
		t.Fatal(err)
	}
	r, err := Check(t.Context(), db.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(r.Problems, "\n")
	for _, want := range []string{`message "m" stored as`, `step "m"/0 stored at seq 0`, "totals in positions", "positions' next is 2"} {
		if !strings.Contains(got, want) {
			t.Errorf("Check's problems do not say %q:\n%s", want, got)
		}
	}
	// Put it back, for the check at cleanup.
	if _, err := conn.Exec(t.Context(), `UPDATE messages SET attempts = 1; UPDATE steps SET seq = 2;
		UPDATE positions SET events = 3, next = 4`); err != nil {
		t.Fatal(err)
	}
	if r, err := Check(t.Context(), db.url, nil); err != nil || len(r.Problems) != 0 {
		t.Fatalf("Check once repaired: %+v, %v", r, err)
	}
}

// TestImport_RefusesAndResumes: a tombstone at the seq of an event is
// refused naming its line, what came before it stays, and an import of
// the whole again appends nothing twice; an export gives back what was
// imported.
func TestImport_RefusesAndResumes(t *testing.T) {
	db := newTestDB(t)
	s := mustOpen(t, db, Options{})
	good := `{"conversation":"c","next_seq":9,"compacted":1,"forgotten_before":1000}
{"conversation":"c","seq":4,"pos":1,"ts":2000,"type":"message_received","message_id":"live","received_at":2000}
{"conversation":"c","tombstone":{"message_id":"kept","finished_at":1500,"seq":3,"attempts":1,"fingerprint":"fp"}}
`
	bad := good + `{"conversation":"c","tombstone":{"message_id":"other","finished_at":1500,"seq":4,"attempts":1}}
`
	n, err := s.Import(t.Context(), strings.NewReader(bad), nil)
	var ie *ImportError
	if !errors.As(err, &ie) || ie.Line != 4 || n != 1 {
		t.Fatalf("Import of a tombstone on an event: %d, %v; want 1 event and a refusal of line 4", n, err)
	}
	if n, err := s.Import(t.Context(), strings.NewReader(good), nil); err != nil || n != 0 {
		t.Fatalf("Import again: %d, %v; want 0 events appended", n, err)
	}
	var out bytes.Buffer
	if n, err := Export(t.Context(), db.url, &out, nil); err != nil || n != 1 || out.String() != good {
		t.Errorf("Export: %d, %v\n%s\nwant\n%s", n, err, out.String(), good)
	}
	if d, err := s.Decide(t.Context(), "c", "kept", conversation.Delivery{}); err != nil || !d.Compacted {
		t.Errorf("Decide of the imported tombstone: %+v, %v", d, err)
	}
}
