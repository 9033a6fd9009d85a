package daemon

import (
	"fmt"
	"os"
	"testing"
)

// childEnv names what the test binary does when a test runs it as a child
// process: see TestActivated.
const childEnv = "LIMINALD_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childEnv) {
	case "":
		os.Exit(m.Run())
	case "activated":
		os.Exit(activatedChild())
	default:
		fmt.Fprintf(os.Stderr, "unknown %s=%q\n", childEnv, os.Getenv(childEnv))
		os.Exit(2)
	}
}
