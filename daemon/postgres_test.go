package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"liminald/conversation"
	"liminald/ipc"
	"liminald/pgtest"
)

// syncBuffer is a strings.Builder safe for the daemon's logger and the
// test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRun_Postgres runs two daemons on one PostgreSQL database, each on
// its own socket (two hosts' sidecars): a message delivered through both
// at once is started by one of them, the other resumes it, and each sees
// the other's writes. Neither takes a database lock.
func TestRun_Postgres(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.URL("postgres")
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	var clients []*ipc.Client
	logs := make([]*syncBuffer, 2)
	errs := make([]error, 2)
	defer func() {
		cancel()
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("daemon %d: Run() = %v\n%s", i, err, logs[i])
			}
		}
	}()
	for i := range 2 {
		logs[i] = &syncBuffer{}
		socket := filepath.Join(dir, fmt.Sprintf("d%d.sock", i))
		env := map[string]string{"HOME": dir, "LIMINAL_SOCKET": socket, "LIMINAL_DB": url}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = Run(ctx, Options{Env: mapEnv(env), Stderr: logs[i], ShutdownTimeout: 2 * time.Second})
		}()
		c := dialWhenUp(t, socket)
		defer c.Close()
		clients = append(clients, c)
	}
	for round := range 10 {
		msg := fmt.Sprintf("m%d", round)
		decisions := make([]ipc.Decision, 2)
		var rw sync.WaitGroup
		for i, c := range clients {
			rw.Add(1)
			go func() {
				defer rw.Done()
				var err error
				if decisions[i], err = c.Receive(ctx, "c", msg); err != nil {
					t.Errorf("receive through daemon %d: %v", i, err)
				}
			}()
		}
		rw.Wait()
		starts := 0
		for _, d := range decisions {
			if d.Action == conversation.Start {
				starts++
			}
		}
		if starts != 1 {
			t.Fatalf("round %d: decisions %+v, want exactly one start", round, decisions)
		}
	}
	events, _, err := clients[1].Read(ctx, "c", 0, 100)
	if err != nil || len(events) != 10 {
		t.Fatalf("read through the second daemon: %d events, %v; want the 10 receives", len(events), err)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".lock") && !strings.Contains(e.Name(), ".sock") {
			t.Errorf("a daemon on PostgreSQL made the database lock %s", e.Name())
		}
	}
	for i, l := range logs {
		if strings.Contains(l.String(), "password") {
			t.Errorf("daemon %d logged a password", i)
		}
	}
}

// dialWhenUp dials the daemon's socket until it answers a ping.
func dialWhenUp(t *testing.T, socket string) *ipc.Client {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		c, err := ipc.Dial(ctx, socket)
		if err == nil {
			if err = c.Ping(ctx); err == nil {
				cancel()
				return c
			}
			c.Close()
		}
		cancel()
		if time.Now().After(deadline) {
			t.Fatalf("daemon on %s never answered: %v", socket, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
