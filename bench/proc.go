package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of CPU times in
// /proc/<pid>/stat; it is 100 on every Linux this harness runs on.
const clockTicks = 100

// procWatch samples a server's process tree (the process and its
// descendants) until closed, keeping the CPU time and the peak memory.
type procWatch struct {
	pid  int
	stop chan struct{}
	done chan struct{}

	mu   sync.Mutex
	last Usage
}

// watchProcess starts sampling the tree rooted at pid every 250 ms: the
// peak of a process alone is the kernel's own (VmHWM), and a tree's memory
// moves slowly.
func watchProcess(pid int) *procWatch {
	w := &procWatch{pid: pid, stop: make(chan struct{}), done: make(chan struct{})}
	w.sample()
	go func() {
		defer close(w.done)
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C:
				w.sample()
			}
		}
	}()
	return w
}

// Usage samples once more and returns the figures so far.
func (w *procWatch) Usage() Usage {
	w.sample()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.last
}

// Close stops sampling; call it before the process is stopped so that the
// figures are those of the run, not of the shutdown.
func (w *procWatch) Close() {
	close(w.stop)
	<-w.done
}

func (w *procWatch) sample() {
	u, err := treeUsage(w.pid)
	if err != nil {
		return // the process is gone: keep the last figures
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last.CPUSeconds = max(w.last.CPUSeconds, u.CPUSeconds)
	w.last.PeakRSS = max(w.last.PeakRSS, u.PeakRSS)
}

type procStat struct {
	pid, ppid                    int
	utime, stime, cutime, cstime int64
}

func readStat(pid int) (procStat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name is in parentheses and may hold spaces: fields
	// start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return procStat{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	// f[0] is field 3 (state): ppid is field 4, utime..cstime 14..17.
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k-3], 10, 64); return v }
	return procStat{pid: pid, ppid: int(n(4)), utime: n(14), stime: n(15), cutime: n(16), cstime: n(17)}, nil
}

// statusKB reads a "Name:   123 kB" line of /proc/<pid>/status or
// /proc/<pid>/smaps_rollup, in bytes.
func statusKB(path, name string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Text()
		if rest, ok := strings.CutPrefix(line, name+":"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v * 1024
		}
	}
	return 0
}

// treeUsage is the CPU time of the tree rooted at root (the live processes
// and the children the root has reaped) and its memory now: the root's
// peak RSS when it is alone, else the sum of the processes' PSS, which
// counts shared memory once.
func treeUsage(root int) (Usage, error) {
	rs, err := readStat(root)
	if err != nil {
		return Usage{}, err
	}
	tree := []procStat{rs}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	children := map[int][]procStat{}
	for _, d := range dirs {
		pid, err := strconv.Atoi(filepath.Base(d))
		if err != nil || pid == root {
			continue
		}
		if st, err := readStat(pid); err == nil {
			children[st.ppid] = append(children[st.ppid], st)
		}
	}
	for i := 0; i < len(tree); i++ {
		tree = append(tree, children[tree[i].pid]...)
	}
	ticks := rs.cutime + rs.cstime
	for _, st := range tree {
		ticks += st.utime + st.stime
	}
	u := Usage{CPUSeconds: float64(ticks) / clockTicks}
	if len(tree) == 1 {
		u.PeakRSS = statusKB(fmt.Sprintf("/proc/%d/status", root), "VmHWM")
		return u, nil
	}
	for _, st := range tree {
		u.PeakRSS += statusKB(fmt.Sprintf("/proc/%d/smaps_rollup", st.pid), "Pss")
	}
	return u, nil
}
