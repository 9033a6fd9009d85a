package paths

import "testing"

// TestFindSocket: LIMINAL_SOCKET wins over the default, an empty one
// counts as unset, as it does for the daemon.
func TestFindSocket(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		uid  int
		want string
	}{
		{name: "Env", env: map[string]string{"LIMINAL_SOCKET": "/srv/l.sock", "XDG_RUNTIME_DIR": "/run/user/7"}, uid: 7, want: "/srv/l.sock"},
		{name: "EmptyEnv", env: map[string]string{"LIMINAL_SOCKET": "", "XDG_RUNTIME_DIR": "/run/user/7"}, uid: 7, want: "/run/user/7/liminald/liminald.sock"},
		{name: "Default", uid: 7, want: "/tmp/liminald-7/liminald.sock"},
		{name: "Root", uid: 0, want: "/run/liminald/liminald.sock"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := func(k string) string { return tt.env[k] }
			if got := FindSocket(env, tt.uid); got != tt.want {
				t.Errorf("FindSocket(%v, %d) = %q, want %q", tt.env, tt.uid, got, tt.want)
			}
		})
	}
}
