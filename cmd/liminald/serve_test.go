package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestServe_EveryOp drives every op of SPEC §3 over a raw socket.
func TestServe_EveryOp(t *testing.T) {
	d := startDaemon(t)
	c := dialRaw(t, d.socket)
	steps := []struct {
		request string
		check   func(line string, m map[string]any) string // "" when fine
	}{
		{`{"id":"h","op":"hello","client":"e2e"}`, func(line string, m map[string]any) string {
			if !strings.HasPrefix(line, `{"id":"h","ok":true`) || m["protocol"] != jsonInt(2) {
				return "want protocol 2 and the id echoed"
			}
			return ""
		}},
		{`{"id":7,"op":"ping"}`, exact(`{"id":7,"ok":true}`)},
		{`{"id":"r1","op":"receive","conversation":"c","message_id":"m"}`, fields(`"decision":"start"`, `"seq":0`)},
		{`{"id":"d1","op":"decide","conversation":"c","message_id":"m"}`, fields(`"decision":"resume"`, `"resume_from":0`)},
		{`{"id":"s","op":"start","conversation":"c","message_id":"m"}`, fields(`"seq":1`)},
		{`{"id":"st","op":"step","conversation":"c","message_id":"m","step_index":0,"output":"aGk="}`, fields(`"seq":2`)},
		{`{"id":"st2","op":"step","conversation":"c","message_id":"m","step_index":0,"output":"aGk="}`, fields(`"seq":2`, `"duplicate":true`)},
		{`{"id":"st3","op":"step","conversation":"c","message_id":"m","step_index":0,"output":"b3RoZXI="}`, code("step_conflict")},
		{`{"id":"f","op":"fail","conversation":"c","message_id":"m","error":"boom"}`, fields(`"seq":3`)},
		{`{"id":"s2","op":"start","conversation":"c","message_id":"m"}`, fields(`"seq":4`)},
		{`{"id":"d2","op":"decide","conversation":"c","message_id":"m"}`, fields(`"decision":"resume"`, `"resume_from":1`)},
		{`{"id":"fin","op":"finish","conversation":"c","message_id":"m","expected_seq":5}`, fields(`"seq":5`)},
		{`{"id":"fin2","op":"finish","conversation":"c","message_id":"m"}`, fields(`"seq":5`, `"duplicate":true`)},
		{`{"id":"fin3","op":"finish","conversation":"c","message_id":"m","expected_seq":9}`, code("sequence_conflict")},
		{`{"id":"st4","op":"step","conversation":"c","message_id":"m","step_index":1,"output":""}`, code("already_finished")},
		{`{"id":"u","op":"start","conversation":"c","message_id":"nobody"}`, code("unknown_message")},
		{`{"id":"r2","op":"receive","conversation":"c","message_id":"m"}`, fields(`"decision":"skip"`)},
		{`{"id":"sc","op":"state","conversation":"c"}`, fields(`"next_seq":6`, `"finished":1`)},
		{`{"id":"sm","op":"state","conversation":"c","message_id":"m"}`, fields(`"status":"finished"`, `"last_completed_step":0`, `"steps":[{"step_index":0,`, `"output":"aGk="}]`, `"error":"boom"`)},
		{`{"id":"rd","op":"read","conversation":"c","from_seq":1,"limit":2}`, fields(`"next_seq":3`, `"seq":1`, `"seq":2`, `"type":"step_completed"`)},
		{`{"id":"cv","op":"conversations"}`, fields(`"conversations":[{"conversation":"c","next_seq":6,"messages":1}]`)},
		{`{"id":"sx","op":"stats"}`, fields(`"events":6`, `"conversations":1`, `"connections":1`)},
		{`{"id":"x","op":"nope"}`, code("unknown_op")},
		{`{"id":"b","op":"step","conversation":"c","message_id":"m","step_index":-1,"output":""}`, code("bad_request")},
	}
	for _, s := range steps {
		line, m := c.do(s.request)
		if problem := s.check(line, m); problem != "" {
			t.Errorf("%s\n  -> %s\n  %s", s.request, line, problem)
		}
	}

	// subscribe catches up from from_seq, then pushes live commits.
	line, m := c.do(`{"id":"sub","op":"subscribe","conversation":"c","from_seq":4}`)
	sub, ok := m["sub"]
	if !ok {
		t.Fatalf("subscribe: %s", line)
	}
	for _, wantSeq := range []string{`"seq":4`, `"seq":5`} {
		if line, _ := c.reply(); !strings.Contains(line, wantSeq) || strings.Contains(line, `"id"`) {
			t.Errorf("catch-up push %s, want %s and no id", line, wantSeq)
		}
	}
	other := dialRaw(t, d.socket)
	other.do(`{"op":"receive","conversation":"c","message_id":"m2"}`)
	if line, _ := c.reply(); !strings.Contains(line, fmt.Sprintf(`"sub":%v`, sub)) || !strings.Contains(line, `"seq":6`) {
		t.Errorf("live push %s, want seq 6 of sub %v", line, sub)
	}
	if line, m := c.do(fmt.Sprintf(`{"id":"un","op":"unsubscribe","sub":%v}`, sub)); m["ok"] != true {
		t.Errorf("unsubscribe: %s", line)
	}
}

func jsonInt(n int) any { return json.Number(strconv.Itoa(n)) }

func exact(want string) func(string, map[string]any) string {
	return func(line string, _ map[string]any) string {
		if line != want {
			return "want " + want
		}
		return ""
	}
}

func fields(want ...string) func(string, map[string]any) string {
	return func(line string, m map[string]any) string {
		if m["ok"] != true {
			return "want ok"
		}
		for _, w := range want {
			if !strings.Contains(line, w) {
				return "want " + w
			}
		}
		return ""
	}
}

func code(want string) func(string, map[string]any) string {
	return func(line string, m map[string]any) string {
		if m["ok"] != false || errCode(m) != want {
			return "want error code " + want
		}
		return ""
	}
}

// TestServe_BadInput: the line limit and malformed lines get id null and
// the connection keeps working.
func TestServe_BadInput(t *testing.T) {
	d := startDaemon(t, "--max-line-bytes", "1024")
	c := dialRaw(t, d.socket)
	for _, tc := range []struct{ name, line, code string }{
		{"LineTooLong", `{"op":"ping","pad":"` + strings.Repeat("x", 2000) + `"}`, "line_too_long"},
		{"MalformedJSON", `{"op":`, "bad_request"},
		{"NotAnObject", `[1,2]`, "bad_request"},
		{"InvalidUTF8", "{\"op\":\"ping\",\"x\":\"\xff\"}", "bad_request"},
	} {
		line, m := c.do(tc.line)
		if errCode(m) != tc.code || !strings.HasPrefix(line, `{"id":null`) {
			t.Errorf("%s: reply %s, want %s with id null", tc.name, line, tc.code)
		}
		if line, _ := c.do(`{"id":1,"op":"ping"}`); line != `{"id":1,"ok":true}` {
			t.Errorf("%s: ping after it = %s", tc.name, line)
		}
	}
	// CRLF and blank lines.
	c.send("\r\n\n{\"id\":2,\"op\":\"ping\"}\r\n")
	if line, _ := c.reply(); line != `{"id":2,"ok":true}` {
		t.Errorf("ping after blank lines and CRLF = %s", line)
	}
}

// TestServe_Locks: one daemon per database and per socket.
func TestServe_Locks(t *testing.T) {
	d := startDaemon(t)
	for _, tc := range []struct{ name, socket, db string }{
		{"SameDatabase", filepath.Join(d.dir, "other.sock"), d.db},
		{"SameSocket", d.socket, filepath.Join(d.dir, "other.db")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, "serve", "--socket", tc.socket, "--db", tc.db)
			cmd.Env = append(cleanEnv(), "HOME="+d.dir)
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), "locked") {
				t.Errorf("second serve: %v\n%s\nwant a non-zero exit naming the lock", err, out)
			}
		})
	}
	// The first daemon still serves.
	if line, _ := dialRaw(t, d.socket).do(`{"op":"ping"}`); !strings.Contains(line, `"ok":true`) {
		t.Errorf("first daemon after the refusals: %s", line)
	}
}

// TestServe_StaleSocket: a socket file left by a daemon that died is
// removed by the next one; a file that is not a socket is left alone.
func TestServe_StaleSocket(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "s.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	d := startDaemonIn(t, dir, socket, filepath.Join(dir, "db"))
	if line, _ := dialRaw(t, d.socket).do(`{"op":"ping"}`); !strings.Contains(line, `"ok":true`) {
		t.Errorf("ping = %s", line)
	}

	dir2 := t.TempDir()
	notSocket := filepath.Join(dir2, "s.sock")
	os.WriteFile(notSocket, []byte("keep me"), 0o600)
	d2 := newDaemonProc(t, dir2, notSocket, filepath.Join(dir2, "db"))
	d2.cmd.Stderr = nil
	out, err := d2.cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "not a socket") {
		t.Errorf("serve over a regular file: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(notSocket); string(b) != "keep me" {
		t.Errorf("the regular file was changed: %q", b)
	}
}

// TestServe_DeletedSocket: the daemon re-creates its socket file, and its
// lock with it when the whole directory went: a second daemon still cannot
// take the socket.
func TestServe_DeletedSocket(t *testing.T) {
	dir := t.TempDir()
	sockDir := filepath.Join(dir, "run")
	d := startDaemonIn(t, dir, filepath.Join(sockDir, "s.sock"), filepath.Join(dir, "db"))
	for _, remove := range []func() error{
		func() error { return os.Remove(d.socket) },
		func() error { // atomically, so the daemon cannot re-create into it meanwhile
			if err := os.Rename(sockDir, sockDir+".gone"); err != nil {
				return err
			}
			return os.RemoveAll(sockDir + ".gone")
		},
	} {
		if err := remove(); err != nil {
			t.Fatal(err)
		}
		waitForSocket(t, d)
		if line, _ := dialRaw(t, d.socket).do(`{"op":"ping"}`); !strings.Contains(line, `"ok":true`) {
			t.Errorf("ping on the re-created socket = %s", line)
		}
	}
	second := exec.Command(binary, "serve", "--socket", d.socket, "--db", filepath.Join(dir, "other.db"))
	second.Env = append(cleanEnv(), "HOME="+dir)
	if out, err := second.CombinedOutput(); err == nil || !strings.Contains(string(out), "locked") {
		t.Errorf("a second daemon on the re-created socket: %v\n%s\nwant refused by the lock", err, out)
	}
}

// waitForSocket waits for d's socket file to exist again.
func waitForSocket(t *testing.T, d *daemonProc) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(d.socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("socket not re-created\n%s", d.stderr.String())
		}
		time.Sleep(10 * time.Millisecond) // polling a file's existence; there is no signal to wait on
	}
}

// TestServe_SocketMode: the socket has exactly the configured mode and
// group.
func TestServe_SocketMode(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want os.FileMode
		gid  int
	}{
		{nil, 0o600, os.Getgid()},
		{[]string{"--socket-mode", "0660", "--socket-group", "1"}, 0o660, 1},
	} {
		d := startDaemon(t, tc.args...)
		fi, err := os.Stat(d.socket)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != tc.want {
			t.Errorf("serve %v: socket mode %o, want %o", tc.args, fi.Mode().Perm(), tc.want)
		}
		if gid := int(fi.Sys().(*syscall.Stat_t).Gid); gid != tc.gid {
			t.Errorf("serve %v: socket group %d, want %d", tc.args, gid, tc.gid)
		}
		d.stop()
	}
}

// TestServe_SIGINT stops the daemon as SIGTERM does.
func TestServe_SIGINT(t *testing.T) {
	d := startDaemon(t)
	d.signal(syscall.SIGINT)
	d.expectNotify("STOPPING=1")
	if code := d.wait(); code != 0 {
		t.Errorf("exit code %d after SIGINT\n%s", code, d.stderr.String())
	}
}

// TestServe_AllowList: a peer outside the allow-lists gets one forbidden
// line, then the connection closes.
func TestServe_AllowList(t *testing.T) {
	d := startDaemon(t, "--allow-uid", "54321")
	c := dialRaw(t, d.socket)
	line, m := c.reply()
	if errCode(m) != "forbidden" {
		t.Errorf("refused peer got %s, want forbidden", line)
	}
	if rest, err := c.r.ReadString('\n'); err == nil {
		t.Errorf("after forbidden: %q, want the connection closed", rest)
	}
	d.stop()

	ok := startDaemon(t, "--allow-uid", fmt.Sprint(os.Getuid()))
	if line, _ := dialRaw(t, ok.socket).do(`{"op":"ping"}`); !strings.Contains(line, `"ok":true`) {
		t.Errorf("allowed peer: %s", line)
	}
}

// TestServe_GracefulShutdown: SIGTERM with writes in flight answers them
// (ok, or shutting_down for those read after it began), exits 0, and every
// acknowledged write is in the database.
func TestServe_GracefulShutdown(t *testing.T) {
	d := startDaemon(t)
	c := dialRaw(t, d.socket)
	const n = 300
	var batch strings.Builder
	for i := range n {
		fmt.Fprintf(&batch, `{"id":%d,"op":"receive","conversation":"c","message_id":"m%d"}`+"\n", i, i)
	}
	c.send(batch.String())
	d.signal(syscall.SIGTERM)
	d.expectNotify("STOPPING=1")
	acked := 0
	for i := range n {
		line, err := c.r.ReadString('\n')
		if err != nil {
			break // the rest were not read before the connection closed
		}
		if !strings.HasPrefix(line, fmt.Sprintf(`{"id":%d,`, i)) {
			t.Fatalf("reply %d out of order: %s", i, line)
		}
		switch {
		case strings.Contains(line, `"ok":true`):
			acked++
		case strings.Contains(line, `"shutting_down"`):
		default:
			t.Fatalf("reply %s", line)
		}
	}
	if code := d.wait(); code != 0 {
		t.Fatalf("exit code %d\n%s", code, d.stderr.String())
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Errorf("socket file left after a clean shutdown: %v", err)
	}
	out, stderr, code := runCLI(t, d, "check", "--json")
	if code != 0 || !strings.Contains(out, fmt.Sprintf(`"events":%d`, acked)) {
		t.Errorf("check after shutdown: %s %s (acked %d)", out, stderr, acked)
	}
	t.Logf("%d of %d writes acknowledged before the shutdown", acked, n)
}

// TestServe_Reload: an edit of the config file and SIGHUP apply live
// settings; an invalid file or a restart-only change keeps the running
// configuration.
func TestServe_Reload(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "liminald.toml")
	writeConfig := func(body string) {
		tmp := config + ".tmp"
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, config); err != nil { // as editors save
			t.Fatal(err)
		}
	}
	writeConfig("max_line_bytes = 2048\n")
	d := startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"), "--config", config)
	limit := func() string {
		_, m := dialRaw(t, d.socket).do(`{"op":"hello"}`)
		limits, _ := m["limits"].(map[string]any)
		return fmt.Sprint(limits["max_line_bytes"])
	}
	if got := limit(); got != "2048" {
		t.Fatalf("max_line_bytes = %s, want 2048", got)
	}

	writeConfig("max_line_bytes = 4096\n")
	d.expectNotify("RELOADING=1")
	d.expectNotify("READY=1")
	if got := limit(); got != "4096" {
		t.Errorf("after editing the file: max_line_bytes = %s, want 4096", got)
	}

	os.WriteFile(config, []byte("max_line_bytes = 8192\n"), 0o600)
	d.expectNotify("RELOADING=1") // the in-place write itself
	d.expectNotify("READY=1")
	d.signal(syscall.SIGHUP)
	d.expectNotify("RELOADING=1")
	d.expectNotify("READY=1")
	if got := limit(); got != "8192" {
		t.Errorf("after SIGHUP: max_line_bytes = %s, want 8192", got)
	}

	writeConfig("max_line_bytes = \"lots\"\n")
	d.expectNotify("RELOADING=1")
	d.expectNotify("READY=1")
	writeConfig("max_line_bytes = 1024\nsync = \"normal\"\n")
	d.expectNotify("RELOADING=1")
	d.expectNotify("READY=1")
	if got := limit(); got != "8192" {
		t.Errorf("after a refused reload: max_line_bytes = %s, want 8192 kept", got)
	}
	// The daemon logs a refusal before it says READY=1, but its stderr
	// reaches d.stderr through a pipe and a goroutine: wait for the line.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(d.stderr.String(), "settings=[sync]") && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	logs := d.stderr.String()
	if !strings.Contains(logs, "invalid configuration") || !strings.Contains(logs, "settings=[sync]") {
		t.Errorf("refused reloads are not reported by name:\n%s", logs)
	}
}

// TestServe_SocketActivation: a socket passed by systemd (LISTEN_FDS) is
// served.
func TestServe_SocketActivation(t *testing.T) {
	dir := t.TempDir()
	socket := filepath.Join(dir, "activated.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := l.File()
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // the daemon serves the duplicate in f
	d := newDaemonProc(t, dir, filepath.Join(dir, "unused.sock"), filepath.Join(dir, "db"))
	// systemd sets LISTEN_PID to the daemon's pid: exec keeps the shell's.
	env := d.cmd.Env
	d.cmd = exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, binary, "serve", "--db", d.db, "--socket", d.socket)
	d.cmd.Env = env
	d.cmd.ExtraFiles = []*os.File{f}
	d.cmd.Stderr = d.stderr
	d.start()
	f.Close()
	if line, _ := dialRaw(t, socket).do(`{"op":"ping"}`); !strings.Contains(line, `"ok":true`) {
		t.Errorf("ping on the activated socket = %s", line)
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Errorf("an activated daemon created its own socket too: %v", err)
	}
}

// TestServe_Logs: each connection's peer uid and pid are logged at debug
// level, and payloads (outputs, error texts) are never logged above it.
func TestServe_Logs(t *testing.T) {
	const secret = "s3cret-payload"
	write := func(d *daemonProc) {
		c := dialRaw(t, d.socket)
		for _, req := range []string{
			`{"op":"receive","conversation":"c","message_id":"m"}`,
			`{"op":"step","conversation":"c","message_id":"m","step_index":0,"output":"` + base64.StdEncoding.EncodeToString([]byte(secret)) + `"}`,
			`{"op":"step","conversation":"c","message_id":"m","step_index":0,"output":""}`, // step_conflict
			`{"op":"fail","conversation":"c","message_id":"m","error":"` + secret + `"}`,
		} {
			c.do(req)
		}
		d.stop()
	}
	info := startDaemon(t)
	write(info)
	if logs := info.stderr.String(); strings.Contains(logs, secret) || strings.Contains(logs, base64.StdEncoding.EncodeToString([]byte(secret))) {
		t.Errorf("a payload is logged at info level:\n%s", logs)
	}
	debug := startDaemon(t, "--log-level", "debug")
	write(debug)
	want := fmt.Sprintf("uid=%d", os.Getuid())
	if logs := debug.stderr.String(); !strings.Contains(logs, want) || !strings.Contains(logs, "pid=") {
		t.Errorf("connections are not logged with their peer uid and pid at debug level:\n%s", logs)
	}
}
