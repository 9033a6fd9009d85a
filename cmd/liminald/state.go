package main

import "github.com/urfave/cli/v2"

// stateCommand prints a conversation's state, or one message's: liminald
// state CONV [MSG].
type stateCommand struct{}

// Command describes state.
func (cmd stateCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "state",
		Usage:     "show a conversation's state, or one message's",
		ArgsUsage: "CONV [MSG]",
		Flags:     clientFlags(),
		Action:    cmd.Run,
	}
}

// Run sends state and prints the reply.
func (stateCommand) Run(c *cli.Context) error {
	switch c.NArg() {
	case 1:
		return call(c, request{"op": "state", "conversation": c.Args().Get(0)}, printConversationState)
	case 2:
		return call(c, request{"op": "state", "conversation": c.Args().Get(0), "message_id": c.Args().Get(1)}, printMessageState)
	}
	return usagef("state takes CONV [MSG], got %d arguments", c.NArg())
}
