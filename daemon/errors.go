package daemon

import "errors"

// The fixed errors of the package. Functions wrap them with the path or the
// setting they concern; test for them with errors.Is.
var (
	// ErrLocked means another process holds a lock that AcquireLock wanted:
	// another liminald serving the same database or socket, or a liminald
	// import writing the database.
	ErrLocked = errors.New("another liminald (or liminald import) holds it")

	// ErrNotSocket means a file that is not a socket is where Listen was to
	// create the socket; Listen does not remove it.
	ErrNotSocket = errors.New("not a socket, refusing to remove it")

	// ErrUnknownSetting is inside the SettingError for a key of a
	// configuration file that names no setting.
	ErrUnknownSetting = errors.New("no such setting")
)
