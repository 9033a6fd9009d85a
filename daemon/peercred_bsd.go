//go:build darwin || freebsd

package daemon

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCred reads LOCAL_PEERCRED: the peer's effective uid and its groups,
// of which the first is its effective gid. On macOS LOCAL_PEERPID gives its
// pid; elsewhere the pid is 0 (unknown).
func peerCred(c *net.UnixConn) (uid, gid uint32, pid int32, err error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Xucred
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		cred, gerr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		if gerr == nil {
			pid, gerr = peerPID(int(fd))
		}
	}); err != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	if gerr != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: %w", gerr)
	}
	if cred.Ngroups > 0 {
		gid = cred.Groups[0]
	}
	return cred.Uid, gid, pid, nil
}
