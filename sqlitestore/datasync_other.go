//go:build !linux && !darwin

package sqlitestore

import "golang.org/x/sys/unix"

// datasync flushes fd to the disk with fsync(2), where fdatasync(2) is not
// available to Go programs.
func datasync(fd int) error { return unix.Fsync(fd) }
