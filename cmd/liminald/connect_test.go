package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServe_ConnectTimeoutSIGTERM: a daemon whose PostgreSQL server is not
// there waits for it, saying so, up to --connect-timeout; a SIGTERM during
// that wait ends it at once and cleanly (exit 0), leaving no socket and no
// lock file behind.
func TestServe_ConnectTimeoutSIGTERM(t *testing.T) {
	dir := t.TempDir()
	nowhere := filepath.Join(dir, "no-server")
	if err := os.Mkdir(nowhere, 0o700); err != nil {
		t.Fatal(err)
	}
	socket := filepath.Join(dir, "s.sock")
	d := newDaemonProc(t, dir, socket, "postgres://liminald@/liminald?host="+nowhere, "--connect-timeout", "10m")
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(d.stop)
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.stderr.String(), "waiting for PostgreSQL") {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not say it waits for PostgreSQL:\n%s", d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	sent := time.Now()
	d.signal(syscall.SIGTERM)
	if code := d.wait(); code != 0 {
		t.Errorf("exit code %d after SIGTERM during the wait, want 0\n%s", code, d.stderr.String())
	}
	if took := time.Since(sent); took > 2*time.Second {
		t.Errorf("the daemon took %v to end after SIGTERM during the wait", took)
	}
	for _, p := range []string{socket, socket + ".lock"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is left behind (%v)", p, err)
		}
	}
}

// TestServe_ConnectTimeout: without a server, the daemon gives up after
// connect_timeout (here from LIMINAL_CONNECT_TIMEOUT) with an error that
// says what it waited for.
func TestServe_ConnectTimeout(t *testing.T) {
	dir := t.TempDir()
	nowhere := filepath.Join(dir, "no-server")
	if err := os.Mkdir(nowhere, 0o700); err != nil {
		t.Fatal(err)
	}
	d := newDaemonProc(t, dir, filepath.Join(dir, "s.sock"), "postgres://liminald@/liminald?host="+nowhere)
	d.cmd.Env = append(d.cmd.Env, "LIMINAL_CONNECT_TIMEOUT=300ms")
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(d.stop)
	if code := d.wait(); code == 0 {
		t.Errorf("the daemon started without a server:\n%s", d.stderr.String())
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("the daemon gave up after %v under a connect_timeout of 300ms", took)
	}
	if log := d.stderr.String(); !strings.Contains(log, "PostgreSQL did not answer within 300ms") {
		t.Errorf("the error does not say what the daemon waited for:\n%s", log)
	}
}
