package main

import (
	"fmt"
	"strconv"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
)

// serveCommand runs the daemon: liminald serve.
type serveCommand struct{}

// Command describes serve. Its flags have no Value: a flag that is not
// given leaves the setting to the environment, the configuration file and
// daemon.DefaultConfig, in that order, so the help shows the default of
// DefaultConfig as text.
func (cmd serveCommand) Command() *cli.Command {
	def := daemon.DefaultConfig()
	return &cli.Command{
		Name:  "serve",
		Usage: "run the daemon",
		Description: "Settings come from the flags, else the LIMINAL_* environment variables, else the " +
			"configuration file, else the defaults. SIGHUP or an edit of the configuration file reloads " +
			"what can change live; SIGTERM or SIGINT stops the daemon cleanly.",
		Flags: []cli.Flag{
			configFlag,
			&cli.StringFlag{Name: "socket", Usage: "unix socket `PATH`",
				DefaultText: "$XDG_RUNTIME_DIR/liminald/liminald.sock, else /run/liminald/liminald.sock for root, else /tmp/liminald-UID/liminald.sock"},
			&cli.StringFlag{Name: "db", Usage: "SQLite database `PATH`, or the postgres:// URL of a database daemons on several hosts share",
				DefaultText: "$XDG_STATE_HOME/liminald/liminald.db, else ~/.local/state/liminald/liminald.db"},
			&cli.StringFlag{Name: "sync", Usage: "full (acknowledged writes survive power loss) or normal (they survive a crash of the process)",
				DefaultText: def.Sync},
			&cli.StringFlag{Name: "socket-mode", Usage: "permission bits of the socket, in octal",
				DefaultText: fmt.Sprintf("%04o", def.SocketMode)},
			&cli.StringFlag{Name: "socket-group", Usage: "group of the socket, by name or gid",
				DefaultText: "the daemon's group"},
			&cli.Int64SliceFlag{Name: "allow-uid", Usage: "allow only peers with this uid (repeatable)",
				DefaultText: "every peer that can open the socket"},
			&cli.Int64SliceFlag{Name: "allow-gid", Usage: "allow only peers with this gid (repeatable)",
				DefaultText: "every peer that can open the socket"},
			&cli.IntFlag{Name: "max-line-bytes", Usage: "longest request line",
				DefaultText: strconv.Itoa(def.MaxLineBytes)},
			&cli.IntFlag{Name: "max-connections", Usage: "most connections at once",
				DefaultText: strconv.Itoa(def.MaxConnections)},
			&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error",
				DefaultText: def.LogLevel},
			&cli.StringFlag{Name: "log-format", Usage: "text or json",
				DefaultText: def.LogFormat},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on a loopback `ADDR` (127.0.0.1:9464) or unix:PATH; another address with --metrics-public",
				DefaultText: "off"},
			&cli.BoolFlag{Name: "metrics-public", Usage: "let --metrics listen on an address that is not a loopback one, such as :9464 (every interface), for a scraper on another host"},
			&cli.Int64Flag{Name: "max-attempts", Usage: "quarantine a message once it was started this many times since it was received or released (0 for no limit)",
				DefaultText: "no limit"},
			&cli.DurationFlag{Name: "connect-timeout", Usage: "with a postgres:// --db, how long to wait at start for the server to accept a connection",
				DefaultText: def.ConnectTimeout.String()},
			&cli.DurationFlag{Name: "retain-finished", Usage: "compact a message into a tombstone once it finished this long ago, such as 168h (0 keeps every event)",
				DefaultText: "keep all"},
			&cli.DurationFlag{Name: "retain-tombstones", Usage: "drop a tombstone once its message finished this long ago, moving its conversation's forgotten_before (0 keeps every tombstone)",
				DefaultText: "keep all"},
		},
		Action: cmd.Run,
	}
}

// Run runs the daemon until it is stopped. Returns daemon.Run's error.
func (serveCommand) Run(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("serve takes no arguments")
	}
	return daemon.Run(c.Context, daemon.Options{
		ConfigPath: c.String("config"),
		Overrides:  serveOverrides(c),
		Stderr:     c.App.ErrWriter,
		Version:    versionString(),
	})
}

// serveOverrides applies the flags that were given over the configuration.
func serveOverrides(c *cli.Context) func(*daemon.Config) error {
	return func(cfg *daemon.Config) error {
		if err := socketAndDBOverrides(c)(cfg); err != nil {
			return err
		}
		if c.IsSet("sync") {
			cfg.Sync = c.String("sync")
		}
		if c.IsSet("socket-mode") {
			mode, err := daemon.ParseMode(c.String("socket-mode"))
			if err != nil {
				return usagef("--socket-mode: %v", err)
			}
			cfg.SocketMode = mode
		}
		if c.IsSet("socket-group") {
			cfg.SocketGroup = c.String("socket-group")
		}
		if c.IsSet("allow-uid") {
			ids, err := ids("allow-uid", c.Int64Slice("allow-uid"))
			if err != nil {
				return err
			}
			cfg.AllowUIDs = ids
		}
		if c.IsSet("allow-gid") {
			ids, err := ids("allow-gid", c.Int64Slice("allow-gid"))
			if err != nil {
				return err
			}
			cfg.AllowGIDs = ids
		}
		if c.IsSet("max-line-bytes") {
			cfg.MaxLineBytes = c.Int("max-line-bytes")
		}
		if c.IsSet("max-connections") {
			cfg.MaxConnections = c.Int("max-connections")
		}
		if c.IsSet("log-level") {
			cfg.LogLevel = c.String("log-level")
		}
		if c.IsSet("log-format") {
			cfg.LogFormat = c.String("log-format")
		}
		if c.IsSet("metrics") {
			cfg.Metrics = c.String("metrics")
		}
		if c.IsSet("metrics-public") {
			cfg.MetricsPublic = c.Bool("metrics-public")
		}
		if c.IsSet("max-attempts") {
			cfg.MaxAttempts = c.Int64("max-attempts")
		}
		if c.IsSet("connect-timeout") {
			cfg.ConnectTimeout = c.Duration("connect-timeout")
		}
		if c.IsSet("retain-finished") {
			cfg.RetainFinished = c.Duration("retain-finished")
		}
		if c.IsSet("retain-tombstones") {
			cfg.RetainTombstones = c.Duration("retain-tombstones")
		}
		return nil
	}
}

// ids returns the ids given to --flag as uids or gids. Returns a usage
// error for one out of range.
func ids(flag string, vs []int64) ([]uint32, error) {
	out := make([]uint32, len(vs))
	for i, v := range vs {
		if v < 0 || v > 1<<32-1 {
			return nil, usagef("--%s: %d is not a valid id", flag, v)
		}
		out[i] = uint32(v)
	}
	return out, nil
}
