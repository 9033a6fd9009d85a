package daemon

import (
	"net"

	"golang.org/x/sys/unix"
)

// peerCred reads SO_PEERCRED.
func peerCred(c *net.UnixConn) (uid, gid uint32, pid int32, err error) {
	err = onSocket(c, func(fd int) error {
		cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
		if err == nil {
			uid, gid, pid = cred.Uid, cred.Gid, cred.Pid
		}
		return err
	})
	return uid, gid, pid, err
}
