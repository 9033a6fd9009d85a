package main

import (
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"liminald/daemon"
)

// TestHelp_Defaults runs --help for liminald and for each of its commands,
// and reads every flag line: it names its default once, never as a zero
// value that stands for another default, and serve's defaults are those of
// daemon.DefaultConfig; a required flag says so and shows no default.
func TestHelp_Defaults(t *testing.T) {
	// noDefault are the flags with no default to show: step's output
	// flags, one of which (or --empty) must be given.
	noDefault := map[string]bool{"help": true, "version": true, "output": true, "output-file": true, "output-base64": true}
	// zeroIsDefault are the flags whose default really is zero.
	zeroIsDefault := map[string]bool{"from-seq": true, "from-pos": true}
	def := daemon.DefaultConfig()
	serveDefaults := map[string]string{
		"sync":            def.Sync,
		"connect-timeout": def.ConnectTimeout.String(),
		"socket-mode":     fmt.Sprintf("%04o", def.SocketMode),
		"max-line-bytes":  strconv.Itoa(def.MaxLineBytes),
		"max-connections": strconv.Itoa(def.MaxConnections),
		"log-level":       def.LogLevel,
		"log-format":      def.LogFormat,
		"metrics":         "off",
		"max-attempts":    zeroMeans(def.MaxAttempts, "no limit"),
		// retain_finished and retain_tombstones: 0 keeps everything.
		"retain-finished":   zeroMeans(def.RetainFinished, "keep all"),
		"retain-tombstones": zeroMeans(def.RetainTombstones, "keep all"),
	}

	names := []string{""}
	required := map[string]bool{} // "command --flag"
	for _, cmd := range commands() {
		names = append(names, cmd.Name)
		for _, f := range cmd.Flags {
			if _, ok := f.(requiredFlag); ok {
				required[cmd.Name+" --"+f.Names()[0]] = true
			}
		}
	}
	for _, name := range names {
		args := []string{name, "--help"}
		if name == "" {
			args = args[1:]
		}
		out, err := exec.Command(binary, args...).CombinedOutput()
		if err != nil {
			t.Errorf("liminald %s: %v\n%s", strings.Join(args, " "), err, out)
			continue
		}
		lines := flagLines(string(out))
		if len(lines) == 0 {
			t.Errorf("liminald %s lists no flags:\n%s", strings.Join(args, " "), out)
		}
		for flag, line := range lines {
			where := fmt.Sprintf("liminald %s, --%s", strings.Join(args, " "), flag)
			if n := strings.Count(strings.ToLower(line), "(default"); n > 1 {
				t.Errorf("%s names a default %d times: %s", where, n, line)
				continue
			}
			m := shownDefault.FindStringSubmatch(line)
			switch {
			case required[name+" --"+flag]:
				if m != nil || !strings.HasSuffix(line, "(required)") {
					t.Errorf("%s is required, but its help does not say so, or shows a default: %s", where, line)
				}
			case m == nil && !noDefault[flag]:
				t.Errorf("%s shows no default: %s", where, line)
			case m == nil:
			case m[1] == "" || m[1] == `""` || m[1] == "-1" || (m[1] == "0" && !zeroIsDefault[flag]):
				t.Errorf("%s shows the default %s, which is not what it defaults to: %s", where, m[1], line)
			case name == "serve" && serveDefaults[flag] != "" && m[1] != serveDefaults[flag]:
				t.Errorf("%s shows the default %s, want %s as in daemon.DefaultConfig: %s", where, m[1], serveDefaults[flag], line)
			}
		}
	}
}

// zeroMeans returns what a setting's help shows as its default v: text
// when v is zero, for which text stands; v otherwise.
func zeroMeans[T comparable](v T, text string) string {
	var zero T
	if v == zero {
		return text
	}
	return fmt.Sprint(v)
}

// shownDefault is the default urfave/cli appends to a flag's line.
var shownDefault = regexp.MustCompile(`\(default: (.*)\)$`)

// flagLines returns the flag lines of a help text by flag name.
func flagLines(help string) map[string]string {
	lines := map[string]string{}
	for _, line := range strings.Split(help, "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "--") {
			continue
		}
		name, _, _ := strings.Cut(line[2:], " ")
		lines[strings.TrimSuffix(name, ",")] = line
	}
	return lines
}

// TestHelp_Commands: help, help COMMAND, COMMAND --help anywhere before
// --, and version print and exit 0; an unknown command or help topic is a
// usage error that names it.
func TestHelp_Commands(t *testing.T) {
	for _, tc := range []struct {
		args     []string
		wantCode int
		want     string // in stdout, or in stderr when wantCode != 0
	}{
		{args: []string{}, want: "\nCOMMANDS:\n"},
		{args: []string{"help"}, want: "\nCOMMANDS:\n"},
		{args: []string{"help", "step"}, want: "liminald step - record a completed step"},
		{args: []string{"step", "--help"}, want: "liminald step - record a completed step"},
		{args: []string{"step", "c", "m", "0", "--help"}, want: "liminald step - record a completed step"},
		{args: []string{"receive", "--json", "c", "m", "-h"}, want: "liminald receive - record a delivery"},
		{args: []string{"version"}, want: "liminald version "},
		{args: []string{"--version"}, want: "liminald version "},
		{args: []string{"nope"}, wantCode: 2, want: `liminald: bad_request: no command "nope"; liminald help lists them`},
		{args: []string{"help", "nope"}, wantCode: 2, want: `liminald: bad_request: no command "nope"`},
		{args: []string{"help", "step", "state"}, wantCode: 2, want: "liminald: bad_request: help takes at most one COMMAND"},
		{args: []string{"version", "2"}, wantCode: 2, want: "liminald: bad_request: version takes no arguments"},
	} {
		cmd := exec.Command(binary, tc.args...)
		cmd.Env = cleanEnv()
		var stdout, stderr strings.Builder
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); cmd.ProcessState == nil {
			t.Fatal(err)
		}
		code, got := cmd.ProcessState.ExitCode(), stdout.String()
		if tc.wantCode != 0 {
			got = stderr.String()
		}
		if code != tc.wantCode || !strings.Contains(got, tc.want) {
			t.Errorf("liminald %s: exit %d\nstdout: %s\nstderr: %s\nwant exit %d and %q",
				strings.Join(tc.args, " "), code, stdout.String(), stderr.String(), tc.wantCode, tc.want)
		}
	}
}
