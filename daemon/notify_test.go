package daemon

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listenNotify listens like systemd on a datagram socket named addr and sets
// NOTIFY_SOCKET to it for the test.
func listenNotify(t *testing.T, addr string) *net.UnixConn {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", addr)
	return c
}

// readNotify returns the next datagram c receives.
func readNotify(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	buf := make([]byte, 4096)
	n, _, err := c.ReadFromUnix(buf)
	if err != nil {
		t.Fatalf("read notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotify(t *testing.T) {
	tests := []struct {
		name  string
		state string
	}{
		{name: "Ready", state: NotifyReady},
		{name: "Stopping", state: NotifyStopping},
		{name: "Status", state: NotifyStatus("serving 3 connections")},
		{name: "Reloading", state: NotifyReloading()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
			if err := Notify(tt.state); err != nil {
				t.Fatalf("Notify(%q): %v", tt.state, err)
			}
			if got := readNotify(t, c); got != tt.state {
				t.Errorf("datagram = %q, want %q", got, tt.state)
			}
		})
	}

	t.Run("Abstract", func(t *testing.T) {
		c := listenNotify(t, fmt.Sprintf("@liminald-test-%d-%d", os.Getpid(), time.Now().UnixNano()))
		if err := Notify(NotifyReady); err != nil {
			t.Fatalf("Notify: %v", err)
		}
		if got := readNotify(t, c); got != NotifyReady {
			t.Errorf("datagram = %q, want %q", got, NotifyReady)
		}
	})
	t.Run("Unset", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		os.Unsetenv("NOTIFY_SOCKET")
		if err := Notify(NotifyReady); err != nil {
			t.Errorf("Notify without NOTIFY_SOCKET = %v, want nil", err)
		}
	})
	t.Run("NoListener", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "gone.sock"))
		if err := Notify(NotifyReady); err == nil {
			t.Error("Notify to a missing socket = nil, want an error")
		}
	})
}

func TestNotifyReloading(t *testing.T) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	before := ts.Nano() / 1000
	got := NotifyReloading()
	m := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=([0-9]+)$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("NotifyReloading() = %q, want RELOADING=1 and MONOTONIC_USEC", got)
	}
	if usec, _ := strconv.ParseInt(m[1], 10, 64); usec < before {
		t.Errorf("MONOTONIC_USEC = %d, before the call the clock read %d", usec, before)
	}
}
