package main

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"
)

// socketCommand prints the path of the socket the daemon listens on, found
// as serve finds it: liminald socket. Scripts and shells use it to reach
// the daemon with other tools (S=$(liminald socket); socat -
// UNIX-CONNECT:$S).
type socketCommand struct{}

// Command describes socket.
func (cmd socketCommand) Command() *cli.Command {
	return &cli.Command{
		Name:   "socket",
		Usage:  "print the socket path serve would use: --socket, $LIMINAL_SOCKET, the config file, else the default for this user",
		Flags:  []cli.Flag{socketFlag, configFlag, jsonFlag},
		Action: cmd.Run,
	}
}

// Run prints the path. Returns a usage error for an argument, and the
// errors of resolve.
func (socketCommand) Run(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("socket takes no arguments")
	}
	cfg, err := resolve(c)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		b, _ := json.Marshal(map[string]any{"ok": true, "socket": cfg.Socket})
		fmt.Fprintf(c.App.Writer, "%s\n", b)
		return nil
	}
	fmt.Fprintln(c.App.Writer, cfg.Socket)
	return nil
}
