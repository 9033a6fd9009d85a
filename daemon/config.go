package daemon

import (
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"liminald/conversation"
)

// Config is every setting of the daemon. Start from DefaultConfig, or let
// Load build one from the defaults, the configuration file, the environment
// and the command line.
//
// A Config is a plain value: building, parsing and validating one has no
// side effects, so a reload that is rejected changes nothing.
type Config struct {
	// Socket is the path of the unix socket. Empty means DefaultSocketPath,
	// which Load fills in.
	Socket string `toml:"socket"`

	// DB is the path of the SQLite database, or the postgres:// (or
	// postgresql://) URL of a PostgreSQL database that several daemons may
	// share (SPEC §10). Empty means DefaultDBPath, which Load fills in. A
	// DB that looks like a URL of another scheme is refused (see CheckDB).
	DB string `toml:"db"`

	// ConnectTimeout is how long the daemon waits at start for the
	// PostgreSQL server of a postgres:// DB to accept a connection, trying
	// again with a backoff, before it gives up. A SQLite DB ignores it.
	ConnectTimeout time.Duration `toml:"connect_timeout"`

	// Sync is "full" (every acknowledged write is fsynced: it survives power
	// loss) or "normal" (it survives a crash of the process only).
	Sync string `toml:"sync"`

	// SocketMode is the permission bits of the socket file, at most 0777. In
	// TOML it is an octal string ("0660") or an octal integer (0o660).
	SocketMode os.FileMode `toml:"-"`

	// SocketGroup is the group the socket file is given, by name or numeric
	// gid. Empty leaves the group the daemon creates it with.
	SocketGroup string `toml:"socket_group"`

	// AllowUIDs and AllowGIDs restrict which peers may talk to the daemon;
	// see AllowList for the rule. Both empty allows every peer that can open
	// the socket.
	AllowUIDs []uint32 `toml:"allow_uids"`
	AllowGIDs []uint32 `toml:"allow_gids"`

	// MaxLineBytes is the longest request line accepted, at least 1024.
	MaxLineBytes int `toml:"max_line_bytes"`

	// MaxConnections is how many clients may be connected at once.
	MaxConnections int `toml:"max_connections"`

	// LogLevel is "debug", "info", "warn" or "error".
	LogLevel string `toml:"log_level"`

	// LogFormat is "text" or "json".
	LogFormat string `toml:"log_format"`

	// Metrics is where the Prometheus endpoint listens: "" (off), a loopback
	// host:port such as "127.0.0.1:9464", or "unix:" and a socket path; with
	// MetricsPublic, any host:port.
	Metrics string `toml:"metrics"`

	// MetricsPublic lets Metrics name an address that is not a loopback one,
	// such as ":9464" (every interface), for a scraper on another host: a
	// Prometheus that scrapes a Kubernetes pod by its IP.
	MetricsPublic bool `toml:"metrics_public"`

	// MaxAttempts is how many times a message may be started (since it
	// was received or released) before it is quarantined; 0 for no limit.
	MaxAttempts int64 `toml:"max_attempts"`

	// RetainFinished is how long a finished message keeps its events: one
	// finished longer ago is compacted into a tombstone (SPEC §8). In TOML
	// a duration string ("168h"). 0 keeps every event.
	RetainFinished time.Duration `toml:"retain_finished"`

	// RetainTombstones is how long a tombstone is kept after its message
	// finished; one older is dropped and its conversation's
	// forgotten_before moves on. 0 keeps every tombstone.
	RetainTombstones time.Duration `toml:"retain_tombstones"`
}

const (
	minMaxLineBytes = 1024
	maxMaxLineBytes = 1 << 30 // 1 GiB: one line is held in memory whole
)

// DefaultConfig returns the settings used where nothing else sets them. Its
// Socket and DB are empty: their defaults depend on the environment and the
// user, and Load fills them in (see DefaultSocketPath and DefaultDBPath).
func DefaultConfig() Config {
	return Config{
		Sync:           "full",
		ConnectTimeout: 30 * time.Second,
		SocketMode:     0o600,
		MaxLineBytes:   1 << 20,
		MaxConnections: 1024,
		LogLevel:       "info",
		LogFormat:      "text",
	}
}

// AllowList returns the peers the configuration allows.
func (c Config) AllowList() AllowList {
	return AllowList{UIDs: slices.Clone(c.AllowUIDs), GIDs: slices.Clone(c.AllowGIDs)}
}

// SettingError is a setting that is unknown or has an invalid value. Setting
// is the setting's TOML key ("socket_mode").
type SettingError struct {
	Setting string
	Err     error
}

func (e *SettingError) Error() string { return "setting " + e.Setting + ": " + e.Err.Error() }

func (e *SettingError) Unwrap() error { return e.Err }

// Parse reads a TOML configuration over DefaultConfig: a key that is absent
// keeps its default. It returns the decoder's error (which gives the line) for
// malformed TOML or a value of the wrong type, and a *SettingError wrapping
// ErrUnknownSetting for each key that names no setting. It does not call
// Validate.
func Parse(r io.Reader) (Config, error) {
	// socket_mode is decoded beside Config, not into it, so that it can be
	// written as an octal string as well as an integer.
	file := struct {
		Config
		SocketMode any `toml:"socket_mode"`
	}{Config: DefaultConfig()}
	md, err := toml.NewDecoder(r).Decode(&file)
	if err != nil {
		return Config{}, err
	}
	var errs []error
	var reported []string
	for _, key := range md.Undecoded() {
		name := key.String()
		// A whole unknown table is reported once, not once per key in it.
		if slices.ContainsFunc(reported, func(p string) bool { return strings.HasPrefix(name, p+".") }) {
			continue
		}
		reported = append(reported, name)
		errs = append(errs, &SettingError{Setting: name, Err: ErrUnknownSetting})
	}
	c := file.Config
	if file.SocketMode != nil {
		mode, err := modeOf(file.SocketMode)
		if err != nil {
			errs = append(errs, &SettingError{Setting: "socket_mode", Err: err})
		}
		c.SocketMode = mode
	}
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return c, nil
}

// modeOf reads a socket_mode written in TOML as a string or an integer.
func modeOf(v any) (os.FileMode, error) {
	switch v := v.(type) {
	case string:
		return ParseMode(v)
	case int64:
		if v < 0 || v > 0o777 {
			return 0, fmt.Errorf("%d is not a permission mode (at most 0o777): write it in octal, like 0o600 or \"0600\"", v)
		}
		return os.FileMode(v), nil
	default:
		return 0, fmt.Errorf("want an octal string like \"0600\", not %T", v)
	}
}

// ParseMode reads a permission mode written in octal: "0600", "600" or
// "0o600". It returns an error for anything else, or for a mode over 0777
// (setuid, setgid and sticky bits mean nothing on a socket).
func ParseMode(s string) (os.FileMode, error) {
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0o"), "0O")
	m, err := strconv.ParseUint(digits, 8, 32)
	if err != nil || digits == "" {
		return 0, fmt.Errorf("%q is not an octal permission mode like \"0600\"", s)
	}
	if m > 0o777 {
		return 0, fmt.Errorf("%q is not a permission mode (at most 0777)", s)
	}
	return os.FileMode(m), nil
}

// Validate checks every setting. It returns nil, or one *SettingError for
// each invalid setting (joined with errors.Join), naming the setting and
// what is wrong with it.
func (c Config) Validate() error {
	var errs []error
	bad := func(setting string, err error) {
		errs = append(errs, &SettingError{Setting: setting, Err: err})
	}
	if c.Socket == "" {
		bad("socket", errors.New("no path, and no default (neither XDG_RUNTIME_DIR nor the user id gave one)"))
	} else if err := CheckSocketPath(c.Socket); err != nil {
		bad("socket", err)
	}
	if c.DB == "" {
		bad("db", errors.New("no path, and no default (neither XDG_STATE_HOME nor HOME is set)"))
	} else if err := CheckDB(c.DB); err != nil {
		bad("db", err)
	}
	if c.ConnectTimeout < time.Millisecond {
		bad("connect_timeout", fmt.Errorf("%v is out of range (at least 1ms)", c.ConnectTimeout))
	}
	if c.Sync != "full" && c.Sync != "normal" {
		bad("sync", fmt.Errorf("%q is neither \"full\" nor \"normal\"", c.Sync))
	}
	if c.SocketMode&^0o777 != 0 {
		bad("socket_mode", fmt.Errorf("%#o is not a permission mode (at most 0777)", uint32(c.SocketMode)))
	}
	if err := checkGroup(c.SocketGroup); err != nil {
		bad("socket_group", err)
	}
	if c.MaxLineBytes < minMaxLineBytes || c.MaxLineBytes > maxMaxLineBytes {
		bad("max_line_bytes", fmt.Errorf("%d is out of range (%d to %d)", c.MaxLineBytes, minMaxLineBytes, maxMaxLineBytes))
	}
	if c.MaxConnections < 1 {
		bad("max_connections", fmt.Errorf("%d is out of range (at least 1)", c.MaxConnections))
	}
	if c.MaxAttempts < 0 {
		bad("max_attempts", fmt.Errorf("%d is out of range (0 for no limit, or at least 1)", c.MaxAttempts))
	}
	for _, r := range []struct {
		key string
		d   time.Duration
	}{{"retain_finished", c.RetainFinished}, {"retain_tombstones", c.RetainTombstones}} {
		if r.d < 0 || r.d > 0 && r.d < time.Millisecond {
			bad(r.key, fmt.Errorf("%v is out of range (0 to keep everything, or at least 1ms)", r.d))
		}
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		bad("log_level", err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format", fmt.Errorf("%q is neither \"text\" nor \"json\"", c.LogFormat))
	}
	if _, _, err := metricsAddress(c.Metrics, c.MetricsPublic); err != nil {
		bad("metrics", err)
	}
	return errors.Join(errs...)
}

// checkGroup checks the form of a socket_group; whether the group exists is
// known only when the socket is made (see Listen).
func checkGroup(g string) error {
	if g == "" {
		return nil
	}
	if g[0] >= '0' && g[0] <= '9' {
		if _, err := strconv.ParseUint(g, 10, 32); err != nil {
			return fmt.Errorf("%q is not a group name or a numeric gid", g)
		}
		return nil
	}
	if strings.ContainsFunc(g, func(r rune) bool { return r == ':' || r == '/' || r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("%q is not a group name or a numeric gid", g)
	}
	return nil
}

// setting is one setting of Config: its TOML key, its environment variable,
// whether a running daemon can take a new value without a restart, how to
// read it from the environment and how to compare it. The table settings
// below is the one place that says these things.
type setting struct {
	key   string
	env   string
	live  bool
	parse func(c *Config, s string) error
	equal func(a, b *Config) bool
}

const (
	changesLive  = true
	needsRestart = false
)

var settings = []setting{
	scalar("socket", "LIMINAL_SOCKET", needsRestart, func(c *Config) *string { return &c.Socket }, parseString),
	scalar("db", "LIMINAL_DB", needsRestart, func(c *Config) *string { return &c.DB }, parseString),
	scalar("connect_timeout", "LIMINAL_CONNECT_TIMEOUT", needsRestart, func(c *Config) *time.Duration { return &c.ConnectTimeout }, parseDuration),
	scalar("sync", "LIMINAL_SYNC", needsRestart, func(c *Config) *string { return &c.Sync }, parseString),
	scalar("socket_mode", "LIMINAL_SOCKET_MODE", needsRestart, func(c *Config) *os.FileMode { return &c.SocketMode }, ParseMode),
	scalar("socket_group", "LIMINAL_SOCKET_GROUP", needsRestart, func(c *Config) *string { return &c.SocketGroup }, parseString),
	list("allow_uids", "LIMINAL_ALLOW_UIDS", changesLive, func(c *Config) *[]uint32 { return &c.AllowUIDs }),
	list("allow_gids", "LIMINAL_ALLOW_GIDS", changesLive, func(c *Config) *[]uint32 { return &c.AllowGIDs }),
	scalar("max_line_bytes", "LIMINAL_MAX_LINE_BYTES", changesLive, func(c *Config) *int { return &c.MaxLineBytes }, parseInt),
	scalar("max_connections", "LIMINAL_MAX_CONNECTIONS", changesLive, func(c *Config) *int { return &c.MaxConnections }, parseInt),
	scalar("log_level", "LIMINAL_LOG_LEVEL", changesLive, func(c *Config) *string { return &c.LogLevel }, parseString),
	scalar("log_format", "LIMINAL_LOG_FORMAT", needsRestart, func(c *Config) *string { return &c.LogFormat }, parseString),
	scalar("metrics", "LIMINAL_METRICS", needsRestart, func(c *Config) *string { return &c.Metrics }, parseString),
	scalar("metrics_public", "LIMINAL_METRICS_PUBLIC", needsRestart, func(c *Config) *bool { return &c.MetricsPublic }, parseBool),
	scalar("max_attempts", "LIMINAL_MAX_ATTEMPTS", changesLive, func(c *Config) *int64 { return &c.MaxAttempts }, parseInt64),
	scalar("retain_finished", "LIMINAL_RETAIN_FINISHED", changesLive, func(c *Config) *time.Duration { return &c.RetainFinished }, parseDuration),
	scalar("retain_tombstones", "LIMINAL_RETAIN_TOMBSTONES", changesLive, func(c *Config) *time.Duration { return &c.RetainTombstones }, parseDuration),
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like \"90s\" or \"168h\"", s)
	}
	return d, nil
}

// Retention returns the retention the configuration sets.
func (c Config) Retention() conversation.Retention {
	return conversation.Retention{Finished: c.RetainFinished, Tombstones: c.RetainTombstones}
}

func parseString(s string) (string, error) { return s, nil }

func parseBool(s string) (bool, error) {
	b, err := strconv.ParseBool(s)
	if err != nil {
		return false, fmt.Errorf("%q is neither true nor false", s)
	}
	return b, nil
}

func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	return n, nil
}

func parseInt64(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not an integer", s)
	}
	return n, nil
}

func scalar[T comparable](key, env string, live bool, field func(*Config) *T, parse func(string) (T, error)) setting {
	return setting{
		key:  key,
		env:  env,
		live: live,
		parse: func(c *Config, s string) error {
			v, err := parse(s)
			if err != nil {
				return err
			}
			*field(c) = v
			return nil
		},
		equal: func(a, b *Config) bool { return *field(a) == *field(b) },
	}
}

// list is a setting holding ids, written in the environment as a
// comma-separated list ("1000,1001").
func list(key, env string, live bool, field func(*Config) *[]uint32) setting {
	return setting{
		key:  key,
		env:  env,
		live: live,
		parse: func(c *Config, s string) error {
			var ids []uint32
			for part := range strings.SplitSeq(s, ",") {
				id, err := strconv.ParseUint(strings.TrimSpace(part), 10, 32)
				if err != nil {
					return fmt.Errorf("%q is not a comma-separated list of ids", s)
				}
				ids = append(ids, uint32(id))
			}
			*field(c) = ids
			return nil
		},
		equal: func(a, b *Config) bool { return slices.Equal(*field(a), *field(b)) },
	}
}

// Diff names the settings whose values differ between c, the running
// configuration, and next, a reloaded one, by their TOML keys: live holds
// those a running daemon can take at once (max_line_bytes, max_connections,
// allow_uids, allow_gids, log_level, max_attempts, retain_finished,
// retain_tombstones), restart those it can take only when it
// starts again (socket, db, sync, socket_mode, socket_group, log_format,
// metrics, metrics_public).
// A reload with any restart setting is refused whole: the daemon keeps c.
func (c Config) Diff(next Config) (live, restart []string) {
	for _, s := range settings {
		if s.equal(&c, &next) {
			continue
		}
		if s.live {
			live = append(live, s.key)
		} else {
			restart = append(restart, s.key)
		}
	}
	return live, restart
}

// applyEnv sets each setting whose environment variable is set and not
// empty. It returns an error naming each variable it cannot read.
func applyEnv(c *Config, env func(string) string) error {
	var errs []error
	for _, s := range settings {
		v := env(s.env)
		if v == "" {
			continue
		}
		if err := s.parse(c, v); err != nil {
			errs = append(errs, fmt.Errorf("environment %s: %w", s.env, err))
		}
	}
	return errors.Join(errs...)
}

// Load builds the configuration from, lowest precedence first: DefaultConfig,
// a configuration file, the environment (read through env, like os.Getenv;
// see the variables below), and overrides, which applies the command line's
// flags to the config in place (nil for none). Socket and DB left empty by
// all of these are filled in with DefaultSocketPath and DefaultDBPath. The
// result is validated.
//
// The file is path when it is not empty (the --config flag), else the one
// LIMINAL_CONFIG names, else DefaultConfigPath. A file named by path or
// LIMINAL_CONFIG must exist; the default one is read only if it exists.
// Load returns the file it read, or "" when it read none: the file to watch
// for reloads.
//
// The environment variables are LIMINAL_SOCKET, LIMINAL_DB, LIMINAL_SYNC,
// LIMINAL_SOCKET_MODE, LIMINAL_SOCKET_GROUP, LIMINAL_ALLOW_UIDS and
// LIMINAL_ALLOW_GIDS (comma-separated), LIMINAL_MAX_LINE_BYTES,
// LIMINAL_MAX_CONNECTIONS, LIMINAL_LOG_LEVEL, LIMINAL_LOG_FORMAT,
// LIMINAL_METRICS, LIMINAL_METRICS_PUBLIC (true or false),
// LIMINAL_MAX_ATTEMPTS, LIMINAL_RETAIN_FINISHED and LIMINAL_RETAIN_TOMBSTONES
// (durations like "168h"); an empty one counts as unset.
//
// Load has no side effects: it only reads. It returns an error naming the
// file when the file cannot be read or parsed (see Parse), naming the
// variable when an environment variable cannot be read, the error of
// overrides, and the errors of Validate.
func Load(path string, env func(string) string, overrides func(*Config) error) (Config, string, error) {
	uid := os.Getuid()
	home := homeDir(env, uid)

	file, explicit := path, path != ""
	if file == "" {
		file = env("LIMINAL_CONFIG")
		explicit = file != ""
	}
	if file == "" {
		file = DefaultConfigPath(env, home)
	}

	c := DefaultConfig()
	if file != "" {
		fc, err := readConfig(file)
		switch {
		case err == nil:
			c = fc
		case !explicit && errors.Is(err, os.ErrNotExist):
			file = ""
		default:
			return Config{}, "", fmt.Errorf("config %s: %w", file, err)
		}
	}
	if err := applyEnv(&c, env); err != nil {
		return Config{}, "", err
	}
	if overrides != nil {
		if err := overrides(&c); err != nil {
			return Config{}, "", err
		}
	}
	if c.Socket == "" {
		c.Socket = DefaultSocketPath(env, uid)
	}
	if c.DB == "" {
		c.DB = DefaultDBPath(env, home)
	}
	if err := c.Validate(); err != nil {
		return Config{}, "", err
	}
	return c, file, nil
}

func readConfig(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, err
	}
	defer f.Close()
	return Parse(f)
}

// homeDir is $HOME, else the home directory of the user uid (a system
// service started without HOME), else "".
func homeDir(env func(string) string, uid int) string {
	if h := env("HOME"); h != "" {
		return h
	}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.HomeDir
	}
	return ""
}

// DBSchemes are the URL schemes a db setting may name instead of a file
// path: those of a PostgreSQL database.
var DBSchemes = []string{"postgres", "postgresql"}

// IsPostgres reports whether db names a PostgreSQL database: a URL of one
// of DBSchemes.
func IsPostgres(db string) bool {
	scheme := dbScheme(db)
	return scheme != "" && slices.ContainsFunc(DBSchemes, func(s string) bool { return strings.EqualFold(s, scheme) })
}

// DisplayDB is db as logs and status lines show it: a URL without its
// password.
func DisplayDB(db string) string {
	if !IsPostgres(db) {
		return db
	}
	u, err := url.Parse(db)
	if err != nil {
		return dbScheme(db) + "://..."
	}
	return u.Redacted()
}

// dbScheme returns the scheme of db when db looks like a URL: a scheme (a
// letter, then letters, digits, "+", "-" or "."; RFC 3986) followed by
// "://". Returns "" for a file path.
func dbScheme(db string) string {
	i := strings.Index(db, "://")
	if i < 1 {
		return ""
	}
	for j, r := range db[:i] {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case j > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return ""
		}
	}
	return db[:i]
}

// CheckDB refuses a db setting that looks like a URL of a scheme liminald
// does not know, such as postgres://u@/db before liminald had a store for
// it: taken for a file path, it would make a directory tree named like the
// URL and a SQLite file in it, silently. The error names the schemes
// liminald knows. A db that does not look like a URL is a file path, and
// passes.
func CheckDB(db string) error {
	scheme := dbScheme(db)
	if scheme == "" {
		return nil
	}
	for _, known := range DBSchemes {
		if strings.EqualFold(scheme, known) {
			return nil
		}
	}
	known := "none: db is the path of a SQLite file"
	if len(DBSchemes) > 0 {
		known = strings.Join(DBSchemes, ", ") + ", or the path of a SQLite file"
	}
	return fmt.Errorf("%q is a URL of scheme %q, which liminald does not know (known schemes: %s)", db, scheme, known)
}
