package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"liminald/internal/testenv"
)

func TestDefaultSocketPath(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		uid  int
		want string
	}{
		{name: "RuntimeDir", env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/1000"}, uid: 1000, want: "/run/user/1000/liminald/liminald.sock"},
		{name: "RuntimeDirForRoot", env: map[string]string{"XDG_RUNTIME_DIR": "/run/user/0"}, uid: 0, want: "/run/user/0/liminald/liminald.sock"},
		{name: "Root", uid: 0, want: "/run/liminald/liminald.sock"},
		{name: "User", uid: 1000, want: "/tmp/liminald-1000/liminald.sock"},
		{name: "RelativeRuntimeDirIgnored", env: map[string]string{"XDG_RUNTIME_DIR": "run"}, uid: 1000, want: "/tmp/liminald-1000/liminald.sock"},
		{name: "TmpdirIgnored", env: map[string]string{"TMPDIR": "/var/tmp"}, uid: 42, want: "/tmp/liminald-42/liminald.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DefaultSocketPath(mapEnv(tt.env), tt.uid); got != tt.want {
				t.Errorf("DefaultSocketPath(%v, %d) = %q, want %q", tt.env, tt.uid, got, tt.want)
			}
		})
	}
}

func TestDefaultDBPath(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		home string
		want string
	}{
		{name: "StateHome", env: map[string]string{"XDG_STATE_HOME": "/s"}, home: "/home/u", want: "/s/liminald/liminald.db"},
		{name: "Home", home: "/home/u", want: "/home/u/.local/state/liminald/liminald.db"},
		{name: "RelativeStateHomeIgnored", env: map[string]string{"XDG_STATE_HOME": "s"}, home: "/home/u", want: "/home/u/.local/state/liminald/liminald.db"},
		{name: "Nothing", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DefaultDBPath(mapEnv(tt.env), tt.home); got != tt.want {
				t.Errorf("DefaultDBPath(%v, %q) = %q, want %q", tt.env, tt.home, got, tt.want)
			}
		})
	}
}

func TestDefaultConfigPath(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		home string
		want string
	}{
		{name: "ConfigHome", env: map[string]string{"XDG_CONFIG_HOME": "/c"}, home: "/home/u", want: "/c/liminald/liminald.toml"},
		{name: "Home", home: "/home/u", want: "/home/u/.config/liminald/liminald.toml"},
		{name: "Nothing", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DefaultConfigPath(mapEnv(tt.env), tt.home); got != tt.want {
				t.Errorf("DefaultConfigPath(%v, %q) = %q, want %q", tt.env, tt.home, got, tt.want)
			}
		})
	}
}

func TestCheckSocketPath(t *testing.T) {
	if MaxSocketPathLen != 107 {
		t.Logf("MaxSocketPathLen = %d on this platform", MaxSocketPathLen)
	}
	longest := "/" + strings.Repeat("a", MaxSocketPathLen-1)
	if err := CheckSocketPath(longest); err != nil {
		t.Errorf("CheckSocketPath(%d bytes) = %v, want nil", len(longest), err)
	}
	tooLong := longest + "b"
	err := CheckSocketPath(tooLong)
	var pe *SocketPathError
	if !errors.As(err, &pe) || pe.Path != tooLong {
		t.Fatalf("CheckSocketPath(%d bytes) = %v, want a *SocketPathError", len(tooLong), err)
	}
	for _, want := range []string{tooLong, strconv.Itoa(len(tooLong)), strconv.Itoa(MaxSocketPathLen), "limit"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckSocketPath error = %q, want it to hold %q", err, want)
		}
	}
}

func TestPrepareDir(t *testing.T) {
	perm := func(t *testing.T, path string) os.FileMode {
		t.Helper()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	// shared returns a directory writable by everyone, like /tmp.
	shared := func(t *testing.T) string {
		t.Helper()
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o777|os.ModeSticky); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	t.Run("MakesParents0700", func(t *testing.T) {
		root := t.TempDir()
		dir := filepath.Join(root, "a", "b")
		if err := PrepareDir(dir); err != nil {
			t.Fatalf("PrepareDir: %v", err)
		}
		for _, d := range []string{filepath.Join(root, "a"), dir} {
			if got := perm(t, d); got != 0o700 {
				t.Errorf("mode of %s = %#o, want 0700", d, got)
			}
		}
	})
	t.Run("ExistingKept", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "d")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := PrepareDir(dir); err != nil {
			t.Fatalf("PrepareDir: %v", err)
		}
		if got := perm(t, dir); got != 0o755 {
			t.Errorf("mode = %#o, want 0755 kept", got)
		}
	})
	t.Run("InSharedDir", func(t *testing.T) {
		dir := filepath.Join(shared(t), "liminald-1000")
		if err := PrepareDir(dir); err != nil {
			t.Fatalf("PrepareDir: %v", err)
		}
		if got := perm(t, dir); got != 0o700 {
			t.Errorf("mode = %#o, want 0700", got)
		}
		if err := PrepareDir(dir); err != nil {
			t.Errorf("PrepareDir again: %v", err)
		}
	})
	t.Run("WritableByOthersInSharedDir", func(t *testing.T) {
		dir := filepath.Join(shared(t), "liminald-1000")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := PrepareDir(dir); err == nil || !strings.Contains(err.Error(), "writable by others") {
			t.Errorf("PrepareDir = %v, want a refusal of a directory writable by others", err)
		}
	})
	t.Run("SymlinkInSharedDir", func(t *testing.T) {
		dir := filepath.Join(shared(t), "liminald-1000")
		if err := os.Symlink(t.TempDir(), dir); err != nil {
			t.Fatal(err)
		}
		if err := PrepareDir(dir); err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Errorf("PrepareDir = %v, want a refusal of a symbolic link", err)
		}
	})
	t.Run("OtherOwnerInSharedDir", func(t *testing.T) {
		testenv.NeedRoot(t, "making a directory owned by another user")
		dir := filepath.Join(shared(t), "liminald-1000")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		if err := PrepareDir(dir); err == nil || !strings.Contains(err.Error(), "owned by uid 12345") {
			t.Errorf("PrepareDir = %v, want a refusal of a directory owned by uid 12345", err)
		}
	})
	t.Run("FileInTheWay", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(dir, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := PrepareDir(dir); err == nil || !strings.Contains(err.Error(), dir) {
			t.Errorf("PrepareDir = %v, want an error naming %s", err, dir)
		}
	})
}
