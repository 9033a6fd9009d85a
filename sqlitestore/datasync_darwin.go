package sqlitestore

import "golang.org/x/sys/unix"

// datasync flushes fd to the disk. On macOS fsync(2) only hands the data to
// the drive, whose cache may lose it on power loss; F_FULLFSYNC asks the
// drive to write its cache out too (what SQLite does with fullfsync=1).
func datasync(fd int) error {
	_, err := unix.FcntlInt(uintptr(fd), unix.F_FULLFSYNC, 0)
	return err
}
