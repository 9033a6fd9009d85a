package main

import (
	"bufio"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestUI_Serves runs liminald ui against a daemon: it refuses a listen
// address that is not loopback, prints a URL whose token opens the view,
// and stops cleanly on SIGTERM.
func TestUI_Serves(t *testing.T) {
	d := startDaemon(t)
	if _, stderr, code := runCLI(t, d, "ui", "--listen", "0.0.0.0:0"); code != 2 || !strings.Contains(stderr, "loopback") {
		t.Errorf("ui --listen 0.0.0.0:0: exit %d, %s; want a usage error naming loopback", code, stderr)
	}
	if _, _, code := runCLI(t, d, "receive", "orders", "m-1"); code != 0 {
		t.Fatalf("receive: exit %d", code)
	}
	cmd := exec.Command(binary, "ui", "--socket", d.socket)
	cmd.Env = cleanEnv()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "liminald ui: ")
	if err != nil || !ok || !strings.HasPrefix(url, "http://127.0.0.1:") || !strings.Contains(url, "/?token=") {
		t.Fatalf("ui printed %q, %v; want its URL with a token", line, err)
	}
	base, _, _ := strings.Cut(url, "/?token=")
	if resp, err := http.Get(base + "/"); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET without the token: %v, %v; want 403", resp, err)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	resp, err := browser.Get(url) // sets the cookie, then follows the redirect
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.RawQuery != "" || !strings.Contains(string(body), `href="/c/orders"`) {
		t.Errorf("GET the printed URL: %d at %s, want the conversations page without the token in its URL:\n%s", resp.StatusCode, resp.Request.URL, body)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("ui after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("ui did not stop within 10s of SIGTERM")
	}
}
