package main

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// machine describes this machine, with the filesystem that dir is on.
func machine(dir string) Machine {
	m := Machine{
		CPU:         cpuModel(),
		Cores:       runtime.NumCPU(),
		MemoryBytes: statusKB("/proc/meminfo", "MemTotal"),
		Kernel:      "unknown",
		Filesystem:  filesystem(dir),
		GoVersion:   runtime.Version(),
		Date:        time.Now().UTC().Format("2006-01-02 15:04 UTC"),
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Sysname[:]) + " " + unix.ByteSliceToString(u.Release[:])
	}
	return m
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// filesystem is the type, device and mount point of the filesystem holding
// dir, from the longest mount point of /proc/self/mountinfo that holds it.
func filesystem(dir string) string {
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return "unknown"
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	best, bestLen := "unknown", -1
	s := bufio.NewScanner(f)
	for s.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		pre, post, ok := strings.Cut(s.Text(), " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 6 || len(b) < 2 {
			continue
		}
		mp := a[4]
		if (dir == mp || strings.HasPrefix(dir, strings.TrimSuffix(mp, "/")+"/")) && len(mp) >= bestLen {
			best, bestLen = b[0]+" ("+b[1]+" on "+mp+", "+a[5]+")", len(mp)
		}
	}
	return best
}

// A describer tells the report a system's version and how it runs.
type describer interface {
	Version() string
	Settings() string
}

// describe returns how sys ran: "unknown" unless it is a describer.
func describe(sys System) SystemInfo {
	info := SystemInfo{Name: sys.Name(), Version: "unknown", Settings: "unknown"}
	if d, ok := sys.(describer); ok {
		info.Version, info.Settings = d.Version(), d.Settings()
	}
	return info
}
