package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// validConfig returns DefaultConfig with the paths Load would fill in.
func validConfig() Config {
	c := DefaultConfig()
	c.Socket = "/run/liminald/liminald.sock"
	c.DB = "/var/lib/liminald/liminald.db"
	return c
}

// mapEnv returns an env function reading m, like os.Getenv.
func mapEnv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestConfig_Parse(t *testing.T) {
	tests := []struct {
		name    string
		toml    string
		want    func(*Config) // applied to DefaultConfig
		setting string        // when an error is wanted: the setting it names
	}{
		{name: "Empty", toml: "", want: func(*Config) {}},
		{name: "Comments", toml: "# nothing set\n\n", want: func(*Config) {}},
		{
			name: "EverySetting",
			toml: `
socket = "/s/l.sock"
db = "/d/l.db"
sync = "normal"
connect_timeout = "45s"
socket_mode = "0660"
socket_group = "liminal"
allow_uids = [1000, 1001]
allow_gids = [50]
max_line_bytes = 4096
max_connections = 8
log_level = "debug"
log_format = "json"
max_attempts = 5
retain_finished = "168h"
retain_tombstones = "720h"
`,
			want: func(c *Config) {
				*c = Config{
					Socket: "/s/l.sock", DB: "/d/l.db", ConnectTimeout: 45 * time.Second, Sync: "normal",
					SocketMode: 0o660, SocketGroup: "liminal",
					AllowUIDs: []uint32{1000, 1001}, AllowGIDs: []uint32{50},
					MaxLineBytes: 4096, MaxConnections: 8,
					LogLevel: "debug", LogFormat: "json", MaxAttempts: 5,
					RetainFinished: 168 * time.Hour, RetainTombstones: 720 * time.Hour,
				}
			},
		},
		{name: "SocketModeOctalInteger", toml: "socket_mode = 0o640", want: func(c *Config) { c.SocketMode = 0o640 }},
		{name: "SocketModeWithoutZero", toml: `socket_mode = "660"`, want: func(c *Config) { c.SocketMode = 0o660 }},
		{name: "SocketModeWithPrefix", toml: `socket_mode = "0o600"`, want: func(c *Config) { c.SocketMode = 0o600 }},
		{name: "EmptyAllowList", toml: "allow_uids = []", want: func(c *Config) { c.AllowUIDs = []uint32{} }},
		{name: "UnknownKey", toml: `sockt = "/x"`, setting: "sockt"},
		{name: "UnknownTable", toml: "[server]\nsocket = \"/x\"\nport = 1\n", setting: "server"},
		{name: "SocketModeNotOctal", toml: `socket_mode = "0699"`, setting: "socket_mode"},
		{name: "SocketModeSticky", toml: `socket_mode = "01777"`, setting: "socket_mode"},
		{name: "SocketModeDecimal", toml: "socket_mode = 660", setting: "socket_mode"},
		{name: "SocketModeBool", toml: "socket_mode = true", setting: "socket_mode"},
		{name: "WrongType", toml: `max_line_bytes = "big"`, setting: "max_line_bytes"},
		{name: "NegativeUID", toml: "allow_uids = [-1]", setting: "allow_uids"},
		{name: "Malformed", toml: "socket = ", setting: "socket"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tt.toml))
			if tt.setting != "" {
				if err == nil {
					t.Fatalf("Parse(%q) = %+v, want an error naming %s", tt.toml, got, tt.setting)
				}
				if !strings.Contains(err.Error(), tt.setting) {
					t.Errorf("Parse(%q) error = %q, want it to name %s", tt.toml, err, tt.setting)
				}
				return
			}
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.toml, err)
			}
			want := DefaultConfig()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Parse(%q) = %+v, want %+v", tt.toml, got, want)
			}
		})
	}

	t.Run("UnknownKeyIsSettingError", func(t *testing.T) {
		_, err := Parse(strings.NewReader("max_lines = 3\n[server]\nsocket = \"/x\"\n"))
		var se *SettingError
		if !errors.As(err, &se) || !errors.Is(err, ErrUnknownSetting) {
			t.Fatalf("Parse error = %v, want a *SettingError wrapping ErrUnknownSetting", err)
		}
		// The table is reported once, not once per key in it.
		if n := strings.Count(err.Error(), "server"); n != 1 {
			t.Errorf("Parse error = %q, names server %d times, want once", err, n)
		}
		if !strings.Contains(err.Error(), "max_lines") {
			t.Errorf("Parse error = %q, want it to name max_lines too", err)
		}
	})
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in   string
		want os.FileMode
		ok   bool
	}{
		{"0600", 0o600, true},
		{"600", 0o600, true},
		{"0o660", 0o660, true},
		{"0", 0, true},
		{"0777", 0o777, true},
		{"01000", 0, false},
		{"0800", 0, false},
		{"", 0, false},
		{"0o", 0, false},
		{"-600", 0, false},
		{"rw-------", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseMode(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseMode(%q) = %#o, %v; want %#o, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestConfig_Validate(t *testing.T) {
	tests := []struct {
		name    string
		change  func(*Config)
		setting string // "" when valid
	}{
		{name: "Default", change: func(*Config) {}},
		{name: "SyncNormal", change: func(c *Config) { c.Sync = "normal" }},
		{name: "GroupByName", change: func(c *Config) { c.SocketGroup = "liminal-users" }},
		{name: "GroupByID", change: func(c *Config) { c.SocketGroup = "1000" }},
		{name: "ModeZero", change: func(c *Config) { c.SocketMode = 0 }},
		{name: "MinLine", change: func(c *Config) { c.MaxLineBytes = 1024 }},
		{name: "JSONAtDebug", change: func(c *Config) { c.LogFormat, c.LogLevel = "json", "debug" }},
		{name: "LongestSocket", change: func(c *Config) { c.Socket = "/" + strings.Repeat("s", MaxSocketPathLen-1) }},
		{name: "NoSocket", change: func(c *Config) { c.Socket = "" }, setting: "socket"},
		{name: "SocketTooLong", change: func(c *Config) { c.Socket = "/" + strings.Repeat("s", MaxSocketPathLen) }, setting: "socket"},
		{name: "NoDB", change: func(c *Config) { c.DB = "" }, setting: "db"},
		{name: "DBRelative", change: func(c *Config) { c.DB = "state/liminald.db" }},
		{name: "DBColonInName", change: func(c *Config) { c.DB = "/d/a:b.db" }},
		{name: "DBSlashesAfterNoScheme", change: func(c *Config) { c.DB = "/d/x://y.db" }},
		{name: "DBPostgres", change: func(c *Config) { c.DB = "postgres://u@/db?host=/run/pg" }},
		{name: "DBPostgresql", change: func(c *Config) { c.DB = "postgresql://u:secret@db.internal:5432/liminald" }},
		{name: "DBUnknownURL", change: func(c *Config) { c.DB = "mysql://u@db/liminald" }, setting: "db"},
		{name: "DBUnknownURLUpperCase", change: func(c *Config) { c.DB = "MYSQL://db" }, setting: "db"},
		{name: "DBFileURL", change: func(c *Config) { c.DB = "file:///var/lib/liminald.db" }, setting: "db"},
		{name: "SyncOff", change: func(c *Config) { c.Sync = "off" }, setting: "sync"},
		{name: "ModeSetuid", change: func(c *Config) { c.SocketMode = 0o4600 }, setting: "socket_mode"},
		{name: "ModeSocketBit", change: func(c *Config) { c.SocketMode = os.ModeSocket | 0o600 }, setting: "socket_mode"},
		{name: "GroupWithColon", change: func(c *Config) { c.SocketGroup = "a:b" }, setting: "socket_group"},
		{name: "GroupWithSpace", change: func(c *Config) { c.SocketGroup = "a b" }, setting: "socket_group"},
		{name: "GroupIDTooBig", change: func(c *Config) { c.SocketGroup = "99999999999" }, setting: "socket_group"},
		{name: "LineTooShort", change: func(c *Config) { c.MaxLineBytes = 1023 }, setting: "max_line_bytes"},
		{name: "LineTooLong", change: func(c *Config) { c.MaxLineBytes = 1<<30 + 1 }, setting: "max_line_bytes"},
		{name: "NoConnections", change: func(c *Config) { c.MaxConnections = 0 }, setting: "max_connections"},
		{name: "NegativeAttempts", change: func(c *Config) { c.MaxAttempts = -1 }, setting: "max_attempts"},
		{name: "NegativeRetention", change: func(c *Config) { c.RetainFinished = -time.Second }, setting: "retain_finished"},
		{name: "RetentionUnderAMillisecond", change: func(c *Config) { c.RetainTombstones = time.Microsecond }, setting: "retain_tombstones"},
		{name: "RetentionOff", change: func(c *Config) { c.RetainFinished, c.RetainTombstones = 0, 0 }},
		{name: "NoConnectTimeout", change: func(c *Config) { c.ConnectTimeout = 0 }, setting: "connect_timeout"},
		{name: "LevelTrace", change: func(c *Config) { c.LogLevel = "trace" }, setting: "log_level"},
		{name: "LevelUpperCase", change: func(c *Config) { c.LogLevel = "INFO" }, setting: "log_level"},
		{name: "FormatXML", change: func(c *Config) { c.LogFormat = "xml" }, setting: "log_format"},
		{name: "MetricsLoopback", change: func(c *Config) { c.Metrics = "127.0.0.1:9464" }},
		{name: "MetricsLocalhost", change: func(c *Config) { c.Metrics = "localhost:9464" }},
		{name: "MetricsIPv6Loopback", change: func(c *Config) { c.Metrics = "[::1]:9464" }},
		{name: "MetricsUnix", change: func(c *Config) { c.Metrics = "unix:/run/liminald/metrics.sock" }},
		{name: "MetricsAllInterfaces", change: func(c *Config) { c.Metrics = ":9464" }, setting: "metrics"},
		{name: "MetricsAnyAddress", change: func(c *Config) { c.Metrics = "0.0.0.0:9464" }, setting: "metrics"},
		{name: "MetricsPodAddress", change: func(c *Config) { c.Metrics = "10.1.2.3:9464" }, setting: "metrics"},
		{name: "MetricsPublicAllInterfaces", change: func(c *Config) { c.Metrics, c.MetricsPublic = ":9464", true }},
		{name: "MetricsPublicAnyAddress", change: func(c *Config) { c.Metrics, c.MetricsPublic = "0.0.0.0:9464", true }},
		{name: "MetricsPublicPodAddress", change: func(c *Config) { c.Metrics, c.MetricsPublic = "10.1.2.3:9464", true }},
		{name: "MetricsPublicNoPort", change: func(c *Config) { c.Metrics, c.MetricsPublic = "10.1.2.3", true }, setting: "metrics"},
		{name: "MetricsNoPort", change: func(c *Config) { c.Metrics = "127.0.0.1" }, setting: "metrics"},
		{name: "MetricsEmptyUnix", change: func(c *Config) { c.Metrics = "unix:" }, setting: "metrics"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			tt.change(&c)
			err := c.Validate()
			if tt.setting == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			var se *SettingError
			if !errors.As(err, &se) || se.Setting != tt.setting {
				t.Errorf("Validate() = %v, want a *SettingError for %s", err, tt.setting)
			}
		})
	}

	t.Run("EveryError", func(t *testing.T) {
		c := validConfig()
		c.Sync, c.MaxConnections = "off", -1
		err := c.Validate()
		for _, s := range []string{"sync", "max_connections"} {
			if err == nil || !strings.Contains(err.Error(), "setting "+s+":") {
				t.Errorf("Validate() = %v, want it to name %s", err, s)
			}
		}
	})
}

func TestConfig_Diff(t *testing.T) {
	tests := []struct {
		name          string
		change        func(*Config)
		live, restart []string
	}{
		{name: "Same", change: func(*Config) {}},
		{name: "NilAndEmptyList", change: func(c *Config) { c.AllowUIDs = []uint32{} }},
		{name: "Limits", change: func(c *Config) { c.MaxLineBytes, c.MaxConnections = 2048, 10 }, live: []string{"max_line_bytes", "max_connections"}},
		{name: "AllowLists", change: func(c *Config) { c.AllowUIDs, c.AllowGIDs = []uint32{1}, []uint32{2} }, live: []string{"allow_uids", "allow_gids"}},
		{name: "LogLevel", change: func(c *Config) { c.LogLevel = "debug" }, live: []string{"log_level"}},
		{name: "MaxAttempts", change: func(c *Config) { c.MaxAttempts = 3 }, live: []string{"max_attempts"}},
		{name: "Retention", change: func(c *Config) { c.RetainFinished, c.RetainTombstones = time.Hour, 2*time.Hour },
			live: []string{"retain_finished", "retain_tombstones"}},
		{name: "Socket", change: func(c *Config) { c.Socket = "/other.sock" }, restart: []string{"socket"}},
		{name: "DB", change: func(c *Config) { c.DB = "/other.db" }, restart: []string{"db"}},
		{name: "Sync", change: func(c *Config) { c.Sync = "normal" }, restart: []string{"sync"}},
		{name: "SocketMode", change: func(c *Config) { c.SocketMode = 0o660 }, restart: []string{"socket_mode"}},
		{name: "SocketGroup", change: func(c *Config) { c.SocketGroup = "wheel" }, restart: []string{"socket_group"}},
		{name: "LogFormat", change: func(c *Config) { c.LogFormat = "json" }, restart: []string{"log_format"}},
		{name: "MetricsPublic", change: func(c *Config) { c.MetricsPublic = true }, restart: []string{"metrics_public"}},
		{
			name:    "Both",
			change:  func(c *Config) { c.LogLevel, c.Sync = "warn", "normal" },
			live:    []string{"log_level"},
			restart: []string{"sync"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			old := validConfig()
			next := validConfig()
			tt.change(&next)
			live, restart := old.Diff(next)
			if !reflect.DeepEqual(live, tt.live) || !reflect.DeepEqual(restart, tt.restart) {
				t.Errorf("Diff() = %q, %q; want %q, %q", live, restart, tt.live, tt.restart)
			}
		})
	}

	t.Run("EverySettingIsCompared", func(t *testing.T) {
		if n, want := len(settings), reflect.TypeFor[Config]().NumField(); n != want {
			t.Errorf("settings has %d entries, Config %d fields", n, want)
		}
	})
}

func TestLoad(t *testing.T) {
	home := t.TempDir()
	xdg := t.TempDir()
	writeFile := func(t *testing.T, path, text string) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	explicit := writeFile(t, filepath.Join(t.TempDir(), "explicit.toml"), "max_line_bytes = 2048\nlog_level = \"warn\"\n")
	defaultFile := filepath.Join(xdg, "config", "liminald", "liminald.toml")
	writeFile(t, defaultFile, "max_connections = 7\n")
	bad := writeFile(t, filepath.Join(t.TempDir(), "bad.toml"), "colour = \"blue\"\n")

	base := map[string]string{"HOME": home, "XDG_RUNTIME_DIR": filepath.Join(xdg, "run")}
	withDefaultFile := map[string]string{"HOME": home, "XDG_RUNTIME_DIR": filepath.Join(xdg, "run"), "XDG_CONFIG_HOME": filepath.Join(xdg, "config")}
	with := func(m map[string]string, kv ...string) map[string]string {
		out := map[string]string{}
		for k, v := range m {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		return out
	}

	tests := []struct {
		name      string
		path      string
		env       map[string]string
		overrides func(*Config) error
		want      func(*Config) // applied to the defaults with the default paths
		file      string
		errHas    string // when an error is wanted: text it must hold
	}{
		{name: "Defaults", env: base, want: func(*Config) {}},
		{name: "DefaultFile", env: withDefaultFile, file: defaultFile, want: func(c *Config) { c.MaxConnections = 7 }},
		{name: "ExplicitFile", path: explicit, env: withDefaultFile, file: explicit, want: func(c *Config) { c.MaxLineBytes, c.LogLevel = 2048, "warn" }},
		{name: "ConfigFromEnvironment", env: with(base, "LIMINAL_CONFIG", explicit), file: explicit, want: func(c *Config) { c.MaxLineBytes, c.LogLevel = 2048, "warn" }},
		{name: "FlagBeatsEnvironmentFile", path: explicit, env: with(base, "LIMINAL_CONFIG", bad), file: explicit, want: func(c *Config) { c.MaxLineBytes, c.LogLevel = 2048, "warn" }},
		{name: "MaxAttemptsFromEnvironment", env: with(base, "LIMINAL_MAX_ATTEMPTS", "4"), want: func(c *Config) { c.MaxAttempts = 4 }},
		{
			name: "RetentionFromEnvironment", env: with(base, "LIMINAL_RETAIN_FINISHED", "90s", "LIMINAL_RETAIN_TOMBSTONES", "168h"),
			want: func(c *Config) { c.RetainFinished, c.RetainTombstones = 90*time.Second, 168*time.Hour },
		},
		{name: "ConnectTimeoutFromEnvironment", env: with(base, "LIMINAL_CONNECT_TIMEOUT", "2m"), want: func(c *Config) { c.ConnectTimeout = 2 * time.Minute }},
		{name: "RetentionNotADuration", env: with(base, "LIMINAL_RETAIN_FINISHED", "a week"), errHas: "LIMINAL_RETAIN_FINISHED"},
		{
			name: "MetricsPublicFromEnvironment", env: with(base, "LIMINAL_METRICS", ":9464", "LIMINAL_METRICS_PUBLIC", "true"),
			want: func(c *Config) { c.Metrics, c.MetricsPublic = ":9464", true },
		},
		{name: "EnvironmentBeatsFile", path: explicit, env: with(base, "LIMINAL_MAX_LINE_BYTES", "4096"), file: explicit, want: func(c *Config) { c.MaxLineBytes, c.LogLevel = 4096, "warn" }},
		{
			name: "FlagsBeatEnvironment", path: explicit, env: with(base, "LIMINAL_MAX_LINE_BYTES", "4096"), file: explicit,
			overrides: func(c *Config) error { c.MaxLineBytes = 8192; return nil },
			want:      func(c *Config) { c.MaxLineBytes, c.LogLevel = 8192, "warn" },
		},
		{
			name: "EveryVariable",
			env: with(base,
				"LIMINAL_SOCKET", "/e/l.sock", "LIMINAL_DB", "/e/l.db", "LIMINAL_CONNECT_TIMEOUT", "1m", "LIMINAL_SYNC", "normal",
				"LIMINAL_SOCKET_MODE", "0660", "LIMINAL_SOCKET_GROUP", "staff",
				"LIMINAL_ALLOW_UIDS", "1000, 1001", "LIMINAL_ALLOW_GIDS", "20",
				"LIMINAL_MAX_LINE_BYTES", "2048", "LIMINAL_MAX_CONNECTIONS", "3",
				"LIMINAL_LOG_LEVEL", "error", "LIMINAL_LOG_FORMAT", "json"),
			want: func(c *Config) {
				*c = Config{
					Socket: "/e/l.sock", DB: "/e/l.db", ConnectTimeout: time.Minute, Sync: "normal", SocketMode: 0o660, SocketGroup: "staff",
					AllowUIDs: []uint32{1000, 1001}, AllowGIDs: []uint32{20}, MaxLineBytes: 2048, MaxConnections: 3,
					LogLevel: "error", LogFormat: "json",
				}
			},
		},
		{name: "DBOfUnknownScheme", env: with(base, "LIMINAL_DB", "mysql://u@/db"), errHas: `known schemes: postgres, postgresql`},
		{name: "StateHome", env: with(base, "XDG_STATE_HOME", "/state"), want: func(c *Config) { c.DB = "/state/liminald/liminald.db" }},
		{name: "EmptyVariableIsUnset", env: with(base, "LIMINAL_SYNC", ""), want: func(*Config) {}},
		{name: "MissingExplicitFile", path: filepath.Join(home, "missing.toml"), env: base, errHas: "missing.toml"},
		{name: "MissingFileFromEnvironment", env: with(base, "LIMINAL_CONFIG", filepath.Join(home, "gone.toml")), errHas: "gone.toml"},
		{name: "UnknownSettingInFile", path: bad, env: base, errHas: "colour"},
		{name: "BadVariable", env: with(base, "LIMINAL_MAX_CONNECTIONS", "many"), errHas: "LIMINAL_MAX_CONNECTIONS"},
		{name: "BadList", env: with(base, "LIMINAL_ALLOW_GIDS", "1,,2"), errHas: "LIMINAL_ALLOW_GIDS"},
		{name: "BadMode", env: with(base, "LIMINAL_SOCKET_MODE", "rw"), errHas: "LIMINAL_SOCKET_MODE"},
		{name: "BadBool", env: with(base, "LIMINAL_METRICS_PUBLIC", "yes please"), errHas: "LIMINAL_METRICS_PUBLIC"},
		{name: "PublicMetricsWithoutConsent", env: with(base, "LIMINAL_METRICS", ":9464"), errHas: "metrics_public"},
		{name: "InvalidAfterFlags", env: base, overrides: func(c *Config) error { c.Sync = "fast"; return nil }, errHas: "setting sync"},
		{name: "FlagError", env: base, overrides: func(*Config) error { return errors.New("bad --sync") }, errHas: "bad --sync"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, file, err := Load(tt.path, mapEnv(tt.env), tt.overrides)
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("Load() error = %v, want one holding %q", err, tt.errHas)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load(): %v", err)
			}
			want := DefaultConfig()
			want.Socket = filepath.Join(xdg, "run", "liminald", "liminald.sock")
			want.DB = filepath.Join(home, ".local", "state", "liminald", "liminald.db")
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load() = %+v, want %+v", got, want)
			}
			if file != tt.file {
				t.Errorf("Load() file = %q, want %q", file, tt.file)
			}
		})
	}
}

// TestConfig_DocumentedExample: docs/liminald.toml, the documented example
// of every key, parses to exactly the defaults it claims to show.
func TestConfig_DocumentedExample(t *testing.T) {
	f, err := os.Open("../docs/liminald.toml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := Parse(f)
	if err != nil {
		t.Fatalf("Parse(docs/liminald.toml): %v", err)
	}
	if len(got.AllowUIDs) == 0 && len(got.AllowGIDs) == 0 {
		got.AllowUIDs, got.AllowGIDs = nil, nil // [] in the file is the default: no list
	}
	if want := DefaultConfig(); !reflect.DeepEqual(got, want) {
		t.Errorf("docs/liminald.toml = %+v, want the defaults %+v", got, want)
	}
}

// A db that looks like a URL of a scheme liminald does not know stops the
// daemon before it makes anything: taken for a relative path, it used to
// make a directory tree named like the URL and serve a SQLite file in it.
func TestRun_DBOfUnknownScheme(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	env := map[string]string{
		"HOME": dir, "LIMINAL_SOCKET": filepath.Join(dir, "l.sock"),
		"LIMINAL_DB": "mysql://u@/db?host=/run/db",
	}
	var logs strings.Builder
	err := Run(t.Context(), Options{Env: mapEnv(env), Stderr: &logs})
	var se *SettingError
	if !errors.As(err, &se) || se.Setting != "db" || !strings.Contains(err.Error(), "known schemes") {
		t.Fatalf("Run() = %v, want a *SettingError for db naming the known schemes", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("Run() refused the db but left %s in the working directory", e.Name())
	}
}

func TestDisplayDB(t *testing.T) {
	for _, tt := range []struct{ db, want string }{
		{"/var/lib/liminald/liminald.db", "/var/lib/liminald/liminald.db"},
		{"postgres://u@/db?host=/run/pg", "postgres://u@/db?host=/run/pg"},
		{"postgresql://u:secret@db.internal/liminald", "postgresql://u:xxxxx@db.internal/liminald"},
	} {
		if got := DisplayDB(tt.db); got != tt.want {
			t.Errorf("DisplayDB(%q) = %q, want %q", tt.db, got, tt.want)
		}
	}
}
