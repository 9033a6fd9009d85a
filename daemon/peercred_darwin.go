package daemon

import "golang.org/x/sys/unix"

func peerPID(fd int) (int32, error) {
	pid, err := unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	return int32(pid), err
}
