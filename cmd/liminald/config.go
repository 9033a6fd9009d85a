package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"liminald/daemon"
)

// configFlag names the configuration file; the client and offline commands
// take it too, to find the socket and the database as serve does.
var configFlag = &cli.StringFlag{
	Name:        "config",
	Usage:       "configuration `FILE`",
	DefaultText: "$LIMINAL_CONFIG, else $XDG_CONFIG_HOME/liminald/liminald.toml, else ~/.config/liminald/liminald.toml, if it exists",
}

// resolve returns the configuration the way serve builds it, with only
// --socket and --db from the command line: how the other commands find the
// daemon and the database. Returns daemon.Load's errors.
func resolve(c *cli.Context) (daemon.Config, error) {
	cfg, _, err := daemon.Load(c.String("config"), os.Getenv, socketAndDBOverrides(c))
	return cfg, err
}

// socketAndDBOverrides applies --socket and --db where the command has them.
func socketAndDBOverrides(c *cli.Context) func(*daemon.Config) error {
	return func(cfg *daemon.Config) error {
		if c.IsSet("socket") {
			cfg.Socket = c.String("socket")
		}
		if c.IsSet("db") {
			cfg.DB = c.String("db")
		}
		return nil
	}
}
