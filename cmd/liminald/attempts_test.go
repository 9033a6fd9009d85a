package main

import (
	"testing"
)

// TestServe_MaxAttemptsReloads: max_attempts from the configuration file
// quarantines a message started that many times, and a reload that raises
// it lets the message go without a restart.
func TestServe_MaxAttemptsReloads(t *testing.T) {
	d, config := startWithConfig(t, "max_attempts = 1\n")
	c := dialRaw(t, d.socket)
	c.doAll(
		`{"op":"receive","conversation":"c","message_id":"m"}`,
		`{"op":"start","conversation":"c","message_id":"m"}`,
		`{"op":"fail","conversation":"c","message_id":"m","error":"boom"}`,
	)
	if line, m := c.do(`{"op":"decide","conversation":"c","message_id":"m"}`); m["decision"] != "quarantined" {
		t.Fatalf("decide with max_attempts 1: %s, want quarantined", line)
	}
	d.rewriteConfig(config, "max_attempts = 2\n")
	if line, m := c.do(`{"op":"decide","conversation":"c","message_id":"m"}`); m["decision"] != "resume" {
		t.Errorf("decide after max_attempts was raised to 2: %s, want resume", line)
	}
	if line, m := c.do(`{"op":"start","conversation":"c","message_id":"m"}`); m["ok"] != true {
		t.Errorf("start after max_attempts was raised: %s", line)
	}
}
