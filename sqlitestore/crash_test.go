package sqlitestore

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"

	"liminald/conversation"
)

// The crash test runs a child process (this test binary, with crashDBEnv
// set) that writes under load and prints each write the store acknowledged.
// The parent kills it with SIGKILL at a random moment, reopens the database
// and checks that every acknowledged write is there.
const (
	crashDBEnv  = "LIMINALD_CRASH_DB"
	crashRunEnv = "LIMINALD_CRASH_RUN"
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashDBEnv); path != "" {
		crashChild(path, os.Getenv(crashRunEnv))
		return
	}
	os.Exit(m.Run())
}

// crashChild writes lifecycles from 16 goroutines until it is killed.
func crashChild(path, run string) {
	s, err := Open(path, Options{})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var out sync.Mutex
	ack := func(c conversation.Command, o conversation.Outcome) {
		out.Lock()
		defer out.Unlock()
		// One write(2) per line, straight to the pipe: once it returns, the
		// parent can read the line even if this process dies next.
		fmt.Fprintf(os.Stdout, "ack %s %s %d %d %t\n", c.Conversation, c.MessageID, c.Op, o.Seq, o.Append)
	}
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conv := fmt.Sprintf("c%d", w%4)
			for i := 0; ; i++ {
				m := fmt.Sprintf("r%s-w%d-m%d", run, w, i)
				for _, c := range lifecycle(conv, m) {
					o, err := s.Write(context.Background(), c)
					if err != nil {
						fmt.Println("write:", err)
						os.Exit(2)
					}
					ack(c, o)
				}
			}
		}()
	}
	wg.Wait()
}

// lifecycle returns the commands that take message m of conv from receive
// to finish, with two steps whose outputs name them.
func lifecycle(conv, m string) []conversation.Command {
	c := func(op conversation.Op) conversation.Command {
		return conversation.Command{Op: op, Conversation: conv, MessageID: m, ExpectedSeq: conversation.NoExpectedSeq}
	}
	s0, s1 := c(conversation.OpStep), c(conversation.OpStep)
	s0.Output = []byte(m + "/0")
	s1.StepIndex, s1.Output = 1, []byte(m+"/1")
	return []conversation.Command{c(conversation.OpReceive), c(conversation.OpStart), s0, s1, c(conversation.OpFinish)}
}

type ackLine struct {
	conv, msg string
	op        conversation.Op
	seq       int64
	appended  bool
}

func TestStore_Crash(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes; skipped in -short")
	}
	path := filepath.Join(t.TempDir(), "crash.db")
	kills := 5
	var acked []ackLine
	for run := range kills {
		child := exec.Command(os.Args[0])
		child.Env = append(os.Environ(), crashDBEnv+"="+path, crashRunEnv+"="+strconv.Itoa(run))
		stdout, err := child.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		child.Stderr = os.Stderr
		if err := child.Start(); err != nil {
			t.Fatal(err)
		}
		killAt := 1 + rand.IntN(400)
		sc := bufio.NewScanner(stdout)
		seen := 0
		for sc.Scan() {
			line := sc.Text()
			a, err := parseAck(line)
			if err != nil {
				t.Fatalf("child: %s", line)
			}
			acked = append(acked, a)
			if seen++; seen == killAt {
				if err := child.Process.Signal(syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
				// Keep reading: lines the child wrote before it died are acks too.
			}
		}
		child.Wait()
		if seen < killAt {
			t.Fatalf("run %d: child ended after %d acks, before the kill at %d", run, seen, killAt)
		}
		verifyAcked(t, path, acked)
	}
	t.Logf("%d kills, %d acknowledged writes verified", kills, len(acked))
}

func parseAck(line string) (ackLine, error) {
	f := strings.Fields(line)
	if len(f) != 6 || f[0] != "ack" {
		return ackLine{}, fmt.Errorf("not an ack: %q", line)
	}
	op, err1 := strconv.Atoi(f[3])
	seq, err2 := strconv.ParseInt(f[4], 10, 64)
	appended, err3 := strconv.ParseBool(f[5])
	if err1 != nil || err2 != nil || err3 != nil {
		return ackLine{}, fmt.Errorf("not an ack: %q", line)
	}
	return ackLine{conv: f[1], msg: f[2], op: conversation.Op(op), seq: seq, appended: appended}, nil
}

// verifyAcked reopens the database after a kill: it must pass Check, and
// every acknowledged append must be stored at its seq with its content.
func verifyAcked(t *testing.T, path string, acked []ackLine) {
	t.Helper()
	mustCheck(t, path)
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer s.Close()
	logs := map[string][]conversation.Event{}
	for _, a := range acked {
		if !a.appended {
			continue
		}
		events, ok := logs[a.conv]
		if !ok {
			events = mustEvents(t, s, a.conv)
			logs[a.conv] = events
		}
		if a.seq >= int64(len(events)) {
			t.Fatalf("acknowledged %v of %s at seq %d is lost: %s has %d events", a.op, a.msg, a.seq, a.conv, len(events))
		}
		e := events[a.seq]
		want := string(e.Output)
		if e.Type == conversation.StepCompleted {
			want = fmt.Sprintf("%s/%d", a.msg, e.StepIndex)
		}
		if e.MessageID != a.msg || conversation.Op(e.Type) != a.op || string(e.Output) != want {
			t.Fatalf("acknowledged %v of %s at %s seq %d, stored %+v", a.op, a.msg, a.conv, a.seq, e)
		}
		if d, err := s.Decide(context.Background(), a.conv, a.msg, conversation.Delivery{}); err != nil || d.Action == conversation.Start {
			t.Fatalf("Decide(%s, %s) after restart = %+v, %v; want skip or resume", a.conv, a.msg, d, err)
		}
	}
}
