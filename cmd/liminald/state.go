package main

import (
	"fmt"

	"github.com/urfave/cli/v2"
)

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
		Description: "A conversation with no events fails with not_found (is its name misspelt?); " +
			"a message never received shows the status unknown, a compacted one what its tombstone keeps.",
		Action: cmd.Run,
	}
}

// Run sends state and prints the reply. Returns errNoEvents, after the
// reply with --json, for a conversation that has no events.
func (stateCommand) Run(c *cli.Context) error {
	switch c.NArg() {
	case 1:
		conv := c.Args().Get(0)
		rep, err := ask(c, request{"op": "state", "conversation": conv})
		if err != nil {
			return err
		}
		if next, _ := jsonNumber(rep.fields["next_seq"]); next == 0 {
			if c.Bool("json") {
				rep.print(c, nil)
			}
			return fmt.Errorf("conversation %q has %w", conv, errNoEvents)
		}
		rep.print(c, printConversationState)
		return nil
	case 2:
		return call(c, request{"op": "state", "conversation": c.Args().Get(0), "message_id": c.Args().Get(1)}, printMessageState)
	}
	return usagef("state takes CONV [MSG], got %d arguments", c.NArg())
}
