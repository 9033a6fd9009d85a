package pgtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// psql runs one statement on the server's database db and returns what it
// prints, unaligned and without headers.
func psql(t *testing.T, s *Server, db, sql string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(s.bin, "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql, s.URL(db)).CombinedOutput()
	if err != nil {
		t.Fatalf("psql %q: %v\n%s", sql, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestServer(t *testing.T) {
	s := Start(t)
	if got := psql(t, s, "postgres", "SHOW fsync"); got != "on" {
		t.Errorf("fsync = %q, want on", got)
	}
	if got := psql(t, s, "postgres", "SHOW listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want none: the socket only", got)
	}
	url := s.CreateDatabase("other")
	if !strings.Contains(url, "/other?host="+s.Dir()) {
		t.Errorf("CreateDatabase = %q, want the URL of database other on %s", url, s.Dir())
	}

	t.Run("RestartKeepsCommitted", func(t *testing.T) {
		psql(t, s, "other", "CREATE TABLE t (v int); INSERT INTO t VALUES (1)")
		s.Restart()
		if got := psql(t, s, "other", "SELECT sum(v) FROM t"); got != "1" {
			t.Errorf("after an immediate restart, sum = %q, want 1", got)
		}
	})

	t.Run("Cleanup", func(t *testing.T) {
		var dir string
		t.Run("Inner", func(t *testing.T) { dir = Start(t).Dir() })
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("after the test, its cluster's directory %s: %v, want it gone", dir, err)
		}
	})
}
