package sqlitestore

import "golang.org/x/sys/unix"

// datasync flushes fd's data, and the metadata needed to read it back, to
// the disk: fdatasync(2).
func datasync(fd int) error { return unix.Fdatasync(fd) }
