package daemon

import (
	"strconv"

	sdnotify "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"
)

// The states the daemon reports with Notify.
const (
	// NotifyReady says the daemon is ready: the database is open and the
	// socket listens. It also ends a reload begun with NotifyReloading.
	NotifyReady = "READY=1"
	// NotifyStopping says the daemon has begun to shut down.
	NotifyStopping = "STOPPING=1"
)

// Notify sends state to the service manager on the datagram socket named by
// NOTIFY_SOCKET (a path, or an abstract socket written with a leading '@'),
// as sd_notify(3) does. It does nothing and returns nil when NOTIFY_SOCKET is
// unset: the daemon was not started by systemd with Type=notify. It returns
// the error of sending otherwise.
func Notify(state string) error {
	_, err := sdnotify.SdNotify(false, state)
	return err
}

// NotifyReloading returns the state that says a reload has begun:
// "RELOADING=1" and the MONOTONIC_USEC (CLOCK_MONOTONIC, in microseconds)
// that systemd requires with it for Type=notify-reload. Send NotifyReady
// when the reload is done, whether it was applied or refused.
func NotifyReloading() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return "RELOADING=1"
	}
	return "RELOADING=1\nMONOTONIC_USEC=" + strconv.FormatInt(ts.Nano()/1000, 10)
}

// NotifyStatus returns the state that sets the status line systemctl status
// shows: "STATUS=" and text, which must be one line.
func NotifyStatus(text string) string {
	return "STATUS=" + text
}
