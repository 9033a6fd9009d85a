package daemon

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// configWatch is a config watcher under test. Its trace reports each
// decision of the watcher's goroutine in order, which lets a test know that
// an event was seen and ignored without waiting for something not to happen.
type configWatch struct {
	dir, path string
	changes   atomic.Int32
	traces    chan string
	w         *Watcher
	cancel    context.CancelFunc
}

func startConfigWatch(t *testing.T) *configWatch {
	t.Helper()
	dir := t.TempDir()
	cw := &configWatch{dir: dir, path: filepath.Join(dir, "liminald.toml"), traces: make(chan string, 1000)}
	cw.write(t, "liminald.toml", "log_level = \"info\"\n")
	spec := configSpec(cw.path, 0, func() { cw.changes.Add(1) })
	spec.trace = func(s string) { cw.traces <- s }
	ctx, cancel := context.WithCancel(context.Background())
	w, err := watch(ctx, spec)
	if err != nil {
		t.Fatalf("watch %s: %v", cw.path, err)
	}
	cw.w, cw.cancel = w, cancel
	t.Cleanup(func() {
		cancel()
		w.Wait()
	})
	return cw
}

func (cw *configWatch) write(t *testing.T, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(cw.dir, name), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// until reads the trace until a line satisfies done and returns the lines
// read, that one included.
func (cw *configWatch) until(t *testing.T, what string, done func(string) bool) []string {
	t.Helper()
	var lines []string
	timeout := time.After(30 * time.Second)
	for {
		select {
		case line := <-cw.traces:
			lines = append(lines, line)
			if done(line) {
				return lines
			}
		case <-timeout:
			t.Fatalf("no %s within 30s; the watcher traced %q", what, lines)
		}
	}
}

// fired waits for the debounced call and returns the trace up to it.
func (cw *configWatch) fired(t *testing.T) []string {
	t.Helper()
	return cw.until(t, "call", func(s string) bool { return s == "fire" })
}

// quiet writes a sentinel file and reads the trace until the watcher has
// seen it; every event before it has then been handled. It fails the test
// if any of them counted.
func (cw *configWatch) quiet(t *testing.T) {
	t.Helper()
	cw.write(t, "sentinel", "")
	for _, line := range cw.until(t, "sentinel", func(s string) bool { return strings.Contains(s, "sentinel") }) {
		if !strings.HasPrefix(line, "ignore ") {
			t.Errorf("watcher traced %q, want only ignored events", line)
		}
	}
}

func (cw *configWatch) wantChanges(t *testing.T, want int32) {
	t.Helper()
	if got := cw.changes.Load(); got != want {
		t.Errorf("onChange called %d times, want %d", got, want)
	}
}

func TestWatchConfig(t *testing.T) {
	t.Run("AtomicRenameSave", func(t *testing.T) {
		cw := startConfigWatch(t)
		cw.write(t, "liminald.toml.tmp", "log_level = \"debug\"\n")
		if err := os.Rename(filepath.Join(cw.dir, "liminald.toml.tmp"), cw.path); err != nil {
			t.Fatal(err)
		}
		lines := cw.fired(t)
		if !slices.ContainsFunc(lines, func(s string) bool { return strings.HasPrefix(s, "match CREATE") }) {
			t.Errorf("trace %q, want the rename over the file seen as a create", lines)
		}
		cw.quiet(t)
		cw.wantChanges(t, 1)
	})
	t.Run("InPlaceWrite", func(t *testing.T) {
		cw := startConfigWatch(t)
		cw.write(t, "liminald.toml", "log_level = \"debug\"\n")
		cw.write(t, "liminald.toml", "log_level = \"warn\"\n")
		cw.fired(t)
		cw.quiet(t)
		cw.wantChanges(t, 1)
	})
	t.Run("OtherFile", func(t *testing.T) {
		cw := startConfigWatch(t)
		cw.write(t, "liminald.toml.bak", "x")
		cw.write(t, "other.toml", "y")
		if err := os.Remove(filepath.Join(cw.dir, "other.toml")); err != nil {
			t.Fatal(err)
		}
		cw.quiet(t)
		cw.wantChanges(t, 0)
	})
	t.Run("ModeOnly", func(t *testing.T) {
		cw := startConfigWatch(t)
		if err := os.Chmod(cw.path, 0o640); err != nil {
			t.Fatal(err)
		}
		cw.quiet(t)
		cw.wantChanges(t, 0)
	})
	t.Run("Removed", func(t *testing.T) {
		cw := startConfigWatch(t)
		if err := os.Remove(cw.path); err != nil {
			t.Fatal(err)
		}
		cw.fired(t)
		cw.quiet(t)
		cw.wantChanges(t, 1)
	})
	t.Run("SavesApart", func(t *testing.T) {
		cw := startConfigWatch(t)
		for i := range 2 {
			cw.write(t, "liminald.toml", "max_connections = 9\n")
			cw.fired(t)
			cw.quiet(t)
			cw.wantChanges(t, int32(i+1))
		}
	})
	t.Run("DirectoryRemoved", func(t *testing.T) {
		cw := startConfigWatch(t)
		if err := os.Rename(cw.dir, cw.dir+".old"); err != nil {
			t.Fatal(err)
		}
		cw.fired(t)
		select {
		case <-cw.w.Done():
		case <-time.After(30 * time.Second):
			t.Fatal("watcher still running 30s after its directory went")
		}
		if err := cw.w.Wait(); err == nil || !strings.Contains(err.Error(), cw.dir) {
			t.Errorf("Wait() = %v, want an error naming %s", err, cw.dir)
		}
		cw.wantChanges(t, 1)
	})
	t.Run("StoppedByContext", func(t *testing.T) {
		cw := startConfigWatch(t)
		cw.cancel()
		if err := cw.w.Wait(); err != nil {
			t.Errorf("Wait() = %v, want nil", err)
		}
		select {
		case <-cw.w.Done():
		default:
			t.Error("Done() not closed after Wait")
		}
	})
	t.Run("Exported", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "liminald.toml")
		changed := make(chan struct{}, 10)
		ctx, cancel := context.WithCancel(context.Background())
		w, err := WatchConfig(ctx, path, time.Millisecond, func() { changed <- struct{}{} })
		if err != nil {
			t.Fatal(err)
		}
		defer func() {
			cancel()
			w.Wait()
		}()
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		select {
		case <-changed:
		case <-time.After(30 * time.Second):
			t.Fatal("onChange not called within 30s of creating the file")
		}
	})
	t.Run("MissingDirectory", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "no", "liminald.toml")
		if _, err := WatchConfig(context.Background(), path, 0, func() {}); err == nil || !strings.Contains(err.Error(), filepath.Dir(path)) {
			t.Errorf("WatchConfig in a missing directory = %v, want an error naming it", err)
		}
	})
}
