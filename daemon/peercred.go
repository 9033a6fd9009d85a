package daemon

import (
	"fmt"
	"net"
	"slices"
)

// PeerCred returns the credentials of the process at the other end of a unix
// socket connection, as the kernel recorded them when it connected
// (SO_PEERCRED on Linux, LOCAL_PEERCRED on macOS and FreeBSD): its
// effective uid and gid, and its pid (0 where the platform does not say:
// FreeBSD). It returns an error when c is not a *net.UnixConn or the
// credentials cannot be read (errors.ErrUnsupported on other platforms).
func PeerCred(c net.Conn) (uid, gid uint32, pid int32, err error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, 0, 0, fmt.Errorf("peer credentials: %T is not a unix socket connection", c)
	}
	uid, gid, pid, err = peerCred(uc)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	return uid, gid, pid, nil
}

// onSocket runs read on the file descriptor of c, and returns its error or
// the error of reaching the descriptor.
func onSocket(c *net.UnixConn, read func(fd int) error) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var rerr error
	if err := rc.Control(func(fd uintptr) { rerr = read(int(fd)) }); err != nil {
		return err
	}
	return rerr
}

// AllowList says which peers may talk to the daemon, by their credentials as
// PeerCred reads them.
//
// With both lists empty every peer is allowed: anyone who can open the socket
// (see Listen's mode and group). Otherwise a peer is allowed when its uid is
// in UIDs or its gid is in GIDs. No one is allowed implicitly: not root
// (uid 0), not the daemon's own user; list them to allow them.
//
// The gid is the peer's effective gid only: the kernel does not report
// supplementary groups with SO_PEERCRED, so a user who is merely a member of
// a listed group is not allowed by it.
type AllowList struct {
	UIDs []uint32
	GIDs []uint32
}

// Allows reports whether a peer with uid and gid may talk to the daemon.
func (a AllowList) Allows(uid, gid uint32) bool {
	if len(a.UIDs) == 0 && len(a.GIDs) == 0 {
		return true
	}
	return slices.Contains(a.UIDs, uid) || slices.Contains(a.GIDs, gid)
}
