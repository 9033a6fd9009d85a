package main

import "github.com/urfave/cli/v2"

// releaseCommand releases a quarantined message, so that its next delivery
// resumes it: liminald release [--reason TEXT] CONV MSG.
type releaseCommand struct{}

// Command describes release.
func (cmd releaseCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "release",
		Usage:     "release a quarantined message: its attempts count from 0 again",
		ArgsUsage: "CONV MSG",
		Flags: clientFlags(expectedSeqFlag,
			&cli.StringFlag{Name: "reason", DefaultText: "none", Usage: "why, as `TEXT` kept in the log"},
		),
		Action: cmd.Run,
	}
}

// Run sends release and prints the seq of its event.
func (releaseCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, "release")
	if err != nil {
		return err
	}
	if c.IsSet("reason") {
		r["reason"] = c.String("reason")
	}
	return call(c, withExpectedSeq(c, r), printAck)
}
