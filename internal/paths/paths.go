// Package paths says where liminald's files are when no setting names
// them (SPEC §5): the socket, the database and the configuration file. The
// daemon and the Go client both use it, so that a client looks for the
// socket where the daemon listens.
package paths

import (
	"path/filepath"
	"strconv"
)

// SocketEnv is the environment variable that names the socket, for the
// daemon and its clients alike.
const SocketEnv = "LIMINAL_SOCKET"

// Socket returns the socket path used when none is configured:
// $XDG_RUNTIME_DIR/liminald/liminald.sock, else /run/liminald/liminald.sock
// for root (uid 0), else /tmp/liminald-<uid>/liminald.sock. env reads the
// environment, like os.Getenv; a relative XDG_RUNTIME_DIR is ignored, as the
// XDG base directory specification asks. TMPDIR is not consulted: clients
// started with another TMPDIR must find the same socket.
func Socket(env func(string) string, uid int) string {
	if dir := xdgDir(env, "XDG_RUNTIME_DIR"); dir != "" {
		return filepath.Join(dir, "liminald", "liminald.sock")
	}
	if uid == 0 {
		return "/run/liminald/liminald.sock"
	}
	return filepath.Join("/tmp", "liminald-"+strconv.Itoa(uid), "liminald.sock")
}

// FindSocket returns the socket a client of user uid talks to when it is
// given none: the one $LIMINAL_SOCKET names, else Socket. It does not read
// the daemon's configuration file; a socket set only there is found by
// the command line, which reads it as serve does.
func FindSocket(env func(string) string, uid int) string {
	if s := env(SocketEnv); s != "" {
		return s
	}
	return Socket(env, uid)
}

// DB returns the database path used when none is configured:
// $XDG_STATE_HOME/liminald/liminald.db, else
// <home>/.local/state/liminald/liminald.db, or "" when XDG_STATE_HOME is
// unset and home is empty.
func DB(env func(string) string, home string) string {
	if dir := xdgDir(env, "XDG_STATE_HOME"); dir != "" {
		return filepath.Join(dir, "liminald", "liminald.db")
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".local", "state", "liminald", "liminald.db")
}

// Config returns the configuration file read when none is named:
// $XDG_CONFIG_HOME/liminald/liminald.toml, else
// <home>/.config/liminald/liminald.toml, or "" when XDG_CONFIG_HOME is unset
// and home is empty.
func Config(env func(string) string, home string) string {
	if dir := xdgDir(env, "XDG_CONFIG_HOME"); dir != "" {
		return filepath.Join(dir, "liminald", "liminald.toml")
	}
	if home == "" {
		return ""
	}
	return filepath.Join(home, ".config", "liminald", "liminald.toml")
}

// xdgDir returns the XDG base directory in the variable name, or "" when it
// is unset or relative (which the specification says to ignore).
func xdgDir(env func(string) string, name string) string {
	dir := env(name)
	if !filepath.IsAbs(dir) {
		return ""
	}
	return dir
}
