package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"liminald/ipc"
)

// pingCommand checks that the daemon answers, waiting for it with --wait:
// liminald ping.
type pingCommand struct{}

// Command describes ping.
func (cmd pingCommand) Command() *cli.Command {
	return &cli.Command{
		Name:   "ping",
		Usage:  "check that the daemon answers",
		Flags:  clientFlags(&cli.DurationFlag{Name: "wait", Usage: "keep trying for up to `DURATION` until it answers"}),
		Action: cmd.Run,
	}
}

// Run sends ping until it is answered, a failure is not retryable, or
// --wait has passed, and prints ok. Returns the last failure.
func (pingCommand) Run(c *cli.Context) error {
	if c.NArg() > 0 {
		return usagef("ping takes no arguments")
	}
	deadline := time.Now().Add(c.Duration("wait"))
	for {
		err := call(c, request{"op": "ping"}, func(w io.Writer, _ map[string]any) { fmt.Fprintln(w, "ok") })
		var ie *ipc.Error
		retry := errors.As(err, &ie) && ie.Retryable
		if err == nil || !retry || time.Now().After(deadline) {
			return err
		}
		select {
		case <-c.Context.Done():
			return c.Context.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}
