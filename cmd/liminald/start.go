package main

import "github.com/urfave/cli/v2"

// startCommand records that processing of a message started, and prints
// its fencing token: liminald start [--worker W --lease 30s] CONV MSG.
type startCommand struct{}

// Command describes start.
func (cmd startCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "start",
		Usage:     "record that processing of a message started, and print its token",
		ArgsUsage: "CONV MSG",
		Flags: clientFlags(expectedSeqFlag,
			&cli.StringFlag{Name: "worker", DefaultText: "none", Usage: "name the worker `W` that holds the message"},
			&cli.DurationFlag{Name: "lease", DefaultText: "none", Usage: "hold the message for `DURATION` (1ms to 24h): others get busy until it lapses"},
		),
		Description: "With --lease, a message whose lease lapsed is taken over: the new token fences the old holder's writes.",
		Action:      cmd.Run,
	}
}

// Run sends start and prints the seq of its event and its token.
func (startCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, "start")
	if err != nil {
		return err
	}
	if c.IsSet("worker") {
		r["worker"] = c.String("worker")
	}
	if c.IsSet("lease") {
		if r["lease_ms"], err = leaseMS(c, "lease"); err != nil {
			return err
		}
	}
	return call(c, withExpectedSeq(c, r), printAck)
}
