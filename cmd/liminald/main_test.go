package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"liminald/internal/daemontest"
)

// The end-to-end tests run the real liminald binary, built once by
// TestMain, with its socket and database in t.TempDir(). Readiness is the
// daemon's own READY=1 on a NOTIFY_SOCKET the test listens on, never a
// sleep.

var binary string

func TestMain(m *testing.M) { daemontest.Main(m, &binary) }

// cleanEnv is the environment a test gives the processes it starts.
var cleanEnv = daemontest.Env

// daemonProc is a running liminald serve.
type daemonProc struct {
	t      *testing.T
	dir    string
	socket string
	db     string
	cmd    *exec.Cmd
	stderr *daemontest.Buffer
	notify *daemontest.Notifier // the NOTIFY_SOCKET the daemon reports to
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// startDaemon starts liminald serve with args (after serve) in a new
// directory, and waits for READY=1. The daemon is stopped at cleanup.
func startDaemon(t *testing.T, args ...string) *daemonProc {
	t.Helper()
	dir := t.TempDir()
	return startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db.sqlite"), args...)
}

// startWithConfig starts liminald serve, as startDaemon does, reading the
// configuration file it writes with content, and returns the daemon and
// the file's path.
func startWithConfig(t *testing.T, content string) (*daemonProc, string) {
	t.Helper()
	dir := t.TempDir()
	config := filepath.Join(dir, "liminald.toml")
	if err := os.WriteFile(config, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"), "--config", config), config
}

// rewriteConfig writes content to d's configuration file, config, and
// waits for the daemon to reload it: it reloads when it sees the edit,
// then a SIGHUP makes it reload again, as the edit may have been seen
// before it was whole.
func (d *daemonProc) rewriteConfig(config, content string) {
	d.t.Helper()
	if err := os.WriteFile(config, []byte(content), 0o600); err != nil {
		d.t.Fatal(err)
	}
	d.expectNotify("RELOADING=1")
	d.expectNotify("READY=1")
	d.signal(syscall.SIGHUP)
	d.expectNotify("RELOADING=1")
	d.expectNotify("READY=1")
}

func startDaemonIn(t *testing.T, dir, socket, db string, args ...string) *daemonProc {
	t.Helper()
	d := newDaemonProc(t, dir, socket, db, args...)
	d.start()
	return d
}

func newDaemonProc(t *testing.T, dir, socket, db string, args ...string) *daemonProc {
	t.Helper()
	nl, err := daemontest.ListenNotify(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nl.Close() })
	d := &daemonProc{t: t, dir: dir, socket: socket, db: db, stderr: &daemontest.Buffer{}, notify: nl, exited: make(chan struct{})}
	d.cmd = exec.Command(binary, append([]string{"serve", "--socket", socket, "--db", db}, args...)...)
	d.cmd.Env = append(cleanEnv(), "NOTIFY_SOCKET="+nl.Path, "HOME="+dir)
	d.cmd.Stderr = d.stderr
	return d
}

// start starts d.cmd, has it stopped at cleanup, and waits for READY=1.
func (d *daemonProc) start() {
	d.t.Helper()
	if err := d.cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	d.t.Cleanup(d.stop)
	d.expectNotify("READY=1")
}

// expectNotify waits for the next datagram the daemon sends to
// NOTIFY_SOCKET and checks it starts with want.
func (d *daemonProc) expectNotify(want string) {
	d.t.Helper()
	got, err := d.notify.Next(20 * time.Second)
	if err != nil {
		d.t.Fatalf("waiting for %q on NOTIFY_SOCKET: %v\nstderr:\n%s", want, err, d.stderr.String())
	}
	if !strings.HasPrefix(got, want) {
		d.t.Fatalf("NOTIFY_SOCKET got %q, want %q", got, want)
	}
}

func (d *daemonProc) signal(sig syscall.Signal) {
	d.t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		d.t.Fatal(err)
	}
}

// wait waits for the daemon to exit and returns its exit code.
func (d *daemonProc) wait() int {
	d.t.Helper()
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.t.Fatalf("daemon did not exit\nstderr:\n%s", d.stderr.String())
	}
	if d.err != nil {
		if ee, ok := d.err.(*exec.ExitError); ok {
			return ee.ExitCode()
		}
		d.t.Fatal(d.err)
	}
	return 0
}

func (d *daemonProc) stop() {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
	}
}

// rawConn is a raw connection to the daemon's socket, speaking lines. Its
// send, reply and do end the test on a failure, so only the test's
// goroutine may call them, on a connection from dialRaw; another goroutine
// dials with dialSocket and uses exchange and readReply, which return
// errors.
type rawConn struct {
	t  *testing.T // nil for a connection from dialSocket
	nc net.Conn
	r  *bufio.Reader
}

// dialSocket connects to socket, for 30 seconds at most. The caller closes
// c.nc. Any goroutine may call it.
func dialSocket(socket string) (*rawConn, error) {
	nc, err := net.Dial("unix", socket)
	if err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	return &rawConn{nc: nc, r: bufio.NewReaderSize(nc, 1<<16)}, nil
}

// dialRaw connects to socket for the test's goroutine, and closes the
// connection at cleanup.
func dialRaw(t *testing.T, socket string) *rawConn {
	t.Helper()
	c, err := dialSocket(socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.nc.Close() })
	c.t = t
	return c
}

func (c *rawConn) send(line string) {
	c.t.Helper()
	if _, err := c.nc.Write([]byte(line)); err != nil {
		c.t.Fatal(err)
	}
}

// readReply reads one line and decodes it. Any goroutine may call it.
func (c *rawConn) readReply() (string, map[string]any, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", nil, fmt.Errorf("read reply: %w (got %q)", err, line)
	}
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(line))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		return "", nil, fmt.Errorf("reply %q is not a JSON object: %w", line, err)
	}
	return strings.TrimSuffix(line, "\n"), m, nil
}

// exchange sends one request line and returns its reply. Any goroutine may
// call it.
func (c *rawConn) exchange(line string) (string, map[string]any, error) {
	if _, err := c.nc.Write([]byte(line + "\n")); err != nil {
		return "", nil, err
	}
	return c.readReply()
}

// reply reads one line and decodes it.
func (c *rawConn) reply() (string, map[string]any) {
	c.t.Helper()
	line, m, err := c.readReply()
	if err != nil {
		c.t.Fatal(err)
	}
	return line, m
}

// do sends one request line and returns its reply.
func (c *rawConn) do(line string) (string, map[string]any) {
	c.t.Helper()
	reply, m, err := c.exchange(line)
	if err != nil {
		c.t.Fatal(err)
	}
	return reply, m
}

// doAll sends each request line in turn, and ends the test unless each
// succeeds.
func (c *rawConn) doAll(reqs ...string) {
	c.t.Helper()
	for _, req := range reqs {
		if line, m := c.do(req); m["ok"] != true {
			c.t.Fatalf("%s: %s", req, line)
		}
	}
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// runCLI runs a liminald client or offline command against d and returns its
// stdout, stderr and exit code.
func runCLI(t *testing.T, d *daemonProc, args ...string) (string, string, int) {
	t.Helper()
	sub, rest := args[0], args[1:]
	full := []string{sub, "--socket", d.socket}
	if sub == "check" || sub == "export" || sub == "import" || sub == "backup" {
		full = []string{sub, "--db", d.db}
	}
	cmd := exec.Command(binary, append(full, rest...)...)
	cmd.Env = append(cleanEnv(), "HOME="+d.dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}
