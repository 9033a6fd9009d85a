package main

import "github.com/urfave/cli/v2"

// failCommand records that processing of a message failed, which it may be
// retried after: liminald fail --error TEXT CONV MSG.
type failCommand struct{}

// Command describes fail.
func (cmd failCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "fail",
		Usage:     "record that processing of a message failed (it may be retried)",
		ArgsUsage: "CONV MSG",
		Flags:     clientFlags(expectedSeqFlag, tokenFlag, required(&cli.StringFlag{Name: "error", Usage: "what went wrong, as `TEXT`"})),
		Action:    cmd.Run,
	}
}

// Run sends fail and prints the seq of its event.
func (failCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, "fail")
	if err != nil {
		return err
	}
	r["error"] = c.String("error")
	return call(c, withToken(c, withExpectedSeq(c, r)), printAck)
}
