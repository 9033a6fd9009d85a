package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"liminald/daemon"
)

// TestSocket_Resolves: liminald socket prints the socket serve would use,
// found the same way: --socket, then LIMINAL_SOCKET, then the config
// file, then the default for the user.
func TestSocket_Resolves(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "liminald.toml")
	if err := os.WriteFile(config, []byte(`socket = "/from/config.sock"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	noXDG := func(string) string { return "" }
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		want string
	}{
		{"Default", nil, nil, daemon.DefaultSocketPath(noXDG, os.Getuid())},
		{"XDGRuntimeDir", nil, []string{"XDG_RUNTIME_DIR=/run/user/4242"}, "/run/user/4242/liminald/liminald.sock"},
		{"ConfigFile", []string{"--config", config}, nil, "/from/config.sock"},
		{"EnvironmentOverConfig", []string{"--config", config}, []string{"LIMINAL_SOCKET=/from/env.sock"}, "/from/env.sock"},
		{"FlagOverEnvironment", []string{"--socket", "/from/flag.sock"}, []string{"LIMINAL_SOCKET=/from/env.sock"}, "/from/flag.sock"},
		{"JSON", []string{"--json", "--socket", "/s.sock"}, nil, `{"ok":true,"socket":"/s.sock"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(binary, append([]string{"socket"}, tc.args...)...)
			cmd.Env = append(append(cleanEnv(), "HOME="+dir), tc.env...)
			out, err := cmd.Output()
			if got := strings.TrimSuffix(string(out), "\n"); err != nil || got != tc.want {
				t.Errorf("liminald socket %v = %q, %v; want %q", tc.args, got, err, tc.want)
			}
		})
	}
	t.Run("Argument", func(t *testing.T) {
		err := exec.Command(binary, "socket", "extra").Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 {
			t.Errorf("liminald socket extra: %v, want a usage error (exit 2)", err)
		}
	})
}
