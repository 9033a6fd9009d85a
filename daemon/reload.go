package daemon

import (
	"context"
	"time"

	"github.com/fsnotify/fsnotify"
)

// DefaultDebounce is how long WatchConfig waits, after an event on the
// configuration file, for the events to stop before it reports them: one
// save by an editor is several events (a write, a rename, a chmod).
const DefaultDebounce = 200 * time.Millisecond

// WatchConfig watches the configuration file at path and calls onChange,
// from the watcher's goroutine, once the file has been written, created,
// renamed over, renamed away or removed and then left alone for debounce
// (DefaultDebounce when debounce is 0 or less). Many events within debounce
// of each other are one call. A change of mode or owner alone, and events on
// other files, call nothing.
//
// It watches the file's directory, not the file: editors save by writing a
// new file and renaming it over the old one, which a watch on the file
// itself would lose. When the directory itself is removed or renamed,
// onChange is called and the directory is watched again if it is back, with
// one more call after debounce for what the watch missed meanwhile; if it is
// not back the watcher stops and Wait returns the error.
//
// onChange should reload the file (Load), compare with
// Diff and apply or refuse; SIGHUP can call the same function. The watcher
// stops when ctx ends; Wait for it before closing what onChange uses.
//
// WatchConfig returns an error naming the directory when it cannot be
// watched (it must exist).
func WatchConfig(ctx context.Context, path string, debounce time.Duration, onChange func()) (*Watcher, error) {
	return watch(ctx, configSpec(path, debounce, onChange))
}

func configSpec(path string, debounce time.Duration, onChange func()) watchSpec {
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	return watchSpec{
		path:     path,
		ops:      fsnotify.Create | fsnotify.Write | fsnotify.Remove | fsnotify.Rename,
		debounce: debounce,
		callback: onChange,
	}
}
