package sqlitestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// Create makes an empty file at path with mode 0600 when there is none, for
// Open (or Backup) to make a database of. A database holds the payloads of
// every event, so no one but its owner may read it: a file SQLite created
// itself would be 0644 less the umask. SQLite creates a database's -wal and
// -shm files with the mode of the database file, so they are 0600 too.
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
	return true, nil
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
