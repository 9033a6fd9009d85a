// Package testenv lets a test say what it needs of the machine it runs on:
// a tool on PATH, root, a mount. Where a need is not met, the test is
// skipped on a developer's machine, and fails in CI (the CI environment
// variable is set), naming what is missing: in CI a skipped test would be
// a promise that nobody checked.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// InCI reports whether the tests run in CI: the CI environment variable is
// set to anything but "" or "false".
func InCI() bool {
	v := os.Getenv("CI")
	return v != "" && v != "false" && v != "0"
}

// Missing ends the test because the machine lacks what the message says:
// tb.Fatalf in CI, tb.Skipf elsewhere. Call it from the test's goroutine.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		tb.Fatalf("missing in CI (.ci/run must provide it): %s", msg)
	}
	tb.Skipf("skipped: %s", msg)
}

// NeedTools ends the test through Missing unless every tool is on PATH.
func NeedTools(tb testing.TB, tools ...string) {
	tb.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			Missing(tb, "%s is not installed", tool)
		}
	}
}

// NeedRoot ends the test through Missing unless it runs as root; why says
// what root is needed for.
func NeedRoot(tb testing.TB, why string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		Missing(tb, "%s needs root", why)
	}
}
