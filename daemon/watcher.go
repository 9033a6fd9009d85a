package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Watcher watches one file through the directory that holds it, so that it
// sees the file replaced by a rename as well as written or removed; or, for
// a file nobody writes, the file itself (see watchSpec.self). It is made by
// WatchConfig or WatchSocket and runs one goroutine, which holds all its
// state, calls its callback, and stops when the context it was made with
// ends.
type Watcher struct {
	done chan struct{}
	err  error
}

// Done returns a channel that is closed when the watcher has stopped.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Wait waits for the watcher to stop and returns why: nil when its context
// ended, or the error that stopped it, naming the directory (the directory
// was removed or renamed and could not be watched again after the callback
// ran).
func (w *Watcher) Wait() error {
	<-w.done
	return w.err
}

// watchSpec says what a Watcher watches and what it does.
type watchSpec struct {
	path     string
	ops      fsnotify.Op   // the events on the file that count
	debounce time.Duration // quiet time before fire; 0 fires at once
	callback func()
	// fireAtStart fires once as soon as the watch is in place, for what
	// happened before it was.
	fireAtStart bool
	// self watches the file itself instead of its directory: a watch on a
	// directory is told of every write to any file in it, which a database
	// beside the file makes thousands a second. The file's own watch sees
	// it removed or renamed away, not its directory renamed; after each
	// callback it follows the file at path, should the callback have made
	// it anew. ops does not apply: any event on the file counts.
	self  bool
	trace func(string) // tests only: each decision of the loop, in order
}

// watch starts a Watcher. It returns an error naming the directory when the
// directory cannot be watched.
func watch(ctx context.Context, spec watchSpec) (*Watcher, error) {
	path, err := filepath.Abs(spec.path)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", spec.path, err)
	}
	dir, name := filepath.Dir(path), filepath.Base(path)
	target := dir
	if spec.self {
		target = path
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", target, err)
	}
	if err := fsw.Add(target); err != nil {
		fsw.Close()
		return nil, fmt.Errorf("watch %s: %w", target, err)
	}
	var watched os.FileInfo // self: the file watched
	if spec.self {
		if watched, err = os.Stat(path); err != nil {
			fsw.Close()
			return nil, fmt.Errorf("watch %s: %w", target, err)
		}
	}
	if spec.trace == nil {
		spec.trace = func(string) {}
	}
	w := &Watcher{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		w.err = spec.run(ctx, fsw, dir, name, watched)
		fsw.Close()
	}()
	return w, nil
}

// loop is the state of a Watcher's goroutine, which alone touches it.
type loop struct {
	*watchSpec
	fsw       *fsnotify.Watcher
	dir, name string
	timer     *time.Timer
	expiry    <-chan time.Time // the timer's channel while it is armed
	lost      bool             // the directory went, and its watch with it
	watched   os.FileInfo      // self: the file watched now
}

// run is the watcher's goroutine. A file event that counts, a removal or
// rename of the directory itself, and a lost event queue (after which any
// event may have been missed) all arm the debounce timer; fire runs when it
// expires.
func (s *watchSpec) run(ctx context.Context, fsw *fsnotify.Watcher, dir, name string, watched os.FileInfo) error {
	l := &loop{watchSpec: s, fsw: fsw, dir: dir, name: name, watched: watched}
	defer func() {
		if l.timer != nil {
			l.timer.Stop()
		}
	}()
	if s.fireAtStart {
		if err := l.fire(); err != nil {
			return err
		}
	}
	for {
		var err error
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-fsw.Events:
			if !ok {
				return fmt.Errorf("watch %s: fsnotify stopped", dir)
			}
			switch {
			case s.self:
				s.trace("match " + ev.String())
				err = l.arm()
			case ev.Name == dir && ev.Has(fsnotify.Remove|fsnotify.Rename):
				s.trace("lost " + ev.String())
				l.lost = true
				err = l.arm()
			case filepath.Base(ev.Name) == name && ev.Op&s.ops != 0:
				s.trace("match " + ev.String())
				err = l.arm()
			default:
				s.trace("ignore " + ev.String())
			}
		case werr, ok := <-fsw.Errors:
			if !ok {
				return fmt.Errorf("watch %s: fsnotify stopped", dir)
			}
			// An overflowed queue lost events, and fsnotify's other errors
			// leave it unknown whether an event was missed: look again.
			s.trace("error " + werr.Error())
			err = l.arm()
		case <-l.expiry:
			l.expiry = nil
			err = l.fire()
		}
		if err != nil {
			return err
		}
	}
}

// arm fires after the debounce time, or at once without one.
func (l *loop) arm() error {
	if l.debounce <= 0 {
		return l.fire()
	}
	if l.timer == nil {
		l.timer = time.NewTimer(l.debounce)
	} else {
		l.timer.Reset(l.debounce)
	}
	l.expiry = l.timer.C
	return nil
}

// fire calls the watcher's callback. When the directory went, the callback
// may have made it anew: fire watches it again, and arms once more for what
// happened between its return and the new watch, unseen. It returns an error
// when the directory cannot be watched again.
func (l *loop) fire() error {
	l.trace("fire")
	l.callback()
	if l.self {
		return l.follow()
	}
	if !l.lost {
		return nil
	}
	_ = l.fsw.Remove(l.dir)
	if err := l.fsw.Add(l.dir); err != nil {
		return fmt.Errorf("watch %s again after it was removed: %w", l.dir, err)
	}
	l.lost = false
	l.trace("watching again")
	return l.arm()
}

// follow watches the file at the watcher's path when it is no longer the
// one watched (the callback made it anew), then arms once more for what
// happened to it before its watch was in place. A file gone again since
// the callback (removed while it ran) calls the callback again, a few
// times at most; it returns an error when there is still no file to
// watch.
func (l *loop) follow() error {
	path := filepath.Join(l.dir, l.name)
	for tries := 1; ; tries++ {
		fi, err := os.Stat(path)
		if err == nil && os.SameFile(fi, l.watched) {
			return nil
		}
		_ = l.fsw.Remove(path)
		if err == nil {
			err = l.fsw.Add(path)
		}
		if err == nil {
			l.watched = fi
			l.trace("watching again")
			return l.arm()
		}
		if !errors.Is(err, fs.ErrNotExist) || tries == 3 {
			return fmt.Errorf("watch %s again after it was replaced: %w", path, err)
		}
		l.trace("gone again")
		l.callback()
	}
}
