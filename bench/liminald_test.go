package main

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// buildLiminald builds the liminald binary into a directory removed when
// the test ends, and returns its path. It builds in the daemon's own module,
// the directory above, as bench/run does: the binary measured is the one
// users build, with the daemon's dependencies at the daemon's versions, not
// at those this module selects. (The daemon's internal/daemontest, which
// the daemon's own tests build with, cannot be imported from here.)
func buildLiminald(tb testing.TB) string {
	tb.Helper()
	binary := filepath.Join(tb.TempDir(), "liminald")
	out, err := exec.Command("go", "build", "-C", "..", "-o", binary, "./cmd/liminald").CombinedOutput()
	if err != nil {
		tb.Fatalf("build liminald: %v\n%s", err, out)
	}
	return binary
}
