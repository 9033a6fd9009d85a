// Command testsummary reads what go test -json writes, on its standard
// input, as it comes: it prints each package's closing line (ok, FAIL, or
// ? for no test files) and its build errors, and the output of each test
// that failed or was skipped. At the end it prints
//
//	tests: N passed, N failed, N skipped
//
// counting subtests as tests, and exits 1 if a test or a package failed,
// or, in CI (the CI environment variable set to anything but "", "false"
// or "0", as internal/testenv reads it), if a test was skipped: in CI a
// skipped test is a promise that nobody checked.
//
//	go test -race -json ./... | go run .ci/testsummary.go
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// event is a line of go test -json (see go doc test2json); build output
// carries ImportPath instead of Package.
type event struct {
	Action     string
	Package    string
	ImportPath string
	Test       string
	Output     string
}

func main() {
	var passed, failed, skipped int
	packageFailed := false
	output := map[string]*strings.Builder{} // what a running test printed, by package and test
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		var e event
		if err := json.Unmarshal(in.Bytes(), &e); err != nil || e.Action == "" {
			fmt.Println(in.Text()) // not an event: go test's own message
			continue
		}
		key := e.Package + " " + e.Test
		switch {
		case e.Action == "build-output":
			fmt.Print(e.Output)
		case e.Test == "" && e.Action == "output":
			if e.Output != "PASS\n" && e.Output != "FAIL\n" {
				fmt.Print(e.Output)
			}
		case e.Test == "" && e.Action == "fail":
			packageFailed = true
		case e.Test == "":
		case e.Action == "output":
			if strings.HasPrefix(e.Output, "=== ") {
				continue // RUN, PAUSE, CONT: the test's progress
			}
			if output[key] == nil {
				output[key] = &strings.Builder{}
			}
			output[key].WriteString(e.Output)
		case e.Action == "pass":
			passed++
			delete(output, key)
		case e.Action == "fail", e.Action == "skip":
			if e.Action == "fail" {
				failed++
			} else {
				skipped++
			}
			if b := output[key]; b != nil {
				fmt.Printf("%s (%s):\n%s", e.Test, e.Package, b)
			}
			delete(output, key)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "testsummary:", err)
		os.Exit(1)
	}
	fmt.Printf("tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped)
	ci := os.Getenv("CI")
	inCI := ci != "" && ci != "false" && ci != "0"
	switch {
	case failed > 0 || packageFailed:
		os.Exit(1)
	case skipped > 0 && inCI:
		fmt.Println("in CI no test may be skipped: .ci/run must provide what they need")
		os.Exit(1)
	}
}
