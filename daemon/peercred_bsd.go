//go:build darwin || freebsd

package daemon

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerCred reads LOCAL_PEERCRED: the peer's effective uid and its groups,
// of which the first is its effective gid. On macOS LOCAL_PEERPID gives its
// pid; elsewhere the pid is 0 (unknown).
func peerCred(c *net.UnixConn) (uid, gid uint32, pid int32, err error) {
	err = onSocket(c, func(fd int) error {
		cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		if err != nil {
			return err
		}
		uid = cred.Uid
		if cred.Ngroups > 0 {
			gid = cred.Groups[0]
		}
		pid, err = peerPID(fd)
		return err
	})
	return uid, gid, pid, err
}
