// Package pgtest runs throwaway PostgreSQL clusters on a unix socket: for
// the tests of the PostgreSQL store and of the daemon on it (Start), and
// for the benchmarks' PostgreSQL peer (BinDir, Owner, MakeDir, Initdb,
// Command).
//
// It is not under internal/ because bench/, a Go module of its own, uses
// it too: Go lets a package import an internal/ package only from within
// the tree that holds it, in the same module, and bench/ reaches liminald
// through a replace, as another module.
//
// PostgreSQL refuses to run as root. Run as root (as the tests are here
// and in CI), a cluster belongs to, and runs as, the postgres user that
// Debian's packages make, else nobody; run as anyone else, it is theirs.
package pgtest

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// BinDir returns the directory of initdb, postgres, createdb and psql:
// that of initdb on PATH (after symbolic links), else Debian's
// /usr/lib/postgresql/<version>/bin, the newest version there.
func BinDir() (string, error) {
	if p, err := exec.LookPath("initdb"); err == nil {
		if real, err := filepath.EvalSymlinks(p); err == nil {
			p = real
		}
		return filepath.Dir(p), nil
	}
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	if len(found) == 0 {
		return "", errors.New("postgresql: no initdb on PATH nor in /usr/lib/postgresql/*/bin (Debian: apt-get install postgresql-15)")
	}
	best := found[0]
	for _, p := range found[1:] {
		if major(p) > major(best) {
			best = p
		}
	}
	return filepath.Dir(best), nil
}

// major is the version in a path /usr/lib/postgresql/<version>/bin/initdb.
func major(initdb string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(initdb))))
	return v
}

// Owner returns the user a cluster belongs to and runs as: nil (the
// current user) unless the process runs as root, then the postgres user,
// else nobody.
func Owner() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return nil, err
		}
		gid, err := strconv.ParseUint(u.Gid, 10, 32)
		if err != nil {
			return nil, err
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	return nil, fmt.Errorf("postgresql refuses to run as root, and no user to run it as: %w", errors.Join(errs...))
}

// MakeDir makes dir (its parent must exist), 0700, belonging to owner
// when it is not nil.
func MakeDir(dir string, owner *syscall.Credential) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	if owner == nil {
		return nil
	}
	return os.Chown(dir, int(owner.Uid), int(owner.Gid))
}

// initdbArgs are how every cluster is made: trust authentication on the
// socket (only its owner's processes and root can reach it: see Command),
// the superuser postgres, UTF8 and the C locale. --no-sync only spares
// initdb's own flush: the server runs with fsync on.
var initdbArgs = []string{"-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"}

// Initdb makes a cluster in data, which must not exist; its parent must
// belong to owner (see MakeDir). It copies a template cluster that it
// makes with initdb once per machine and PostgreSQL version, in the
// user's cache directory: initdb takes seconds, a copy a tenth of one.
// Without a cache directory it runs initdb.
func Initdb(bin, data string, owner *syscall.Credential) error {
	tmpl, err := template(bin, owner)
	if err != nil {
		return initdb(bin, data, owner)
	}
	// cp -a keeps the files' owner and modes, which postgres checks.
	if out, err := exec.Command("cp", "-a", tmpl, data).CombinedOutput(); err != nil {
		return fmt.Errorf("copy template cluster: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func initdb(bin, data string, owner *syscall.Credential) error {
	cmd := exec.Command(filepath.Join(bin, "initdb"), append([]string{"-D", data}, initdbArgs...)...)
	cmd.Dir = filepath.Dir(data)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: owner}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

var templates sync.Map // the path of the template, by bin directory and owner

// template returns the template cluster for bin and owner, making it if
// it is not in the cache yet. It is made in a temporary directory (the
// owner may not reach the cache) and copied into the cache under a
// temporary name, then renamed: a concurrent test process makes its own
// and one of them wins.
func template(bin string, owner *syscall.Credential) (string, error) {
	version, err := exec.Command(filepath.Join(bin, "postgres"), "--version").Output()
	if err != nil {
		return "", err
	}
	uid := os.Geteuid()
	if owner != nil {
		uid = int(owner.Uid)
	}
	key := sha256.Sum256(fmt.Appendf(nil, "%s\n%s\n%d\n%s", bin, version, uid, strings.Join(initdbArgs, " ")))
	if p, ok := templates.Load(key); ok {
		return p.(string), nil
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "liminald-pgtest")
	path := filepath.Join(dir, hex.EncodeToString(key[:8]))
	if _, err := os.Stat(filepath.Join(path, "PG_VERSION")); err == nil {
		templates.Store(key, path)
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp("", "pgtest-initdb-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	if owner != nil {
		if err := os.Chown(tmp, int(owner.Uid), int(owner.Gid)); err != nil {
			return "", err
		}
	}
	if err := initdb(bin, filepath.Join(tmp, "data"), owner); err != nil {
		return "", err
	}
	staged, err := os.MkdirTemp(dir, "staged-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(staged)
	if out, err := exec.Command("cp", "-a", filepath.Join(tmp, "data"), filepath.Join(staged, "data")).CombinedOutput(); err != nil {
		return "", fmt.Errorf("copy template cluster: %w\n%s", err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(filepath.Join(staged, "data"), path); err != nil {
		if _, serr := os.Stat(filepath.Join(path, "PG_VERSION")); serr != nil {
			return "", err
		}
	}
	templates.Store(key, path)
	return path, nil
}

// Command returns the command that runs postgres on the cluster in data,
// as owner, reachable only on a unix socket in socketDir (no TCP), with
// fsync on and settings ("name=value") on top.
func Command(bin, data, socketDir string, owner *syscall.Credential, settings ...string) *exec.Cmd {
	args := []string{"-D", data, "-c", "listen_addresses=", "-c", "unix_socket_directories=" + socketDir,
		"-c", "unix_socket_permissions=0700", "-c", "fsync=on"}
	for _, kv := range settings {
		args = append(args, "-c", kv)
	}
	cmd := exec.Command(filepath.Join(bin, "postgres"), args...)
	cmd.Dir = socketDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: owner}
	return cmd
}
