package main

import "github.com/urfave/cli/v2"

// finishCommand records that a message is fully processed: liminald
// finish CONV MSG.
type finishCommand struct{}

// Command describes finish.
func (cmd finishCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "finish",
		Usage:     "record that a message is fully processed",
		ArgsUsage: "CONV MSG",
		Flags:     clientFlags(expectedSeqFlag, tokenFlag),
		Action:    cmd.Run,
	}
}

// Run sends finish and prints the seq of its event.
func (finishCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, "finish")
	if err != nil {
		return err
	}
	return call(c, withToken(c, withExpectedSeq(c, r)), printAck)
}
