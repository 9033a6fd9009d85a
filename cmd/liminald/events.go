package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"liminald/ipc"
)

// eventsCommand prints the events of one conversation, or of every
// conversation, and with --follow keeps printing them as they commit:
// liminald events [CONV].
type eventsCommand struct{}

// Command describes events.
func (cmd eventsCommand) Command() *cli.Command {
	return &cli.Command{
		Name:      "events",
		Usage:     "print a conversation's events, or every conversation's",
		ArgsUsage: "[CONV]",
		Flags: clientFlags(
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing events as they are committed"},
			&cli.Int64Flag{Name: "from-seq", Usage: "start at `SEQ` (with CONV)"},
			&cli.Int64Flag{Name: "from-pos", Usage: "start at position `POS` (with --follow)"},
			&cli.BoolFlag{Name: "full", Usage: "show every step output in full, not the size of a long one"},
		),
		Description: "A step output longer than 200 bytes shows as its size (output 2.0 MiB) unless --full. " +
			"With --json each event is one JSON object per line, as in the protocol and liminald export.",
		Action: cmd.Run,
	}
}

// Run prints the events the arguments ask for.
func (eventsCommand) Run(c *cli.Context) error {
	if c.NArg() > 1 {
		return usagef("events takes [CONV], got %d arguments", c.NArg())
	}
	conv := c.Args().First()
	if c.IsSet("from-seq") && conv == "" {
		return usagef("--from-seq needs CONV")
	}
	cl, err := dial(c)
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.Bool("follow") {
		return follow(c, cl, conv)
	}
	if conv != "" {
		return readAll(c, cl, conv, c.Int64("from-seq"))
	}
	return readEvery(c, cl)
}

// readAll prints the events of conv from seq from on, page by page.
func readAll(c *cli.Context, cl *ipc.Client, conv string, from int64) error {
	for {
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		events, next, err := cl.Read(ctx, conv, from, 10000)
		cancel()
		if err != nil {
			return err
		}
		for i := range events {
			printEvent(c.App.Writer, &events[i], c.Bool("json"), c.Bool("full"))
		}
		if len(events) == 0 {
			return nil
		}
		from = next
	}
}

// readEvery prints the events of every conversation, conversation by
// conversation.
func readEvery(c *cli.Context, cl *ipc.Client) error {
	after := ""
	for {
		ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
		convs, err := cl.Conversations(ctx, after, 1000)
		cancel()
		if err != nil {
			return err
		}
		for _, conv := range convs {
			if err := readAll(c, cl, conv.Name, 0); err != nil {
				return err
			}
			after = conv.Name
		}
		if len(convs) < 1000 {
			return nil
		}
	}
}

// follow prints the events of a subscription until interrupted, catching up
// first: from --from-seq (default 0) for one conversation, from --from-pos
// (default 0) for every conversation.
func follow(c *cli.Context, cl *ipc.Client, conv string) error {
	var opts []ipc.Option
	switch {
	case c.IsSet("from-pos"):
		opts = append(opts, ipc.FromPos(c.Int64("from-pos")))
	case conv != "":
		opts = append(opts, ipc.FromSeq(c.Int64("from-seq")))
	default:
		opts = append(opts, ipc.FromPos(0))
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout"))
	stream, err := cl.Subscribe(ctx, conv, opts...)
	cancel()
	if err != nil {
		return err
	}
	for {
		e, err := stream.Next(c.Context)
		if err != nil {
			var lag *ipc.LaggedError
			if errors.As(err, &lag) {
				return fmt.Errorf("fell behind; run again with --from-pos %d", lag.NextPos)
			}
			if errors.Is(err, context.Canceled) {
				return nil
			}
			return err
		}
		printEvent(c.App.Writer, &e, c.Bool("json"), c.Bool("full"))
	}
}
