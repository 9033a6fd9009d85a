package sqlitestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Create makes an empty file at path with mode 0600 when there is none, for
// Open (or Backup) to make a database of. A database holds the payloads of
// every event, so no one but its owner may read it: a file SQLite created
// itself would be 0644 less the umask. SQLite creates a database's -wal and
// -shm files with the mode of the database file, so they are 0600 too.
//
// A file it creates, it makes durable where it is named (see syncDirs):
// SQLite syncs the database's directory when it makes the WAL, but not the
// directories above it, and the daemon makes the database's directory, and
// its missing parents, just before.
//
// Returns whether it created the file, and an error naming path when it
// could not look or create.
func Create(path string) (created bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create database %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return false, fmt.Errorf("create database %s: %w", path, err)
	}
	syncDirs(path)
	return true, nil
}

// syncDirs fsyncs the directory that holds path and each one above it, up
// to the root: an entry is on the disk only once the directory that holds
// it is synced, so a file in a directory made just before (and that
// directory in one made just before, and so on) would be lost with the
// power, with everything written to it since, synced or not. It costs a
// few syncs, once for each database made. A directory that cannot be
// opened or synced is passed over, as SQLite passes over a sync of a
// directory that fails: some filesystems cannot sync a directory, and one
// this process may not read was not made by it.
func syncDirs(path string) {
	for dir := filepath.Dir(path); ; dir = filepath.Dir(dir) {
		if d, err := os.Open(dir); err == nil {
			d.Sync()
			d.Close()
		}
		if filepath.Dir(dir) == dir {
			return
		}
	}
}

// Remove removes the database at path and the files SQLite keeps beside it
// (-wal, -shm, -journal): what a command that created the database leaves
// when it fails. Close the store first. Returns the first error other than
// a file that is not there.
func Remove(path string) error {
	var first error
	for _, suffix := range []string{"-wal", "-shm", "-journal", ""} {
		if err := os.Remove(path + suffix); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
			first = fmt.Errorf("remove database %s: %w", path, err)
		}
	}
	return first
}
