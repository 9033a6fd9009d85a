//go:build !linux && !darwin && !freebsd

package daemon

import (
	"errors"
	"net"
)

func peerCred(*net.UnixConn) (uid, gid uint32, pid int32, err error) {
	return 0, 0, 0, errors.ErrUnsupported
}
