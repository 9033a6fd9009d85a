package main

import "github.com/urfave/cli/v2"

// receiveCommand records a delivery of a message and prints whether to
// start, resume or skip it: liminald receive CONV MSG.
type receiveCommand struct{}

// Command describes receive.
func (cmd receiveCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "receive",
		Usage:     "record a delivery of a message and say whether to start, resume or skip it",
		ArgsUsage: "CONV MSG",
		Flags: clientFlags(expectedSeqFlag, fingerprintFlag, sentAtFlag, withStepsFlag,
			&cli.Int64Flag{Name: "received-at", Value: -1, DefaultText: "now", Usage: "when it was received, in epoch `MS`"},
		),
		Action: cmd.Run,
	}
}

// Run sends receive and prints the decision.
func (receiveCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, "receive")
	if err != nil {
		return err
	}
	if c.Int64("received-at") >= 0 {
		r["received_at"] = c.Int64("received-at")
	}
	return call(c, withDelivery(c, withExpectedSeq(c, r)), printDecision)
}
