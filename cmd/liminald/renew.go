package main

import "github.com/urfave/cli/v2"

// renewCommand extends the lease a worker holds on a message: liminald
// renew --token N --lease 30s CONV MSG.
type renewCommand struct{}

// Command describes renew.
func (cmd renewCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "renew",
		Usage:     "extend the lease a worker holds on a message",
		ArgsUsage: "CONV MSG",
		Flags: clientFlags(expectedSeqFlag,
			required(&cli.Int64Flag{Name: "token", Usage: "the holder's `TOKEN`, as start answered it"}),
			required(&cli.DurationFlag{Name: "lease", Usage: "hold the message for `DURATION` from now (1ms to 24h)"}),
		),
		Description: "A current token renews even a lapsed lease; any other is refused as fenced.",
		Action:      cmd.Run,
	}
}

// Run sends renew and prints the seq of its event and the new lease.
func (renewCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, "renew")
	if err != nil {
		return err
	}
	r["token"] = c.Int64("token")
	if r["lease_ms"], err = leaseMS(c, "lease"); err != nil {
		return err
	}
	return call(c, withExpectedSeq(c, r), printAck)
}
