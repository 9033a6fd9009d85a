package main

import (
	"os/exec"
	"path/filepath"
	"testing"
)

// buildLiminald builds the liminald binary into a directory removed when
// the test ends, and returns its path. It builds from the directory above,
// as bench/run does: the binary measured is the one users build.
func buildLiminald(tb testing.TB) string {
	tb.Helper()
	binary := filepath.Join(tb.TempDir(), "liminald")
	out, err := exec.Command("go", "build", "-C", "..", "-o", binary, "./cmd/liminald").CombinedOutput()
	if err != nil {
		tb.Fatalf("build liminald: %v\n%s", err, out)
	}
	return binary
}
