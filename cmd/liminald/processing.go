package main

import "github.com/urfave/cli/v2"

// processingCommand records that processing of a message started
// (liminald start CONV MSG) or finished (liminald finish CONV MSG). The two
// commands differ only in their op, so they share this type.
type processingCommand struct {
	op    string // "start" or "finish", the protocol's op and the command's name
	usage string
}

var (
	startCommand  = processingCommand{op: "start", usage: "record that processing of a message started"}
	finishCommand = processingCommand{op: "finish", usage: "record that a message is fully processed"}
)

// Command describes start or finish.
func (cmd processingCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      cmd.op,
		Usage:     cmd.usage,
		ArgsUsage: "CONV MSG",
		Flags:     clientFlags(expectedSeqFlag),
		Action:    cmd.Run,
	}
}

// Run sends the op and prints the seq of its event.
func (cmd processingCommand) Run(c *cli.Context) error {
	r, err := messageRequest(c, cmd.op)
	if err != nil {
		return err
	}
	return call(c, withExpectedSeq(c, r), printAck)
}
