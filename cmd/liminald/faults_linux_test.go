package main

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"liminald/internal/testenv"
)

// The fault tests run the real daemon against faults of its environment:
// its filesystem, its clients and its process limits.

// TestFaults_ReadOnlyDatabase turns the database's filesystem read-only
// under the running daemon, the way the kernel does after an I/O error
// (ext4 with errors=remount-ro, on a loop device, its error triggered
// through sysfs): writes get a retryable unavailable, reads keep working,
// the daemon stops cleanly, and once the filesystem is repaired a restarted
// daemon has every acknowledged write and takes writes again. (Linux
// refuses a plain remount read-only while SQLite holds files open for
// writing, so the error path is the way a filesystem turns read-only under
// a running daemon.) Needs root, a loop device, losetup, mkfs.ext4 and
// e2fsck.
func TestFaults_ReadOnlyDatabase(t *testing.T) {
	testenv.NeedRoot(t, "mounting a filesystem on a loop device")
	testenv.NeedTools(t, "losetup", "mkfs.ext4", "e2fsck")
	dir := t.TempDir()
	img, mnt := filepath.Join(dir, "fs.img"), filepath.Join(dir, "fs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if f, err := os.Create(img); err != nil || f.Truncate(32<<20) != nil || f.Close() != nil {
		t.Fatalf("create the image: %v", err)
	}
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", img).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	out, err := exec.Command("losetup", "-f", "--show", img).CombinedOutput()
	if err != nil {
		testenv.Missing(t, "a free loop device: losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", loop).Run() })
	mount := func() error { return syscall.Mount(loop, mnt, "ext4", 0, "errors=remount-ro") }
	if err := mount(); err != nil {
		testenv.Missing(t, "mounting ext4 from %s: %v", loop, err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })

	socket, db := filepath.Join(dir, "s.sock"), filepath.Join(mnt, "db")
	d := startDaemonIn(t, dir, socket, db)
	c := dialRaw(t, d.socket)
	for i := range 5 {
		if line, m := c.do(fmt.Sprintf(`{"op":"receive","conversation":"c","message_id":"m%d"}`, i)); m["ok"] != true {
			t.Fatalf("receive before the fault: %s", line)
		}
	}
	trigger := filepath.Join("/sys/fs/ext4", filepath.Base(loop), "trigger_fs_error")
	if err := os.WriteFile(trigger, []byte("1"), 0o200); err != nil {
		testenv.Missing(t, "ext4's trigger_fs_error in sysfs: %v", err)
	}
	for i := range 3 {
		line, m := c.do(fmt.Sprintf(`{"op":"receive","conversation":"c","message_id":"late%d"}`, i))
		if errCode(m) != "unavailable" || !strings.Contains(line, `"retryable":true`) {
			t.Errorf("write on the read-only filesystem: %s, want unavailable, retryable", line)
		}
	}
	for _, req := range []string{
		`{"op":"decide","conversation":"c","message_id":"m0"}`,
		`{"op":"state","conversation":"c"}`,
		`{"op":"read","conversation":"c"}`,
	} {
		if line, m := c.do(req); m["ok"] != true {
			t.Errorf("read on the read-only filesystem: %s -> %s", req, line)
		}
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(); code != 0 {
		t.Errorf("exit code %d after SIGTERM on a read-only filesystem\n%s", code, d.stderr.String())
	}

	// Repaired, the filesystem takes the daemon again: every acknowledged
	// write is there and writes work.
	if err := syscall.Unmount(mnt, 0); err != nil {
		t.Fatal(err)
	}
	exec.Command("e2fsck", "-fy", loop).Run() // exit 1 means "errors corrected"
	if err := mount(); err != nil {
		t.Fatalf("mount %s again after e2fsck: %v", loop, err)
	}
	d2 := startDaemonIn(t, dir, socket, db)
	c2 := dialRaw(t, d2.socket)
	line, m := c2.do(`{"op":"state","conversation":"c"}`)
	if counts, _ := m["messages"].(map[string]any); fmt.Sprint(counts["received"]) != "5" {
		t.Errorf("after repair: %s, want the 5 acknowledged receives", line)
	}
	if line, m := c2.do(`{"op":"receive","conversation":"c","message_id":"after"}`); m["ok"] != true {
		t.Errorf("write after repair: %s", line)
	}
	d2.stop()
	if out, stderr, code := runCLI(t, d2, "check"); code != 0 {
		t.Errorf("check after repair: %s %s", out, stderr)
	}
}

// TestFaults_DatabaseDirectoryRemoved removes the database's directory
// under the running daemon: it neither crashes nor hangs, every write it
// acknowledged is still served, and it shuts down cleanly.
func TestFaults_DatabaseDirectoryRemoved(t *testing.T) {
	dir := t.TempDir()
	dataDir := filepath.Join(dir, "data")
	d := startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dataDir, "db"))
	c := dialRaw(t, d.socket)
	acked := map[string]bool{}
	write := func(msg string) string {
		line, m := c.do(fmt.Sprintf(`{"op":"receive","conversation":"c","message_id":%q}`, msg))
		switch {
		case m["ok"] == true:
			acked[msg] = true
		case errCode(m) != "unavailable":
			t.Errorf("write %s: %s, want ok or unavailable", msg, line)
		}
		return line
	}
	for i := range 10 {
		write(fmt.Sprintf("before-%d", i))
	}
	if err := os.RemoveAll(dataDir); err != nil {
		t.Fatal(err)
	}
	var after []string
	for i := range 10 {
		after = append(after, write(fmt.Sprintf("after-%d", i)))
	}
	t.Logf("writes after the directory went: first %s, last %s", after[0], after[len(after)-1])
	if line, _ := c.do(`{"id":1,"op":"ping"}`); line != `{"id":1,"ok":true}` {
		t.Errorf("ping: %s", line)
	}
	line, m := c.do(`{"op":"read","conversation":"c"}`)
	if m["ok"] != true {
		t.Fatalf("read: %s", line)
	}
	for msg := range acked {
		if !strings.Contains(line, fmt.Sprintf(`"message_id":%q`, msg)) {
			t.Errorf("acknowledged write %s is not served any more", msg)
		}
	}
	t.Logf("%d writes acknowledged; stats: %s", len(acked), func() string { l, _ := c.do(`{"op":"stats"}`); return l }())
	d.signal(syscall.SIGTERM)
	d.expectNotify("STOPPING=1")
	if code := d.wait(); code != 0 {
		t.Errorf("exit code %d after SIGTERM\n%s", code, d.stderr.String())
	}
}

// TestFaults_ClientStopsMidLine: a client that sends half a line and goes
// silent holds up nobody, and is answered once it completes the line.
func TestFaults_ClientStopsMidLine(t *testing.T) {
	d := startDaemon(t)
	stuck := dialRaw(t, d.socket)
	stuck.send(`{"id":"half","op":"rec`)
	for i := range 20 {
		c := dialRaw(t, d.socket)
		if line, m := c.do(fmt.Sprintf(`{"op":"receive","conversation":"c","message_id":"m%d"}`, i)); m["ok"] != true {
			t.Fatalf("another client: %s", line)
		}
	}
	stuck.send(`eive","conversation":"c","message_id":"late"}` + "\n")
	if line, m := stuck.reply(); m["ok"] != true || !strings.HasPrefix(line, `{"id":"half",`) || !strings.Contains(line, `"seq":20`) {
		t.Errorf("completed half line: %s, want ok at seq 20", line)
	}
}

// TestFaults_ClientNeverReads: a client that pipelines requests for far
// more bytes than the daemon may buffer and never reads them holds up
// nobody, and the daemon's memory stays bounded.
func TestFaults_ClientNeverReads(t *testing.T) {
	d := startDaemon(t)
	w := dialRaw(t, d.socket)
	// 32 events of 512 KiB in each of 4 conversations: 64 MiB of log.
	out := base64.StdEncoding.EncodeToString(make([]byte, 512<<10))
	const convs, steps = 4, 32
	for cv := range convs {
		if line, m := w.do(fmt.Sprintf(`{"op":"receive","conversation":"c%d","message_id":"m"}`, cv)); m["ok"] != true {
			t.Fatalf("receive: %s", line)
		}
		w.do(fmt.Sprintf(`{"op":"start","conversation":"c%d","message_id":"m"}`, cv))
		for i := range steps {
			if line, m := w.do(fmt.Sprintf(`{"op":"step","conversation":"c%d","message_id":"m","step_index":%d,"output":%q}`, cv, i, out)); m["ok"] != true {
				t.Fatalf("step: %.200s", line)
			}
		}
	}
	rssBefore := rssMiB(t, d)

	// The stuck client subscribes to the whole log 100 times over, and
	// pipelines reads of two events each, and reads nothing. (Reads of
	// 10000 events are bounded by design at MaxInflight replies of about
	// 4 MiB each, some 256 MiB of buffers per connection, which is more
	// than this test's bound once garbage collection is counted.)
	stuck, err := net.Dial("unix", d.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	var asked int64
	var b strings.Builder
	for i := range 100 {
		fmt.Fprintf(&b, `{"op":"read","conversation":"c%d","limit":2}`+"\n", i%convs)
		fmt.Fprintf(&b, `{"op":"subscribe","from_pos":0}`+"\n")
		asked += (2 + convs*steps) * int64(len(out))
	}
	sent := make(chan error, 1)
	go func() {
		stuck.SetWriteDeadline(time.Now().Add(20 * time.Second))
		_, err := stuck.Write([]byte(b.String()))
		sent <- err
	}()

	// Others are served meanwhile, and the daemon's memory stays bounded.
	peak := rssBefore
	c := dialRaw(t, d.socket)
	deadline := time.Now().Add(3 * time.Second)
	for i := 0; time.Now().Before(deadline) || i < 50; i++ {
		if line, m := c.do(fmt.Sprintf(`{"op":"receive","conversation":"other","message_id":"m%d"}`, i)); m["ok"] != true {
			t.Fatalf("another client while one does not read: %s", line)
		}
		if line, m := c.do(`{"op":"read","conversation":"c0","from_seq":10,"limit":1}`); m["ok"] != true || !strings.Contains(line, `"seq":10`) {
			t.Fatalf("another client's read: %.200s", line)
		}
		peak = max(peak, rssMiB(t, d))
	}
	select {
	case err := <-sent:
		t.Logf("the stuck client's requests were all written (err %v)", err)
	default:
		t.Logf("the stuck client's requests are not all read by the daemon (back-pressure)")
	}
	_, st := c.do(`{"op":"stats"}`)
	t.Logf("subscribers: %v", st["subscribers"])
	t.Logf("daemon RSS: %d MiB before, %d MiB peak while a client asked for %d MiB and read nothing", rssBefore, peak, asked>>20)
	if peak > 300 {
		t.Errorf("daemon RSS peaked at %d MiB, want at most 300 MiB", peak)
	}
}

// rssMiB is the daemon's resident set size in MiB.
func rssMiB(t *testing.T, d *daemonProc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb >> 10
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// TestFaults_ThousandConnections: 1000 concurrent connections are each
// served.
func TestFaults_ThousandConnections(t *testing.T) {
	const n = 1000
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < n+100 {
		// Up to the hard limit anyone may go; above it only root.
		want := syscall.Rlimit{Cur: min(max(lim.Max, n+100), n+200), Max: max(lim.Max, n+100)}
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			testenv.Missing(t, "%d file descriptors (RLIMIT_NOFILE %d, hard limit %d; root may raise it): %v", n+100, lim.Cur, lim.Max, err)
		}
		t.Cleanup(func() { syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim) })
	}
	d := startDaemon(t, "--max-connections", "2000")
	conns := make([]*rawConn, n)
	for i := range conns {
		conns[i] = dialRaw(t, d.socket)
	}
	for i, c := range conns {
		c.send(fmt.Sprintf(`{"id":%d,"op":"ping"}`+"\n", i))
	}
	for i, c := range conns {
		if line, _ := c.reply(); line != fmt.Sprintf(`{"id":%d,"ok":true}`, i) {
			t.Fatalf("connection %d: %s", i, line)
		}
	}
	if line, m := conns[0].do(`{"op":"stats"}`); fmt.Sprint(m["connections"]) != strconv.Itoa(n) {
		t.Errorf("stats with %d connections open: %s", n, line)
	}
}

// TestFaults_FileDescriptorLimit: a daemon out of file descriptors keeps
// serving its connections, does not spin, and accepts again once some
// close.
func TestFaults_FileDescriptorLimit(t *testing.T) {
	dir := t.TempDir()
	d := newDaemonProc(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(dir, "db"))
	env := d.cmd.Env
	d.cmd = exec.Command("/bin/sh", "-c", `ulimit -n 64 && exec "$0" "$@"`, binary, "serve", "--socket", d.socket, "--db", d.db)
	d.cmd.Env = env
	d.cmd.Stderr = d.stderr
	d.start()

	// Open connections until one is not accepted.
	var served []net.Conn
	var pending *bufio.Reader
	var pendingConn net.Conn
	for len(served) < 64 && pending == nil {
		nc, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { nc.Close() })
		r := bufio.NewReader(nc)
		nc.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := nc.Write([]byte(`{"op":"ping"}` + "\n")); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		switch {
		case err == nil && strings.Contains(line, `"ok":true`):
			served = append(served, nc)
		case errors.Is(err, os.ErrDeadlineExceeded):
			pending, pendingConn = r, nc
		default:
			t.Fatalf("connection %d: %q %v", len(served), line, err)
		}
	}
	if pending == nil {
		t.Fatalf("%d connections served under ulimit -n 64", len(served))
	}
	t.Logf("%d connections served, the next one waits to be accepted", len(served))
	if !strings.Contains(d.stderr.String(), "accept failed") {
		t.Errorf("no accept failure logged:\n%s", d.stderr.String())
	}

	// The daemon does not spin while it cannot accept: measure its CPU time
	// over a second of waiting on the pending connection.
	cpu0 := cpuTicks(t, d)
	pendingConn.SetReadDeadline(time.Now().Add(time.Second))
	if line, err := pending.ReadString('\n'); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("pending connection answered with every descriptor in use: %q %v", line, err)
	}
	if used := cpuTicks(t, d) - cpu0; used > 30 {
		t.Errorf("the daemon used %d ticks of CPU in a second while it could not accept", used)
	}
	for i, nc := range served {
		nc.SetDeadline(time.Now().Add(5 * time.Second))
		nc.Write([]byte(`{"op":"ping"}` + "\n"))
		if line, err := bufio.NewReader(nc).ReadString('\n'); err != nil || !strings.Contains(line, `"ok":true`) {
			t.Fatalf("served connection %d with descriptors exhausted: %q %v", i, line, err)
		}
	}

	// Closing some lets the pending one in.
	for _, nc := range served[:4] {
		nc.Close()
	}
	pendingConn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, err := pending.ReadString('\n'); err != nil || !strings.Contains(line, `"ok":true`) {
		t.Fatalf("pending connection after others closed: %q %v\n%s", line, err, d.stderr.String())
	}
	if line, _ := dialRaw(t, d.socket).do(`{"id":1,"op":"ping"}`); line != `{"id":1,"ok":true}` {
		t.Errorf("new connection: %s", line)
	}
	d.signal(syscall.SIGTERM)
	if code := d.wait(); code != 0 {
		t.Errorf("exit code %d\n%s", code, d.stderr.String())
	}
}

// cpuTicks is the daemon's user and system CPU time, in clock ticks.
func cpuTicks(t *testing.T, d *daemonProc) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return utime + stime
}

// TestFaults_DiskFullUnderLoad fills a real filesystem (a tmpfs, so it needs
// root) under concurrent clients: their writes get unavailable (retryable),
// reads keep working, nothing acknowledged is lost, and once space is freed
// the refused writes succeed when retried, with no restart.
func TestFaults_DiskFullUnderLoad(t *testing.T) {
	testenv.NeedRoot(t, "mounting a tmpfs")
	dir := t.TempDir()
	mnt := filepath.Join(dir, "fs")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mnt, "tmpfs", 0, "size=6m"); err != nil {
		testenv.Missing(t, "mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(mnt, syscall.MNT_DETACH) })
	filler := filepath.Join(mnt, "filler")
	if err := os.WriteFile(filler, make([]byte, 3<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemonIn(t, dir, filepath.Join(dir, "s.sock"), filepath.Join(mnt, "db"))
	output := strings.Repeat("QUFB", 1024) // 3 KiB of "AAA"
	const clients = 8
	type result struct {
		acks    []ackedWrite
		refused string // the request that got unavailable
		err     error
	}
	results := make([]result, clients)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			r := &results[w]
			r.acks, r.refused, r.err = fillDisk(d.socket, fmt.Sprintf("c%d", w), output)
		})
	}
	wg.Wait()
	var acks []ackedWrite
	for w, r := range results {
		if r.err != nil {
			t.Errorf("client %d: %v", w, r.err)
		}
		acks = append(acks, r.acks...)
	}
	if t.Failed() {
		return
	}
	for w, r := range results {
		if r.refused == "" {
			t.Fatalf("client %d never saw the disk full", w)
		}
	}
	c := dialRaw(t, d.socket)
	if line, r := c.do(`{"op":"decide","conversation":"c0","message_id":"m0"}`); r["ok"] != true {
		t.Errorf("decide while the disk is full: %s", line)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	for w, r := range results {
		if line, reply := c.do(r.refused); reply["ok"] != true {
			t.Errorf("client %d's refused write, retried after freeing space: %s", w, line)
		}
	}
	// Every acknowledged write is in its conversation's log at its seq.
	for _, a := range acks {
		line, r := c.do(fmt.Sprintf(`{"op":"read","conversation":%q,"from_seq":%s,"limit":1}`, a.conv, a.seq))
		events, _ := r["events"].([]any)
		if len(events) != 1 {
			t.Fatalf("acknowledged %s at seq %s lost: %s", a.line, a.seq, line)
		}
		e, _ := events[0].(map[string]any)
		if !strings.Contains(a.line, fmt.Sprintf(`"message_id":%q`, e["message_id"])) {
			t.Fatalf("seq %s of %s holds %v, acknowledged %s", a.seq, a.conv, e, a.line)
		}
	}
	t.Logf("%d acknowledged writes verified after the disk filled under %d clients", len(acks), clients)
	d.stop()
	if out, stderr, code := runCLI(t, d, "check"); code != 0 {
		t.Errorf("check after the disk filled: %s %s", out, stderr)
	}
}

// ackedWrite is a write the daemon acknowledged at seq of conv.
type ackedWrite struct {
	conv string
	seq  string
	line string
}

// fillDisk writes messages to conv on a connection of its own, each
// received, started, given a step with output and finished, until a write
// is refused as unavailable. It returns the writes acknowledged with a seq
// and the refused request, which is "" if none was refused in 10000
// messages. It runs on a goroutine of its own, so it returns an error for
// any other failure, or a refusal that is not retryable, instead of
// failing the test.
func fillDisk(socket, conv, output string) (acks []ackedWrite, refused string, err error) {
	c, err := dialSocket(socket)
	if err != nil {
		return nil, "", err
	}
	defer c.nc.Close()
	for i := range 10000 {
		m := fmt.Sprintf("m%d", i)
		for _, req := range []string{
			fmt.Sprintf(`{"op":"receive","conversation":%q,"message_id":%q}`, conv, m),
			fmt.Sprintf(`{"op":"start","conversation":%q,"message_id":%q}`, conv, m),
			fmt.Sprintf(`{"op":"step","conversation":%q,"message_id":%q,"step_index":0,"output":%q}`, conv, m, output),
			fmt.Sprintf(`{"op":"finish","conversation":%q,"message_id":%q}`, conv, m),
		} {
			line, r, err := c.exchange(req)
			switch {
			case err != nil:
				return acks, "", err
			case errCode(r) == "unavailable" && !strings.Contains(line, `"retryable":true`):
				return acks, req, fmt.Errorf("full disk: %s, want retryable", line)
			case errCode(r) == "unavailable":
				return acks, req, nil
			case r["ok"] != true:
				return acks, "", fmt.Errorf("%s: %s", req, line)
			}
			if seq, ok := r["seq"]; ok {
				acks = append(acks, ackedWrite{conv, fmt.Sprint(seq), req})
			}
		}
	}
	return acks, "", nil
}
