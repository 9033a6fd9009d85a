package main

import "github.com/urfave/cli/v2"

// explainCommand says why a delivery of a message gets the decision it
// gets, and shows the message's events: liminald explain CONV MSG.
type explainCommand struct{}

// Command describes explain.
func (cmd explainCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "explain",
		Usage:     "say why a delivery of a message gets its decision, with the message's events as a timeline",
		ArgsUsage: "CONV MSG",
		Flags:     clientFlags(fingerprintFlag, sentAtFlag, withStepsFlag),
		Action:    cmd.Run,
	}
}

// Run sends explain and prints the decision, its rule and reason, and the
// timeline.
func (explainCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, "explain")
	if err != nil {
		return err
	}
	return call(c, withDelivery(c, r), printExplanation)
}
