package main

import "github.com/urfave/cli/v2"

// decideCommand prints whether a redelivered message should start, resume
// or skip, recording nothing: liminald decide CONV MSG.
type decideCommand struct{}

// Command describes decide.
func (cmd decideCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "decide",
		Usage:     "say whether a redelivered message should start, resume or skip (or is busy, quarantined or forgotten), recording nothing",
		ArgsUsage: "CONV MSG",
		Flags:     clientFlags(fingerprintFlag, sentAtFlag, withStepsFlag),
		Action:    cmd.Run,
	}
}

// Run sends decide and prints the decision.
func (decideCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, "decide")
	if err != nil {
		return err
	}
	return call(c, withDelivery(c, r), printDecision)
}
