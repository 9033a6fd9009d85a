package main

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// TestServe_MaxAttemptsReloads: max_attempts from the configuration file
// quarantines a message started that many times, and a reload that raises
// it lets the message go without a restart.
func TestServe_MaxAttemptsReloads(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "liminald.toml")
	if err := os.WriteFile(config, []byte("max_attempts = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"), "--config", config)
	c := dialRaw(t, d.socket)
	for _, req := range []string{
		`{"op":"receive","conversation":"c","message_id":"m"}`,
		`{"op":"start","conversation":"c","message_id":"m"}`,
		`{"op":"fail","conversation":"c","message_id":"m","error":"boom"}`,
	} {
		if line, m := c.do(req); m["ok"] != true {
			t.Fatalf("%s: %s", req, line)
		}
	}
	if line, m := c.do(`{"op":"decide","conversation":"c","message_id":"m"}`); m["decision"] != "quarantined" {
		t.Fatalf("decide with max_attempts 1: %s, want quarantined", line)
	}
	if err := os.WriteFile(config, []byte("max_attempts = 2\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.expectNotify("RELOADING=1")
	d.expectNotify("READY=1")
	d.signal(syscall.SIGHUP) // the edit may have been seen before it was whole
	d.expectNotify("RELOADING=1")
	d.expectNotify("READY=1")
	if line, m := c.do(`{"op":"decide","conversation":"c","message_id":"m"}`); m["decision"] != "resume" {
		t.Errorf("decide after max_attempts was raised to 2: %s, want resume", line)
	}
	if line, m := c.do(`{"op":"start","conversation":"c","message_id":"m"}`); m["ok"] != true {
		t.Errorf("start after max_attempts was raised: %s", line)
	}
}
