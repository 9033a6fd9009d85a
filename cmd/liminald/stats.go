package main

import "github.com/urfave/cli/v2"

// statsCommand prints the daemon's figures: liminald stats.
type statsCommand struct{}

// Command describes stats.
func (cmd statsCommand) Command() *cli.Command {
	return &cli.Command{
		Name:   "stats",
		Usage:  "show the daemon's figures",
		Flags:  clientFlags(),
		Action: cmd.Run,
	}
}

// Run sends stats and prints the reply.
func (statsCommand) Run(c *cli.Context) error {
	return call(c, request{"op": "stats"}, printStats)
}
