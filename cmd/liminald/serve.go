package main

import (
	"github.com/urfave/cli/v2"

	"liminald/daemon"
)

// serveCommand runs the daemon: liminald serve.
type serveCommand struct{}

// Command describes serve.
func (cmd serveCommand) Command() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "run the daemon",
		Description: "Settings come from the flags, else the LIMINAL_* environment variables, else the " +
			"configuration file, else the defaults. SIGHUP or an edit of the configuration file reloads " +
			"what can change live; SIGTERM or SIGINT stops the daemon cleanly.",
		Flags: []cli.Flag{
			configFlag,
			&cli.StringFlag{Name: "socket", Usage: "unix socket `PATH`"},
			&cli.StringFlag{Name: "db", Usage: "database `PATH`"},
			&cli.StringFlag{Name: "sync", Usage: "full (acknowledged writes survive power loss) or normal (they survive a crash of the process)"},
			&cli.StringFlag{Name: "socket-mode", Usage: "permission bits of the socket, in octal (default 0600)"},
			&cli.StringFlag{Name: "socket-group", Usage: "group of the socket, by name or gid"},
			&cli.Int64SliceFlag{Name: "allow-uid", Usage: "allow only peers with this uid (repeatable)"},
			&cli.Int64SliceFlag{Name: "allow-gid", Usage: "allow only peers with this gid (repeatable)"},
			&cli.IntFlag{Name: "max-line-bytes", Usage: "longest request line (default 1048576)"},
			&cli.IntFlag{Name: "max-connections", Usage: "most connections at once (default 1024)"},
			&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error"},
			&cli.StringFlag{Name: "log-format", Usage: "text or json"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on a loopback `ADDR` (127.0.0.1:9464) or unix:PATH (default: off)"},
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
